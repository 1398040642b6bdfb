// RFC 5769 sample messages and small builders shared by the STUN codec tests and the
// Binding responder tests.
#pragma once

#include <algorithm>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "stun/stun_message.h"

namespace natfwd::stun::test {

inline std::vector<std::byte> from_hex(std::string_view hex) {
  std::vector<std::byte> out;
  std::string digits;
  for (char c : hex)
    if (c != ' ' && c != '\n') digits.push_back(c);
  for (size_t i = 0; i + 1 < digits.size(); i += 2)
    out.push_back(static_cast<std::byte>(std::stoi(digits.substr(i, 2), nullptr, 16)));
  return out;
}

// The ERROR-CODE number of a message, 0 when it carries none (or a malformed one).
inline uint16_t error_code_of(const Message& message) {
  const Attribute* error = message.find(attr::kErrorCode);
  if (!error) return 0;
  auto code = decode_error_code(error->value);
  return code ? code->code : 0;
}

inline std::span<const std::byte> as_bytes(std::string_view text) {
  return std::as_bytes(std::span(text.data(), text.size()));
}

// RFC 5769 section 2.1: sample request (software "STUN test client", PRIORITY,
// ICE-CONTROLLED, USERNAME "evtj:h6vY", MESSAGE-INTEGRITY, FINGERPRINT).
inline const auto kSampleRequest = from_hex(
    "000100582112a442b7e7a701bc34d686fa87dfae"
    "80220010 5354554e 20746573 7420636c 69656e74"
    "00240004 6e0001ff"
    "80290008 932ff9b1 51263b36"
    "00060009 6576746a 3a683676 59202020"
    "00080014 9aeaa70c bfd8cb56 781ef2b5 b2d3f249 c1b571a2"
    "80280004 e57a3bcf");

// Section 2.2: IPv4 response, mapped address 192.0.2.1 port 32853.
inline const auto kSampleIpv4Response = from_hex(
    "0101003c2112a442b7e7a701bc34d686fa87dfae"
    "8022000b 74657374 20766563 746f7220"
    "00200008 0001a147 e112a643"
    "00080014 2b91f599 fd9e90c3 8c7489f9 2af9ba53 f06be7d7"
    "80280004 c07d4c96");

// Section 2.3: IPv6 response, mapped address 2001:db8:1234:5678:11:2233:4455:6677
// port 32853.
inline const auto kSampleIpv6Response = from_hex(
    "010100482112a442b7e7a701bc34d686fa87dfae"
    "8022000b 74657374 20766563 746f7220"
    "00200014 0002a147 0113a9fa a5d3f179 bc25f4b5 bed2b9d9"
    "00080014 a382954e 4be67bf1 1784c97c 8292c275 bfe3ed41"
    "80280004 c8fb0b4c");

inline constexpr std::string_view kPassword = "VOkJxbRl1RmTxUk/WvJxBt";

inline TransactionId sample_transaction_id() {
  TransactionId id{};
  const auto bytes = from_hex("b7e7a701bc34d686fa87dfae");
  std::copy(bytes.begin(), bytes.end(), id.begin());
  return id;
}

inline std::vector<std::byte> binding_request(const TransactionId& id) {
  MessageBuilder builder(method::kBinding, MessageClass::kRequest, id);
  builder.add_fingerprint();
  return builder.take();
}

inline std::string software_of(const Message& message) {
  const Attribute* software = message.find(attr::kSoftware);
  if (!software) return {};
  return std::string(reinterpret_cast<const char*>(software->value.data()),
                     software->value.size());
}

}  // namespace natfwd::stun::test
