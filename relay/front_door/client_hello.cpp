#include "front_door/client_hello.h"

#include <algorithm>
#include <cctype>
#include <cstdint>

namespace natfwd::relay::front_door {
namespace {

// A cursor over the record that fails (and stays failed) on any read past its end.
class Reader {
 public:
  explicit Reader(std::span<const std::byte> data) : data_(data) {}
  bool ok() const { return ok_; }
  size_t left() const { return data_.size() - offset_; }
  uint32_t number(size_t bytes) {
    if (!ok_ || left() < bytes) return ok_ = false, 0;
    uint32_t value = 0;
    for (size_t i = 0; i < bytes; ++i)
      value = value << 8 | std::to_integer<uint8_t>(data_[offset_ + i]);
    offset_ += bytes;
    return value;
  }
  std::span<const std::byte> take(size_t bytes) {
    if (!ok_ || left() < bytes) return ok_ = false, std::span<const std::byte>();
    auto out = data_.subspan(offset_, bytes);
    offset_ += bytes;
    return out;
  }
  // A vector with a `length_bytes` length prefix (RFC 8446 section 3.4).
  Reader vector(size_t length_bytes) {
    const uint32_t length = number(length_bytes);
    return Reader(take(length), ok_);
  }

 private:
  Reader(std::span<const std::byte> data, bool ok) : data_(data), ok_(ok) {}
  std::span<const std::byte> data_;
  size_t offset_ = 0;
  bool ok_ = true;
};

constexpr uint8_t kHandshakeRecord = 22;   // RFC 8446 section 5.1, ContentType
constexpr uint8_t kClientHello = 1;        // RFC 8446 section 4, HandshakeType
constexpr uint16_t kServerNameExtension = 0;  // RFC 6066 section 3
constexpr uint8_t kHostName = 0;

ClientHelloSni invalid() { return {ClientHelloSni::Status::kInvalid, {}}; }

}  // namespace

ClientHelloSni parse_client_hello_sni(std::span<const std::byte> data) {
  Reader header(data.first(std::min<size_t>(data.size(), 5)));
  if (data.empty()) return {};
  if (std::to_integer<uint8_t>(data[0]) != kHandshakeRecord) return invalid();
  if (data.size() >= 2 && std::to_integer<uint8_t>(data[1]) != 3) return invalid();
  if (data.size() < 5) return {};
  header.number(3);  // type, legacy_record_version
  const uint32_t length = header.number(2);
  if (length == 0 || length > (1 << 14)) return invalid();
  if (data.size() < 5 + length) return {};

  Reader record(data.subspan(5, length));
  if (record.number(1) != kClientHello) return invalid();
  Reader hello = record.vector(3);
  if (!record.ok()) return invalid();  // longer than its first record
  hello.number(2);                     // legacy_version
  hello.take(32);                      // random
  hello.vector(1);                     // legacy_session_id
  hello.vector(2);                     // cipher_suites
  hello.vector(1);                     // legacy_compression_methods
  ClientHelloSni out{ClientHelloSni::Status::kComplete, {}};
  if (!hello.ok()) return invalid();
  if (hello.left() == 0) return out;   // no extensions at all: no name
  Reader extensions = hello.vector(2);
  while (extensions.ok() && extensions.left() > 0) {
    const uint32_t type = extensions.number(2);
    Reader body = extensions.vector(2);
    if (!extensions.ok()) return invalid();
    if (type != kServerNameExtension) continue;
    Reader names = body.vector(2);
    while (names.ok() && names.left() > 0) {
      const uint32_t name_type = names.number(1);
      const auto name = names.take(names.number(2));
      if (!names.ok()) return invalid();
      if (name_type != kHostName) continue;
      // RFC 6066 section 3: a DNS host name in ASCII, no trailing dot.
      for (std::byte b : name) {
        const char c = static_cast<char>(std::tolower(std::to_integer<unsigned char>(b)));
        if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '-' || c == '_'))
          return invalid();
        out.server_name += c;
      }
      return out;
    }
    if (!names.ok()) return invalid();
    break;
  }
  if (!extensions.ok()) return invalid();
  return out;
}

}  // namespace natfwd::relay::front_door
