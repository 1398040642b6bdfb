#include "ice/send_indication.h"

#include <cstring>

#include "stun/turn_constants.h"

namespace natfwd {
namespace {

void put_u16(std::byte* at, size_t value) {
  at[0] = static_cast<std::byte>(value >> 8);
  at[1] = static_cast<std::byte>(value);
}

size_t padded(size_t size) { return (size + 3) & ~size_t{3}; }

}  // namespace

SendIndicationFramer::SendIndicationFramer(const stun::TransportAddress& peer,
                                           const stun::TransactionId& first)
    : peer_(peer), transaction_(first) {}

size_t SendIndicationFramer::framed_size(size_t payload_size) const {
  return stun::kHeaderSize + 4 + 4 + peer_.ip_size() + 4 + padded(payload_size);
}

void SendIndicationFramer::append(std::span<const std::byte> payload,
                                  std::vector<std::byte>& out) {
  // RFC 8489 section 6: each message its own transaction id; a counter in the last
  // four bytes of a random start keeps them distinct.
  for (size_t i = transaction_.size(); i-- > transaction_.size() - 4;) {
    transaction_[i] = static_cast<std::byte>(std::to_integer<unsigned>(transaction_[i]) + 1);
    if (transaction_[i] != std::byte{0}) break;
  }
  const auto peer = stun::encode_xor_address(peer_, transaction_);
  const size_t total = framed_size(payload.size());
  const size_t start = out.size();
  out.resize(start + total);
  std::byte* at = out.data() + start;
  put_u16(at, stun::message_type(stun::method::kSend, stun::MessageClass::kIndication));
  put_u16(at + 2, total - stun::kHeaderSize);
  const uint32_t cookie = stun::kMagicCookie;
  for (int i = 0; i < 4; ++i) at[4 + i] = static_cast<std::byte>(cookie >> (24 - 8 * i));
  std::memcpy(at + 8, transaction_.data(), transaction_.size());
  at += stun::kHeaderSize;
  put_u16(at, turn::attr::kXorPeerAddress);
  put_u16(at + 2, peer.size());
  std::memcpy(at + 4, peer.data(), peer.size());
  at += 4 + peer.size();
  put_u16(at, turn::attr::kData);
  put_u16(at + 2, payload.size());
  if (!payload.empty()) std::memcpy(at + 4, payload.data(), payload.size());
  // Section 14 of RFC 8489: padding to a multiple of four, its value ignored.
  std::memset(at + 4 + payload.size(), 0, padded(payload.size()) - payload.size());
}

}  // namespace natfwd
