// Hard-NAT hole punching by the birthday technique, as an I/O-free core that takes
// `now`: addresses, datagrams and the time in; sockets to open, datagrams to send,
// the next deadline and the outcome (won on socket i with remote addr:port, or gave
// up) out. The glue owns the UDP sockets and one timer set to next_deadline().
//
// When one side's NAT maps every destination to a new port (endpoint-dependent
// mapping, RFC 4787 section 4.1: the "hard" side) and the other's keeps one mapping
// for all destinations (the "easy" side), ICE's single srflx candidate of the hard
// side is useless to the easy side. So:
//   hard side: opens up to Limits::sockets UDP sockets, one per open_interval, and
//     sends an opener from each to the easy side's public (srflx) address. Each opens
//     a mapping hardIP:X_i whose filter lets the easy side's address in.
//   easy side: from its one socket (the one whose srflx the other side was given),
//     sends probes to random distinct ports of the hard side's public IP, one per
//     probe_interval, at most Limits::probes. A probe that lands on some X_i gets
//     through: with 256 mappings among ~64k ports, 1024 probes find one with
//     probability 1 - (1 - 256/64512)^1024, about 98 %.
//   An opener that reaches the easy side (its NAT filters nothing) is answered by a
//   probe straight to its source, which saves the search.
// The handshake is probe (easy -> hard), ack (hard -> easy: the easy side has won),
// confirm (easy -> hard: the hard side has won). The hard side repeats its ack until
// the confirm arrives; the easy side answers every ack with a confirm, so one lost
// packet costs a repeat, not the path.
//
// Every packet carries the session id, the sender's role and its kind under an
// HMAC-SHA256 keyed by a secret both sides got through their authenticated channel:
// a stranger (or the network reflecting our own probes back) cannot make a side take
// its path. A packet that fails any check is dropped and counted, nothing else.
//
// Politeness: the only destinations are the two addresses the caller passes in (the
// other side's addresses as the relay reported them for a peer setting up a tunnel
// with us); sockets, probes, acks and the total time are bounded by Limits.
#pragma once

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <random>
#include <span>
#include <string_view>
#include <unordered_set>
#include <vector>

#include "stun/stun_message.h"

namespace natfwd::punch {

using Micros = std::chrono::microseconds;
using stun::TransportAddress;

enum class Role : uint8_t { kHard = 0, kEasy = 1 };
std::string_view to_string(Role role);  // "hard", "easy"

// Which role this side takes, from whether each side's NAT maps per destination (its
// srflx candidates differ between destinations, or netcheck's mapping behaviour is
// address or address-and-port dependent). Punching helps only when exactly one side
// is hard: two easy sides need no help from it (ICE finds them), two hard sides are
// out of its reach (256 x 256 among 64k x 64k pairs).
std::optional<Role> choose_role(bool local_endpoint_dependent, bool remote_endpoint_dependent);

// ---- the packet ----------------------------------------------------------------

using PunchKey = std::array<uint8_t, 32>;

// 4 magic bytes, version, kind, sender role, 0, session id (64 bits), sequence number
// (32 bits), then the first 16 bytes of HMAC-SHA256(key, the 20 bytes before it). All
// numbers big-endian. The first byte is 0, so neither QUIC (RFC 9000 section 17: the
// fixed bit 0x40 is set) nor STUN (RFC 8489 section 5: the magic cookie is elsewhere)
// is taken for it on a socket that later carries them.
inline constexpr std::array<uint8_t, 4> kPacketMagic{0x00, 'N', 'F', 'P'};
inline constexpr uint8_t kPacketVersion = 1;
inline constexpr size_t kPacketTagSize = 16;
inline constexpr size_t kPacketSize = 20 + kPacketTagSize;

enum class PacketKind : uint8_t { kOpener = 1, kProbe = 2, kAck = 3, kConfirm = 4 };

struct PunchPacket {
  PacketKind kind = PacketKind::kProbe;
  Role sender = Role::kEasy;
  uint64_t session_id = 0;
  uint32_t seq = 0;  // a probe's number; an ack repeats the probe's
};

std::array<std::byte, kPacketSize> encode_packet(const PunchPacket& packet, const PunchKey& key);

struct PacketParse {
  enum class Status {
    kOk,
    kNotPunch,  // not this format at all (wrong size or magic): someone else's datagram
    kInvalid,   // this format, but a bad version, kind, role, session or tag
  };
  Status status = Status::kNotPunch;
  PunchPacket packet;
  const char* reason = "";  // static text, for a rate-limited log line
};

// Checks the tag with `key` and the session id against `session_id`.
PacketParse parse_packet(std::span<const std::byte> datagram, const PunchKey& key,
                         uint64_t session_id);

// ---- the search ----------------------------------------------------------------

struct Limits {
  // Hard side: sockets, and one opened every open_interval (256 at 2 ms: 0.5 s).
  int sockets = 256;
  Micros open_interval{2000};
  // Easy side: probes, one every probe_interval (1024 at 4 ms: 250 a second, about
  // 9 kB/s of 36-byte packets, 4.1 s in all).
  int probes = 1024;
  Micros probe_interval{4000};
  // Hard side: the ack is repeated this often, this many times, until a confirm;
  // without one the pair is dropped one ack_interval after the last ack.
  Micros ack_interval{100'000};
  int acks = 10;
  // Either side gives up this long after start() unless it has won.
  Micros give_up_after{10'000'000};
  // The easy side probes ports in [lowest_port, 65535]: Linux's NAT (and most CGNATs)
  // allocates from the unprivileged range (iptables-extensions MASQUERADE
  // --random-fully picks any port in it).
  uint16_t lowest_port = 1024;
};

class BirthdayPunch {
 public:
  struct Action {
    enum class Kind {
      kOpenSocket,  // hard side: open UDP socket `socket` (the next index)
      kSend,        // send `bytes` from socket `socket` to `to`
    };
    Kind kind = Kind::kSend;
    int socket = 0;
    TransportAddress to;
    std::array<std::byte, kPacketSize> bytes{};
  };
  using Actions = std::vector<Action>;
  enum class State { kIdle, kSearching, kWon, kGaveUp };
  struct Win {
    int socket = 0;           // keep this one; the hard side closes all others
    TransportAddress remote;  // the other side's public address for this path
  };
  struct Counters {
    int sockets_opened = 0;
    int probes_sent = 0;
    int openers_sent = 0;
    int acks_sent = 0;
    int dropped = 0;  // datagrams that failed a check
  };

