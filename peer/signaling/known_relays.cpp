#include "signaling/known_relays.h"

#include <fstream>
#include <optional>
#include <sstream>

#include <glib.h>

#include "log.h"
#include "record_file.h"

namespace natfwd {

namespace {

// The verdict of the first line for this relay: "" when it holds the presented key.
std::optional<std::string> verdict_of(const std::string& path, const std::string& name,
                                      const std::string& presented) {
  std::optional<std::string> verdict;
  for_each_record(path, [&](int number, std::istringstream& fields) {
    std::string host, fingerprint;
    if (!(fields >> host >> fingerprint) || host[0] == '#' || host != name) return true;
    verdict = fingerprint == presented
                  ? ""
                  : "RELAY KEY CHANGED: " + name + " presented " + presented + " but " + path +
                        ":" + std::to_string(number) + " has " + fingerprint +
                        ". Someone may be intercepting the connection; if the relay's key "
                        "really changed, delete that line.";
    return false;
  });
  return verdict;
}

}  // namespace

std::string KnownRelays::check(const HostPort& relay, const std::string& spki_sha256) const {
  return verdict_of(path_, relay.to_string(), spki_fingerprint(spki_sha256)).value_or("");
}

void KnownRelays::remember(const HostPort& relay, const std::string& spki_sha256) {
  const std::string name = relay.to_string();
  const std::string presented = spki_fingerprint(spki_sha256);
  if (verdict_of(path_, name, presented)) return;
  std::ofstream out(path_, std::ios::app);
  out << name << " " << presented << "\n";
  if (!out) {
    log::warn("cannot record relay %s's key in %s: it will be trusted again on the next "
              "connection without a check", name.c_str(), path_.c_str());
    return;
  }
  log::info("first connection to relay %s: recorded its key %s in %s", name.c_str(),
            presented.c_str(), path_.c_str());
}

}  // namespace natfwd
