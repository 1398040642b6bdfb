#include "signaling/known_relays.h"

#include <fstream>
#include <optional>
#include <sstream>

#include <glib.h>

#include "log.h"
#include "record_file.h"

namespace natfwd {

std::string KnownRelays::check(const HostPort& relay, const std::string& spki_sha256) {
  const std::string name = relay.to_string();
  const std::string presented = spki_fingerprint(spki_sha256);
  std::optional<std::string> verdict;  // set by the first line for this relay
  for_each_record(path_, [&](int number, std::istringstream& fields) {
    std::string host, fingerprint;
    if (!(fields >> host >> fingerprint) || host[0] == '#' || host != name) return true;
    verdict = fingerprint == presented
                  ? ""
                  : "RELAY KEY CHANGED: " + name + " presented " + presented + " but " + path_ +
                        ":" + std::to_string(number) + " has " + fingerprint +
                        ". Someone may be intercepting the connection; if the relay's key "
                        "really changed, delete that line.";
    return false;
  });
  if (verdict) return *verdict;
  std::ofstream out(path_, std::ios::app);
  out << name << " " << presented << "\n";
  if (!out) return "cannot record the relay's key in " + path_;
  log::info("first connection to relay %s: recorded its key %s in %s", name.c_str(),
            presented.c_str(), path_.c_str());
  return "";
}

}  // namespace natfwd
