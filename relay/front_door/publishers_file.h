// Who may publish: STATE_DIR/publishers, one key id (`peer id`) per line, `any` to let
// every key publish, `#` comments; read at start, beside --allow-publisher.
#pragma once

#include <set>
#include <string>
#include <vector>

namespace natfwd::relay::front_door {

struct Publishers {
  bool any = false;
  std::set<std::string> key_ids;
};

// The file (missing: none) and the --allow-publisher values, already checked. Throws
// std::runtime_error naming file:line for a line that is neither a key id nor `any`.
Publishers load_publishers(const std::string& path, const std::vector<std::string>& allowed);

}  // namespace natfwd::relay::front_door
