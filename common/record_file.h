// Files of one record per line with whitespace-separated fields (known_relays,
// known_peers, authorized_peers, invites): the one reading loop they share.
#pragma once

#include <fstream>
#include <sstream>
#include <string>

namespace natfwd {

// Calls `on_record(line_number, fields)` for each line (numbered from 1) until it
// returns false. A file that is missing or unreadable has no records.
template <typename OnRecord>
void for_each_record(const std::string& path, OnRecord&& on_record) {
  std::ifstream in(path);
  std::string line;
  for (int number = 1; std::getline(in, line); ++number) {
    std::istringstream fields(line);
    if (!on_record(number, fields)) return;
  }
}

}  // namespace natfwd
