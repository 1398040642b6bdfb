// STUN message codec (RFC 8489): pure functions over bytes, no I/O, no GLib.
//
//    0                   1                   2                   3
//    0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//   |0 0|     STUN Message Type     |         Message Length        |
//   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//   |                         Magic Cookie                          |
//   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//   |                     Transaction ID (96 bits)                  |
//   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//
// Errors (HACKING.md, "Error policy"): parse() returns an outcome with a static reason.
// The builder throws std::length_error for an attribute larger than a STUN message can
// hold (a bug of ours).
//
// Shaped for TURN (RFC 8656) as well: methods and attribute types are plain numbers,
// the parser keeps every attribute (with its offset, which MESSAGE-INTEGRITY needs),
// and stream_message_length() frames STUN over TCP.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace natfwd::stun {

// RFC 8489 section 5: fixed value in every message since RFC 5389.
inline constexpr uint32_t kMagicCookie = 0x2112A442;
inline constexpr size_t kHeaderSize = 20;
inline constexpr size_t kAttributeHeaderSize = 4;
inline constexpr size_t kTransactionIdSize = 12;
// RFC 8489 section 14.7: FINGERPRINT is CRC-32 of the message XORed with this.
inline constexpr uint32_t kFingerprintXor = 0x5354554e;
inline constexpr size_t kFingerprintAttributeSize = 8;      // header + 4-byte CRC
inline constexpr size_t kMessageIntegrityAttributeSize = 24;  // header + 20-byte HMAC-SHA1
inline constexpr size_t kMessageIntegritySha256AttributeSize = 36;  // header + 32 bytes
// The Message Length field is 16 bits.
inline constexpr size_t kMaxMessageSize = kHeaderSize + 0xFFFF;

// Methods (RFC 8489 section 18.2; TURN's are in RFC 8656 section 17).
namespace method {
inline constexpr uint16_t kBinding = 0x001;
inline constexpr uint16_t kAllocate = 0x003;
inline constexpr uint16_t kRefresh = 0x004;
inline constexpr uint16_t kSend = 0x006;
inline constexpr uint16_t kData = 0x007;
inline constexpr uint16_t kCreatePermission = 0x008;
inline constexpr uint16_t kChannelBind = 0x009;
}  // namespace method

enum class MessageClass : uint8_t {
  kRequest = 0b00,
  kIndication = 0b01,
  kSuccessResponse = 0b10,
  kErrorResponse = 0b11,
};

// Attribute types. 0x0000-0x7FFF are comprehension-required: a request carrying one
// the server does not understand gets a 420 (RFC 8489 section 6.3.1).
namespace attr {
inline constexpr uint16_t kMappedAddress = 0x0001;
inline constexpr uint16_t kChangeRequest = 0x0003;     // RFC 5780 section 7.2
inline constexpr uint16_t kUsername = 0x0006;
inline constexpr uint16_t kMessageIntegrity = 0x0008;
inline constexpr uint16_t kErrorCode = 0x0009;
inline constexpr uint16_t kUnknownAttributes = 0x000A;
inline constexpr uint16_t kRealm = 0x0014;
inline constexpr uint16_t kNonce = 0x0015;
inline constexpr uint16_t kMessageIntegritySha256 = 0x001C;
inline constexpr uint16_t kPasswordAlgorithm = 0x001D;
inline constexpr uint16_t kUserhash = 0x001E;
inline constexpr uint16_t kXorMappedAddress = 0x0020;
inline constexpr uint16_t kPriority = 0x0024;          // RFC 8445
inline constexpr uint16_t kUseCandidate = 0x0025;      // RFC 8445
inline constexpr uint16_t kPasswordAlgorithms = 0x8002;
inline constexpr uint16_t kAlternateDomain = 0x8003;
inline constexpr uint16_t kSoftware = 0x8022;
inline constexpr uint16_t kAlternateServer = 0x8023;
inline constexpr uint16_t kFingerprint = 0x8028;
inline constexpr uint16_t kIceControlled = 0x8029;     // RFC 8445
inline constexpr uint16_t kIceControlling = 0x802A;    // RFC 8445
inline constexpr uint16_t kResponseOrigin = 0x802B;    // RFC 5780 section 7.3
inline constexpr uint16_t kOtherAddress = 0x802C;      // RFC 5780 section 7.4

constexpr bool is_comprehension_required(uint16_t type) { return type < 0x8000; }
}  // namespace attr

