#include "stun/stun_message.h"

#include <arpa/inet.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <algorithm>
#include <stdexcept>

namespace natfwd::stun {
namespace {

uint16_t read_u16(std::span<const std::byte> bytes, size_t at) {
  return static_cast<uint16_t>((std::to_integer<uint16_t>(bytes[at]) << 8) |
                               std::to_integer<uint16_t>(bytes[at + 1]));
}

uint32_t read_u32(std::span<const std::byte> bytes, size_t at) {
  return (uint32_t{read_u16(bytes, at)} << 16) | read_u16(bytes, at + 2);
}

void write_u16(std::byte* out, uint16_t value) {
  out[0] = static_cast<std::byte>(value >> 8);
  out[1] = static_cast<std::byte>(value & 0xFF);
}

void append_u16(std::vector<std::byte>& out, uint16_t value) {
  out.push_back(static_cast<std::byte>(value >> 8));
  out.push_back(static_cast<std::byte>(value & 0xFF));
}

void append_u32(std::vector<std::byte>& out, uint32_t value) {
  append_u16(out, static_cast<uint16_t>(value >> 16));
  append_u16(out, static_cast<uint16_t>(value & 0xFFFF));
}

// Attributes are padded to a multiple of 4 bytes (RFC 8489 section 14).
constexpr size_t padded(size_t length) { return (length + 3) & ~size_t{3}; }

// The 32 bits of cookie followed by the transaction id: the XOR mask of section 14.2.
std::array<uint8_t, 16> xor_mask(const TransactionId& transaction_id) {
  std::array<uint8_t, 16> mask{};
  mask[0] = static_cast<uint8_t>(kMagicCookie >> 24);
  mask[1] = static_cast<uint8_t>(kMagicCookie >> 16);
  mask[2] = static_cast<uint8_t>(kMagicCookie >> 8);
  mask[3] = static_cast<uint8_t>(kMagicCookie);
  for (size_t i = 0; i < kTransactionIdSize; ++i)
    mask[4 + i] = std::to_integer<uint8_t>(transaction_id[i]);
  return mask;
}

// HMAC-SHA1 over `bytes` with the header's length field replaced by `length_field`,
// as MESSAGE-INTEGRITY requires (section 14.5).
std::array<unsigned char, 20> integrity_hmac(std::span<const std::byte> bytes,
                                             uint16_t length_field,
                                             std::span<const std::byte> key) {
  std::vector<std::byte> copy(bytes.begin(), bytes.end());
  write_u16(copy.data() + 2, length_field);
  std::array<unsigned char, 20> mac{};
  unsigned int mac_length = 0;
  HMAC(EVP_sha1(), key.data(), static_cast<int>(key.size()),
       reinterpret_cast<const unsigned char*>(copy.data()), copy.size(), mac.data(),
       &mac_length);
  return mac;
}

// The same with HMAC-SHA256, for MESSAGE-INTEGRITY-SHA256 (section 14.6).
std::array<unsigned char, 32> integrity_hmac_sha256(std::span<const std::byte> bytes,
                                                    uint16_t length_field,
                                                    std::span<const std::byte> key) {
  std::vector<std::byte> copy(bytes.begin(), bytes.end());
  write_u16(copy.data() + 2, length_field);
  std::array<unsigned char, 32> mac{};
  unsigned int mac_length = 0;
  HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
       reinterpret_cast<const unsigned char*>(copy.data()), copy.size(), mac.data(),
       &mac_length);
  return mac;
}

struct HeaderCheck {
  bool ok;
  std::string_view error;
};

// Checks what the first `available` header bytes allow us to check.
HeaderCheck check_header_prefix(std::span<const std::byte> input, bool need_cookie = true) {
  if (input.size() >= 1 && (std::to_integer<uint8_t>(input[0]) & 0xC0) != 0)
    return {false, "top two bits of the message type are not zero"};
  if (input.size() >= 4 && read_u16(input, 2) % 4 != 0)
    return {false, "message length is not a multiple of 4"};
  // Compare the cookie byte by byte so that a stream prefix is judged early.
  for (size_t i = 4; need_cookie && i < std::min<size_t>(input.size(), 8); ++i) {
    const auto expected = static_cast<uint8_t>(kMagicCookie >> (8 * (7 - i)));
    if (std::to_integer<uint8_t>(input[i]) != expected) return {false, "wrong magic cookie"};
  }
  return {true, {}};
}

}  // namespace

