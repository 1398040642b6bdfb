#include "server/name_binding_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include "identity.h"
#include "log.h"
#include "rendezvous/rendezvous_core.h"
#include "turn/credentials.h"

namespace natfwd::relay {
namespace {

constexpr size_t kKeySize = 32;
// base64 of 32 bytes: 44 characters, the last one '='.
constexpr size_t kKeyBase64Size = 44;

std::string key_id_of(std::string_view raw) {
  PublicKey key{};
  public_key_from_bytes(std::span(reinterpret_cast<const uint8_t*>(raw.data()), raw.size()), key);
  return key_id(key);
}

std::string encode_key(std::string_view raw) {
  return turn::base64(std::as_bytes(std::span(raw.data(), raw.size())));
}

// The raw key, or "" when `text` is not the canonical base64 of 32 bytes.
std::string decode_key(std::string_view text) {
  if (text.size() != kKeyBase64Size) return {};
  unsigned char out[kKeyBase64Size] = {};
  const int n = EVP_DecodeBlock(out, reinterpret_cast<const unsigned char*>(text.data()),
                                static_cast<int>(text.size()));
  if (n != static_cast<int>(kKeySize + 1)) return {};  // 33: the padding counts as a byte
  std::string raw(reinterpret_cast<const char*>(out), kKeySize);
  if (encode_key(raw) != text) return {};  // non-canonical spellings are refused
  return raw;
}

}  // namespace

NameBindingFile::NameBindingFile(std::string path) : path_(std::move(path)) {
  std::ifstream in(path_);
  if (!in) {
    if (errno == ENOENT) return;  // first run: no bindings yet
    throw std::runtime_error("cannot read " + path_ + ": " + std::strerror(errno));
  }
  std::string line;
  for (size_t number = 1; std::getline(in, line); ++number) {
    auto malformed = [&](const std::string& why) {
      return std::runtime_error(path_ + ":" + std::to_string(number) + ": " + why);
    };
    if (line.empty() || line[0] == '#') continue;
    std::istringstream fields(line);
    std::string name, id, key_text, extra;
    fields >> name >> id >> key_text;
    if (key_text.empty() || (fields >> extra))
      throw malformed("expected 'NAME KEYID BASE64KEY'");
    if (!is_valid_peer_name(name)) throw malformed("'" + name + "' is not a valid name");
    const std::string raw = decode_key(key_text);
    if (raw.empty()) throw malformed("the key is not base64 of 32 bytes");
    if (key_id_of(raw) != id) throw malformed("key id " + id + " does not match the key");
    if (bindings_.contains(name)) throw malformed("'" + name + "' is bound twice");
    bindings_.emplace(name, raw);
  }
  if (in.bad()) throw std::runtime_error("cannot read " + path_ + ": " + std::strerror(errno));
  log::info("loaded %zu name binding%s from %s", bindings_.size(),
            bindings_.size() == 1 ? "" : "s", path_.c_str());
}

bool NameBindingFile::bind(std::string_view name, std::string_view public_key) {
  const auto previous = bound_key(name);
  MemoryNameBinding::bind(name, public_key);
  if (save()) return true;
  // Not on disk, so not bound: a restart would forget it.
  if (previous)
    bindings_.insert_or_assign(std::string(name), *previous);
  else
    bindings_.erase(bindings_.find(name));
  return false;
}

bool NameBindingFile::save() const {
  std::string text =
      "# natfwd relay name bindings: NAME KEYID BASE64KEY (the first key to register a\n"
      "# name keeps it; delete a line to free the name, then restart the relay)\n";
  for (const auto& [name, raw] : bindings_)
    text += name + " " + key_id_of(raw) + " " + encode_key(raw) + "\n";

  const std::string temp = path_ + ".tmp";
  const int fd = open(temp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) {
    log::error("cannot create %s: %s", temp.c_str(), std::strerror(errno));
    return false;
  }
  fchmod(fd, 0600);  // in case a stale temporary file had other bits
  size_t written = 0;
  while (written < text.size()) {
    const ssize_t n = write(fd, text.data() + written, text.size() - written);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    written += static_cast<size_t>(n);
  }
  const bool ok = written == text.size() && fsync(fd) == 0;
  const int saved_errno = errno;
  close(fd);
  if (!ok || rename(temp.c_str(), path_.c_str()) != 0) {
    log::error("cannot write %s: %s", path_.c_str(), std::strerror(ok ? errno : saved_errno));
    unlink(temp.c_str());
    return false;
  }
  return true;
}

}  // namespace natfwd::relay