// Error codes (RFC 8489 section 14.8).
namespace error_code {
inline constexpr int kTryAlternate = 300;
inline constexpr int kBadRequest = 400;
inline constexpr int kUnauthorized = 401;
inline constexpr int kUnknownAttribute = 420;
inline constexpr int kStaleNonce = 438;
inline constexpr int kServerError = 500;
}  // namespace error_code

using TransactionId = std::array<std::byte, kTransactionIdSize>;

// The 16-bit message type interleaves method and class bits (RFC 8489 section 5):
//   M11..M7 C1 M6..M4 C0 M3..M0
constexpr uint16_t message_type(uint16_t method, MessageClass cls) {
  const auto c = static_cast<uint16_t>(cls);
  return static_cast<uint16_t>((method & 0x000F) | ((method & 0x0070) << 1) |
                               ((method & 0x0F80) << 2) | ((c & 0b01) << 4) |
                               ((c & 0b10) << 7));
}
constexpr uint16_t method_of(uint16_t type) {
  return static_cast<uint16_t>((type & 0x000F) | ((type & 0x00E0) >> 1) |
                               ((type & 0x3E00) >> 2));
}
constexpr MessageClass class_of(uint16_t type) {
  return static_cast<MessageClass>(((type >> 4) & 0b01) | ((type >> 7) & 0b10));
}

// An IP address and port, as carried by (XOR-)MAPPED-ADDRESS.
struct TransportAddress {
  enum class Family : uint8_t { kIPv4 = 0x01, kIPv6 = 0x02 };  // wire values
  Family family = Family::kIPv4;
  std::array<uint8_t, 16> ip{};  // IPv4 uses the first 4 bytes
  uint16_t port = 0;

  static TransportAddress ipv4(std::array<uint8_t, 4> ip, uint16_t port);
  static TransportAddress ipv6(const std::array<uint8_t, 16>& ip, uint16_t port);
  size_t ip_size() const { return family == Family::kIPv4 ? 4 : 16; }
  // "192.0.2.1:32853" or "[2001:db8::1]:32853".
  std::string to_string() const;
  bool operator==(const TransportAddress&) const = default;
};

// One attribute of a parsed message; `value` points into the parsed bytes.
struct Attribute {
  uint16_t type = 0;
  std::span<const std::byte> value;
  size_t offset = 0;  // of the attribute header from the start of the message
};

// A parsed message: a view of the input bytes, which must outlive it.
struct Message {
  uint16_t type = 0;
  // The 32 bits where RFC 8489 puts the magic cookie. Anything else there means an
  // RFC 3489 ("classic") client, for whom these bits are part of a 128-bit id.
  std::array<std::byte, 4> cookie_field{};
  bool classic = false;
  TransactionId transaction_id{};
  // In order of appearance. Attributes after MESSAGE-INTEGRITY other than
  // MESSAGE-INTEGRITY-SHA256 and FINGERPRINT are left out: RFC 8489 section 14.5
  // says to ignore them.
  std::vector<Attribute> attributes;
  std::span<const std::byte> bytes;  // the whole message
  bool has_fingerprint = false;      // present and verified

  uint16_t method() const { return method_of(type); }
  MessageClass message_class() const { return class_of(type); }
  const Attribute* find(uint16_t attribute_type) const;
};

enum class ParseStatus { kOk, kInvalid };

struct ParseResult {
  ParseStatus status = ParseStatus::kInvalid;
  Message message;         // kOk only
  std::string_view error;  // kInvalid only; static string
};