TransportAddress TransportAddress::ipv4(std::array<uint8_t, 4> ip, uint16_t port) {
  TransportAddress address;
  address.family = Family::kIPv4;
  std::copy(ip.begin(), ip.end(), address.ip.begin());
  address.port = port;
  return address;
}

TransportAddress TransportAddress::ipv6(const std::array<uint8_t, 16>& ip, uint16_t port) {
  TransportAddress address;
  address.family = Family::kIPv6;
  address.ip = ip;
  address.port = port;
  return address;
}

std::string TransportAddress::to_string() const {
  char text[INET6_ADDRSTRLEN] = {};
  if (family == Family::kIPv4) {
    inet_ntop(AF_INET, ip.data(), text, sizeof text);
    return std::string(text) + ":" + std::to_string(port);
  }
  inet_ntop(AF_INET6, ip.data(), text, sizeof text);
  return "[" + std::string(text) + "]:" + std::to_string(port);
}

const Attribute* Message::find(uint16_t attribute_type) const {
  for (const auto& attribute : attributes)
    if (attribute.type == attribute_type) return &attribute;
  return nullptr;
}

bool looks_like_stun(std::span<const std::byte> input) {
  return input.size() >= 8 && check_header_prefix(input.first(8)).ok;
}

StreamProbe stream_message_length(std::span<const std::byte> prefix) {
  auto header = check_header_prefix(prefix.first(std::min(prefix.size(), kHeaderSize)));
  if (!header.ok) return {StreamStatus::kInvalid, 0, header.error};
  if (prefix.size() < 4) return {StreamStatus::kNeedMore, 0, {}};
  const size_t length = kHeaderSize + read_u16(prefix, 2);
  if (prefix.size() < length) return {StreamStatus::kNeedMore, 0, {}};
  return {StreamStatus::kComplete, length, {}};
}

ParseResult parse(std::span<const std::byte> input, Compatibility compatibility) {
  ParseResult result;
  auto invalid = [&result](std::string_view why) {
    result.status = ParseStatus::kInvalid;
    result.error = why;
    return result;
  };
  if (input.size() < kHeaderSize) return invalid("shorter than a STUN header");
  auto header = check_header_prefix(input.first(kHeaderSize),
                                    compatibility == Compatibility::kRfc8489);
  if (!header.ok) return invalid(header.error);
  const size_t body_length = read_u16(input, 2);
  if (kHeaderSize + body_length != input.size())
    return invalid("message length does not match the datagram size");

  Message& message = result.message;
  message.type = read_u16(input, 0);
  std::copy_n(input.begin() + 4, 4, message.cookie_field.begin());
  message.classic = read_u32(input, 4) != kMagicCookie;
  std::copy_n(input.begin() + 8, kTransactionIdSize, message.transaction_id.begin());
  message.bytes = input;

  bool after_integrity = false;
  size_t offset = kHeaderSize;
  while (offset < input.size()) {
    if (input.size() - offset < kAttributeHeaderSize) return invalid("truncated attribute header");
    const uint16_t type = read_u16(input, offset);
    const size_t length = read_u16(input, offset + 2);
    if (padded(length) > input.size() - offset - kAttributeHeaderSize)
      return invalid("attribute overruns the message");
    Attribute attribute{type, input.subspan(offset + kAttributeHeaderSize, length), offset};
    offset += kAttributeHeaderSize + padded(length);

    if (type == attr::kFingerprint) {
      // Section 14.7: FINGERPRINT is last, and covers everything before it.
      if (offset != input.size()) return invalid("FINGERPRINT is not the last attribute");
      if (length != 4) return invalid("FINGERPRINT has the wrong size");
      const uint32_t expected = crc32(input.first(attribute.offset)) ^ kFingerprintXor;
      if (read_u32(attribute.value, 0) != expected) return invalid("FINGERPRINT mismatch");
      message.has_fingerprint = true;
    } else if (after_integrity && type != attr::kMessageIntegritySha256) {
      continue;  // section 14.5: ignored
    }
    if (type == attr::kMessageIntegrity) after_integrity = true;
    message.attributes.push_back(attribute);
  }
  result.status = ParseStatus::kOk;
  return result;
}

