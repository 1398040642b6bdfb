// Which datagrams of a selected ICE pair natfwd reads on a socket of its own, connected
// to the remote candidate (connected_receiver.h), and what it does with the STUN among
// them. No I/O.
//
// In: the selected pair's shape; each datagram from the remote candidate, with the
// local ICE credentials. Out: whether the pair qualifies, whether a datagram is STUN
// or data for the tunnel, and the Binding success response owed to a connectivity
// check (RFC 8445 section 7.3).
#pragma once

#include <cstddef>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "stun/stun_message.h"

namespace natfwd {

enum class CandidateKind { kHost, kServerReflexive, kPeerReflexive, kRelayed };

struct PairShape {
  bool udp = false;
  CandidateKind local = CandidateKind::kHost;
  CandidateKind remote = CandidateKind::kHost;
};

// A direct UDP pair: a relayed candidate on either side stays with libnice (our side's
// datagrams come from the TURN server framed as ChannelData or Data indications, the
// other side's come from its TURN server's relayed address, which we must not pin),
// and a TCP pair needs libnice's RFC 4571 framing.
bool receives_on_connected_socket(const PairShape& pair);

enum class DatagramKind {
  kStun,  // a STUN message (RFC 7983 section 7: first two bits 00, the magic cookie)
  kData,  // anything else: a QUIC packet for the tunnel, as libnice hands it over
};
// QUIC packets always have the fixed bit (0x40) set (RFC 9000 section 17.2, 17.3), so
// they never look like STUN.
DatagramKind classify_datagram(std::span<const std::byte> datagram);

// A datagram from our TURN server over UDP (turn_udp_bridge.h): the tunnel's data when
// it is ChannelData (RFC 8656 section 12.4) or a Data indication (section 11.4) that
// carries a datagram that is not STUN; nullopt for everything libnice must see: the
// server's answers, and the remote's connectivity checks relayed to us. The span points
// into `datagram`. ChannelData may be followed by padding (section 12.5), never cut
// short; the channel number is not checked against a binding, since the server sends
// only what a permission of ours let in and libnice would take it from any pair.
std::optional<std::span<const std::byte>> tunnel_data_from_turn_server(
    std::span<const std::byte> datagram);

// Answers the connectivity checks the remote side still sends on the selected pair:
// the retransmission of a nominating check whose first answer was lost, or checks the
// other side began before it selected. libnice no longer sees them once our connected
// socket takes the pair's datagrams, and an unanswered check fails the pair on the
// other side. Binding indications (libnice's keepalives, RFC 8445 section 11) need no
// answer; nor do responses, since libnice has no check of its own in flight on a
// selected pair (its transactions are freed when the pair succeeds, and
// keepalive-conncheck and consent freshness are off).
class CheckResponder {
 public:
  // Our ufrag and password (RFC 8445 section 7.2.2: the check's USERNAME is
  // "OURS:THEIRS" and its MESSAGE-INTEGRITY is keyed with our password).
  CheckResponder(std::string local_ufrag, std::string local_password);

  // The response to send back to `from` when `datagram` is a Binding request for us
  // with a valid MESSAGE-INTEGRITY; nothing for any other STUN message.
  std::optional<std::vector<std::byte>> answer(std::span<const std::byte> datagram,
                                               const stun::TransportAddress& from) const;

 private:
  std::string ufrag_;
  std::string password_;
};

}  // namespace natfwd