enum class Compatibility {
  kRfc8489,        // the magic cookie is required
  kAcceptRfc3489,  // also classic messages without it (Message::classic)
};

// Parses one whole STUN message (a UDP datagram, or a message cut out of a TCP stream
// with stream_message_length). The message must fill `input` exactly. A FINGERPRINT,
// if present, must be last and correct.
ParseResult parse(std::span<const std::byte> input,
                  Compatibility compatibility = Compatibility::kRfc8489);

// Quick test used to demultiplex a datagram or stream (RFC 7983): top two bits zero
// and the magic cookie in place. Needs at least 8 bytes.
bool looks_like_stun(std::span<const std::byte> input);

// Framing of STUN over a byte stream (TCP/TLS, RFC 8489 section 6.2.2 and TURN over
// TCP): given what has arrived so far, is there a whole message at the front?
enum class StreamStatus { kComplete, kNeedMore, kInvalid };
struct StreamProbe {
  StreamStatus status = StreamStatus::kNeedMore;
  size_t length = 0;       // kComplete only: header + attributes
  std::string_view error;  // kInvalid only; static string
};
StreamProbe stream_message_length(std::span<const std::byte> prefix);

// XOR-MAPPED-ADDRESS (RFC 8489 section 14.2).
std::optional<TransportAddress> decode_xor_address(std::span<const std::byte> value,
                                                   const TransactionId& transaction_id);
std::vector<std::byte> encode_xor_address(const TransportAddress& address,
                                          const TransactionId& transaction_id);
// MAPPED-ADDRESS (section 14.1), same layout without the XOR.
std::optional<TransportAddress> decode_address(std::span<const std::byte> value);
std::vector<std::byte> encode_address(const TransportAddress& address);

// ERROR-CODE (section 14.8).
struct ErrorCode {
  int code = 0;
  std::string reason;
};
std::optional<ErrorCode> decode_error_code(std::span<const std::byte> value);

// UNKNOWN-ATTRIBUTES (section 14.9).
std::vector<uint16_t> decode_unknown_attributes(std::span<const std::byte> value);

// CRC-32 (ISO-HDLC, the one zlib and Ethernet use) as FINGERPRINT needs it.
uint32_t crc32(std::span<const std::byte> data);

// HMAC-SHA1 MESSAGE-INTEGRITY check (section 14.5) with a short-term key (the
// password, already SASLprep'ed) or a long-term key (MD5 of user:realm:password).
bool verify_message_integrity(const Message& message, std::span<const std::byte> key);
// HMAC-SHA256 MESSAGE-INTEGRITY-SHA256 check (section 14.6): the value may be truncated
// to 16..32 bytes, a multiple of 4.
bool verify_message_integrity_sha256(const Message& message, std::span<const std::byte> key);

// Builds a message attribute by attribute, keeping the header length current so that
// MESSAGE-INTEGRITY and FINGERPRINT cover exactly what precedes them.
class MessageBuilder {
 public:
  MessageBuilder(uint16_t method, MessageClass cls, const TransactionId& transaction_id);
  // An answer to an RFC 3489 client: echoes its cookie field (RFC 8489 section 11).
  MessageBuilder(uint16_t method, MessageClass cls, const Message& classic_request);

  void add_attribute(uint16_t type, std::span<const std::byte> value);
  void add_xor_mapped_address(const TransportAddress& address);
  void add_mapped_address(const TransportAddress& address);
  void add_software(std::string_view software);
  void add_error_code(int code, std::string_view reason);
  void add_unknown_attributes(std::span<const uint16_t> types);
  void add_message_integrity(std::span<const std::byte> key);
  void add_message_integrity_sha256(std::span<const std::byte> key);
  // Must be the last attribute.
  void add_fingerprint();

  const std::vector<std::byte>& bytes() const { return bytes_; }
  std::vector<std::byte> take() { return std::move(bytes_); }

 private:
  void set_length(size_t body_length);
  std::vector<std::byte> bytes_;
  TransactionId transaction_id_;
};

}  // namespace natfwd::stun
