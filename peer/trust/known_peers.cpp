#include "trust/known_peers.h"

#include <fcntl.h>
#include <unistd.h>

#include <fstream>
#include <sstream>

#include <glib.h>
#include <glib/gstdio.h>

#include "glib_ptr.h"
#include "log.h"
#include "record_file.h"

namespace natfwd {

std::optional<KnownPeers::Entry> KnownPeers::find(const std::string& name) const {
  std::optional<Entry> found;
  for_each_record(path_, [&](int number, std::istringstream& fields) {
    std::string entry_name, type, encoded;
    if (!(fields >> entry_name >> type >> encoded) || entry_name[0] == '#') return true;
    if (entry_name != name || type != "ed25519") return true;
    gsize length = 0;
    std::unique_ptr<guchar, GFree> raw(g_base64_decode(encoded.c_str(), &length));
    PublicKey key{};
    if (!public_key_from_bytes(std::span<const uint8_t>(raw.get(), length), key)) return true;
    found = Entry{key, number};
    return false;
  });
  return found;
}

std::string KnownPeers::check(const std::string& name, const PublicKey& key) const {
  auto known = find(name);
  if (!known || known->key == key) return "";
  return "KEY OF PEER '" + name + "' CHANGED: it presented " + key_fingerprint(key) + " (" +
         key_id(key) + ") but " + path_ + ":" + std::to_string(known->line) + " has " +
         key_fingerprint(known->key) + " (" + key_id(known->key) +
         "). Someone may be impersonating it (or the relay is lying); if its key really "
         "changed, delete that line. Refusing.";
}

void KnownPeers::remember(const std::string& name, const PublicKey& key) const {
  if (find(name)) return;
  gchar* encoded = g_base64_encode(key.data(), key.size());
  const std::string line = name + " ed25519 " + encoded + "\n";
  g_free(encoded);
  // Created 0600 like ssh's known_hosts would be: it is nobody else's business whom
  // this machine talks to.
  int fd = g_open(path_.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0600);
  if (fd < 0 || write(fd, line.data(), line.size()) != static_cast<ssize_t>(line.size())) {
    log::warn("cannot record %s's key in %s", name.c_str(), path_.c_str());
  } else {
    log::info("first tunnel to %s: recorded its key %s in %s", name.c_str(),
              key_fingerprint(key).c_str(), path_.c_str());
  }
  if (fd >= 0) close(fd);
}

std::string check_pinned_key_id(const std::string& name, const std::string& expected_id,
                                const PublicKey& key) {
  if (key_id(key) == expected_id) return "";
  return "peer '" + name + "' presented key " + key_id(key) + " (" + key_fingerprint(key) +
         ") but you asked for " + name + "@" + expected_id + ". Refusing.";
}

}  // namespace natfwd