  // `remote`: the easy side's srflx address (we are hard) or the hard side's public
  // address, whose port is ignored (we are easy). `seed` picks the probed ports
  // (random in the glue, fixed in tests).
  BirthdayPunch(Role role, uint64_t session_id, const PunchKey& key, TransportAddress remote,
                uint64_t seed, Limits limits = Limits());

  Role role() const { return role_; }
  State state() const { return state_; }
  // Valid in kWon.
  const Win& win() const { return win_; }
  const Counters& counters() const { return counters_; }
  // The easy side sends from socket 0, which the caller has open before start().
  Actions start(Micros now);
  // Call when next_deadline() has come.
  Actions on_timer(Micros now);
  // A datagram on socket `socket` from `from`. Datagrams that are not punch packets
  // (kNotPunch) are the caller's to pass on once a path was won.
  Actions on_datagram(int socket, const TransportAddress& from,
                      std::span<const std::byte> datagram, Micros now);
  // Hard side: socket `socket` could not be opened (out of descriptors, say): no more
  // are tried; the ones open still take part.
  void socket_failed(int socket);
  std::optional<Micros> next_deadline() const;

 private:
  void timers(Micros now, Actions& out);
  void send(Actions& out, int socket, const TransportAddress& to, PacketKind kind, uint32_t seq);
  uint16_t next_probe_port();
  void give_up_if_due(Micros now);
  bool from_remote(const TransportAddress& from) const;

  Role role_;
  uint64_t session_id_;
  PunchKey key_;
  TransportAddress remote_;
  Limits limits_;
  std::mt19937_64 rng_;
  State state_ = State::kIdle;
  Win win_;
  Counters counters_;
  Micros give_up_at_{0};
  // Hard side.
  Micros next_open_at_{0};
  bool open_failed_ = false;   // a socket could not be opened: no more are tried
  // The first probe's socket and source, until confirmed; no sockets are opened
  // meanwhile. Dropped when every ack went unconfirmed, and the search goes on.
  std::optional<Win> chosen_;
  Micros next_ack_at_{0};
  int acks_left_ = 0;
  uint32_t chosen_seq_ = 0;
  // Easy side.
  Micros next_probe_at_{0};
  std::unordered_set<uint16_t> probed_ports_;    // the random search's
  std::unordered_set<uint16_t> opener_sources_;  // openers already answered
  bool opening() const;
};

}  // namespace natfwd::punch