std::optional<TransportAddress> decode_address(std::span<const std::byte> value) {
  if (value.size() < 4) return std::nullopt;
  TransportAddress address;
  const auto family = std::to_integer<uint8_t>(value[1]);
  if (family == 0x01 && value.size() == 8) {
    address.family = TransportAddress::Family::kIPv4;
  } else if (family == 0x02 && value.size() == 20) {
    address.family = TransportAddress::Family::kIPv6;
  } else {
    return std::nullopt;
  }
  address.port = read_u16(value, 2);
  for (size_t i = 0; i < address.ip_size(); ++i)
    address.ip[i] = std::to_integer<uint8_t>(value[4 + i]);
  return address;
}

std::optional<TransportAddress> decode_xor_address(std::span<const std::byte> value,
                                                   const TransactionId& transaction_id) {
  auto address = decode_address(value);
  if (!address) return std::nullopt;
  address->port ^= static_cast<uint16_t>(kMagicCookie >> 16);
  const auto mask = xor_mask(transaction_id);
  for (size_t i = 0; i < address->ip_size(); ++i) address->ip[i] ^= mask[i];
  return address;
}

std::vector<std::byte> encode_address(const TransportAddress& address) {
  std::vector<std::byte> value;
  value.push_back(std::byte{0});
  value.push_back(static_cast<std::byte>(address.family));
  append_u16(value, address.port);
  for (size_t i = 0; i < address.ip_size(); ++i) value.push_back(static_cast<std::byte>(address.ip[i]));
  return value;
}

std::vector<std::byte> encode_xor_address(const TransportAddress& address,
                                          const TransactionId& transaction_id) {
  std::vector<std::byte> value;
  value.push_back(std::byte{0});
  value.push_back(static_cast<std::byte>(address.family));
  append_u16(value, static_cast<uint16_t>(address.port ^ (kMagicCookie >> 16)));
  const auto mask = xor_mask(transaction_id);
  for (size_t i = 0; i < address.ip_size(); ++i)
    value.push_back(static_cast<std::byte>(address.ip[i] ^ mask[i]));
  return value;
}

std::optional<ErrorCode> decode_error_code(std::span<const std::byte> value) {
  if (value.size() < 4) return std::nullopt;
  const int error_class = std::to_integer<int>(value[2]) & 0x07;
  const int number = std::to_integer<int>(value[3]);
  if (error_class < 3 || error_class > 6 || number > 99) return std::nullopt;
  ErrorCode error;
  error.code = error_class * 100 + number;
  error.reason.assign(reinterpret_cast<const char*>(value.data()) + 4, value.size() - 4);
  return error;
}

std::vector<uint16_t> decode_unknown_attributes(std::span<const std::byte> value) {
  std::vector<uint16_t> types;
  for (size_t i = 0; i + 2 <= value.size(); i += 2) types.push_back(read_u16(value, i));
  return types;
}

uint32_t crc32(std::span<const std::byte> data) {
  // Reflected polynomial 0xEDB88320, table built once.
  static const auto table = [] {
    std::array<uint32_t, 256> t{};
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
      t[i] = c;
    }
    return t;
  }();
  uint32_t crc = 0xFFFFFFFFu;
  for (std::byte b : data) crc = table[(crc ^ std::to_integer<uint32_t>(b)) & 0xFF] ^ (crc >> 8);
  return crc ^ 0xFFFFFFFFu;
}

bool verify_message_integrity(const Message& message, std::span<const std::byte> key) {
  const Attribute* integrity = message.find(attr::kMessageIntegrity);
  if (!integrity || integrity->value.size() != 20) return false;
  // The length field counts up to and including MESSAGE-INTEGRITY itself.
  const auto length_field =
      static_cast<uint16_t>(integrity->offset + kMessageIntegrityAttributeSize - kHeaderSize);
  const auto mac =
      integrity_hmac(message.bytes.first(integrity->offset), length_field, key);
  // Constant-time compare: the MAC is a secret-derived value.
  return CRYPTO_memcmp(mac.data(), integrity->value.data(), mac.size()) == 0;
}

