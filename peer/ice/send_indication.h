// TURN Send indications (RFC 8656 section 11.1) built in place, for the datagrams a
// peer sends on its own relayed candidate without libnice (ice_session.h): libnice
// makes one sendmsg per datagram there, with ChannelData framing on a channel number
// it keeps to itself; a Send indication needs no channel, only the permission that
// libnice's connectivity checks installed, and equal-sized ones go out in one GSO send.
//
// In: the peer address (the remote candidate) and each payload; out: the indication's
// bytes appended to a buffer. No I/O.
#pragma once

#include <cstddef>
#include <span>
#include <vector>

#include "stun/stun_message.h"

namespace natfwd {

class SendIndicationFramer {
 public:
  // `first` is the first transaction id; later ones count up in its last four bytes.
  SendIndicationFramer(const stun::TransportAddress& peer, const stun::TransactionId& first);

  // Header (20), XOR-PEER-ADDRESS (4 + 8 or 20), DATA header (4), padding (0..3).
  static constexpr size_t kMaxOverhead = 20 + 4 + 20 + 4 + 3;

  // The indication's size for a payload of `payload_size` bytes.
  size_t framed_size(size_t payload_size) const;
  // Appends the indication carrying `payload` to `out`.
  void append(std::span<const std::byte> payload, std::vector<std::byte>& out);

 private:
  stun::TransportAddress peer_;
  stun::TransactionId transaction_;
};

}  // namespace natfwd