bool verify_message_integrity_sha256(const Message& message, std::span<const std::byte> key) {
  const Attribute* integrity = message.find(attr::kMessageIntegritySha256);
  if (!integrity) return false;
  const size_t size = integrity->value.size();
  if (size < 16 || size > 32 || size % 4 != 0) return false;
  const auto length_field =
      static_cast<uint16_t>(integrity->offset + kAttributeHeaderSize + size - kHeaderSize);
  const auto mac =
      integrity_hmac_sha256(message.bytes.first(integrity->offset), length_field, key);
  return CRYPTO_memcmp(mac.data(), integrity->value.data(), size) == 0;
}

MessageBuilder::MessageBuilder(uint16_t method, MessageClass cls,
                               const TransactionId& transaction_id)
    : transaction_id_(transaction_id) {
  bytes_.reserve(128);
  append_u16(bytes_, message_type(method, cls));
  append_u16(bytes_, 0);
  append_u32(bytes_, kMagicCookie);
  bytes_.insert(bytes_.end(), transaction_id.begin(), transaction_id.end());
}

MessageBuilder::MessageBuilder(uint16_t method, MessageClass cls, const Message& classic_request)
    : MessageBuilder(method, cls, classic_request.transaction_id) {
  std::copy(classic_request.cookie_field.begin(), classic_request.cookie_field.end(),
            bytes_.begin() + 4);
}

void MessageBuilder::set_length(size_t body_length) {
  if (body_length > 0xFFFF) throw std::length_error("STUN message too long");
  write_u16(bytes_.data() + 2, static_cast<uint16_t>(body_length));
}

void MessageBuilder::add_attribute(uint16_t type, std::span<const std::byte> value) {
  if (value.size() > 0xFFFF) throw std::length_error("STUN attribute too long");
  set_length(bytes_.size() - kHeaderSize + kAttributeHeaderSize + padded(value.size()));
  append_u16(bytes_, type);
  append_u16(bytes_, static_cast<uint16_t>(value.size()));
  bytes_.insert(bytes_.end(), value.begin(), value.end());
  bytes_.resize(bytes_.size() + padded(value.size()) - value.size(), std::byte{0});
}

void MessageBuilder::add_xor_mapped_address(const TransportAddress& address) {
  add_attribute(attr::kXorMappedAddress, encode_xor_address(address, transaction_id_));
}

void MessageBuilder::add_mapped_address(const TransportAddress& address) {
  add_attribute(attr::kMappedAddress, encode_address(address));
}

void MessageBuilder::add_software(std::string_view software) {
  // Section 14.14: fewer than 128 characters; cut rather than fail.
  software = software.substr(0, 127);
  add_attribute(attr::kSoftware, std::as_bytes(std::span(software.data(), software.size())));
}

void MessageBuilder::add_error_code(int code, std::string_view reason) {
  std::vector<std::byte> value;
  append_u16(value, 0);
  value.push_back(static_cast<std::byte>(code / 100));
  value.push_back(static_cast<std::byte>(code % 100));
  reason = reason.substr(0, 127);
  for (char c : reason) value.push_back(static_cast<std::byte>(c));
  add_attribute(attr::kErrorCode, value);
}

void MessageBuilder::add_unknown_attributes(std::span<const uint16_t> types) {
  std::vector<std::byte> value;
  for (uint16_t type : types) append_u16(value, type);
  add_attribute(attr::kUnknownAttributes, value);
}

void MessageBuilder::add_message_integrity(std::span<const std::byte> key) {
  const size_t offset = bytes_.size();
  const auto length_field =
      static_cast<uint16_t>(offset + kMessageIntegrityAttributeSize - kHeaderSize);
  const auto mac = integrity_hmac(bytes_, length_field, key);
  add_attribute(attr::kMessageIntegrity, std::as_bytes(std::span(mac)));
}

void MessageBuilder::add_message_integrity_sha256(std::span<const std::byte> key) {
  const size_t offset = bytes_.size();
  const auto length_field =
      static_cast<uint16_t>(offset + kMessageIntegritySha256AttributeSize - kHeaderSize);
  const auto mac = integrity_hmac_sha256(bytes_, length_field, key);
  add_attribute(attr::kMessageIntegritySha256, std::as_bytes(std::span(mac)));
}

void MessageBuilder::add_fingerprint() {
  set_length(bytes_.size() - kHeaderSize + kFingerprintAttributeSize);
  const uint32_t value = crc32(bytes_) ^ kFingerprintXor;
  std::vector<std::byte> crc;
  append_u32(crc, value);
  add_attribute(attr::kFingerprint, crc);
}

}  // namespace natfwd::stun
