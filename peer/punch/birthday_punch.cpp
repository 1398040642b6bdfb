#include "punch/birthday_punch.h"

#include <algorithm>
#include <cstring>
#include <stdexcept>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

namespace natfwd::punch {

std::string_view to_string(Role role) { return role == Role::kHard ? "hard" : "easy"; }

std::optional<Role> choose_role(bool local_endpoint_dependent, bool remote_endpoint_dependent) {
  if (local_endpoint_dependent == remote_endpoint_dependent) return std::nullopt;
  return local_endpoint_dependent ? Role::kHard : Role::kEasy;
}

namespace {

constexpr size_t kSignedSize = kPacketSize - kPacketTagSize;

void put_be(std::byte* out, uint64_t value, size_t bytes) {
  for (size_t i = 0; i < bytes; ++i)
    out[i] = static_cast<std::byte>(value >> (8 * (bytes - 1 - i)));
}

uint64_t get_be(const std::byte* in, size_t bytes) {
  uint64_t value = 0;
  for (size_t i = 0; i < bytes; ++i) value = (value << 8) | std::to_integer<uint8_t>(in[i]);
  return value;
}

std::array<uint8_t, EVP_MAX_MD_SIZE> tag_of(const std::byte* signed_bytes, const PunchKey& key) {
  std::array<uint8_t, EVP_MAX_MD_SIZE> tag{};
  unsigned int length = 0;
  if (!HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
            reinterpret_cast<const unsigned char*>(signed_bytes), kSignedSize, tag.data(),
            &length) ||
      length < kPacketTagSize)
    throw std::runtime_error("HMAC-SHA256 failed");
  return tag;
}

}  // namespace

std::array<std::byte, kPacketSize> encode_packet(const PunchPacket& packet, const PunchKey& key) {
  std::array<std::byte, kPacketSize> out{};
  for (size_t i = 0; i < kPacketMagic.size(); ++i) out[i] = std::byte{kPacketMagic[i]};
  out[4] = std::byte{kPacketVersion};
  out[5] = static_cast<std::byte>(packet.kind);
  out[6] = static_cast<std::byte>(packet.sender);
  put_be(&out[8], packet.session_id, 8);
  put_be(&out[16], packet.seq, 4);
  const auto tag = tag_of(out.data(), key);
  std::memcpy(&out[kSignedSize], tag.data(), kPacketTagSize);
  return out;
}

PacketParse parse_packet(std::span<const std::byte> datagram, const PunchKey& key,
                         uint64_t session_id) {
  PacketParse parse;
  if (datagram.size() != kPacketSize) return parse;
  for (size_t i = 0; i < kPacketMagic.size(); ++i)
    if (datagram[i] != std::byte{kPacketMagic[i]}) return parse;
  parse.status = PacketParse::Status::kInvalid;
  if (std::to_integer<uint8_t>(datagram[4]) != kPacketVersion) {
    parse.reason = "unknown punch packet version";
    return parse;
  }
  const auto kind = std::to_integer<uint8_t>(datagram[5]);
  const auto sender = std::to_integer<uint8_t>(datagram[6]);
  if (kind < static_cast<uint8_t>(PacketKind::kOpener) ||
      kind > static_cast<uint8_t>(PacketKind::kConfirm) || sender > 1 ||
      datagram[7] != std::byte{0}) {
    parse.reason = "malformed punch packet";
    return parse;
  }
  // The tag first: nothing of an unauthenticated packet is believed, not even its
  // session id.
  const auto tag = tag_of(datagram.data(), key);
  if (CRYPTO_memcmp(tag.data(), datagram.data() + kSignedSize, kPacketTagSize) != 0) {
    parse.reason = "punch packet with a bad tag";
    return parse;
  }
  parse.packet.kind = static_cast<PacketKind>(kind);
  parse.packet.sender = static_cast<Role>(sender);
  parse.packet.session_id = get_be(datagram.data() + 8, 8);
  parse.packet.seq = static_cast<uint32_t>(get_be(datagram.data() + 16, 4));
  if (parse.packet.session_id != session_id) {
    parse.reason = "punch packet of another session";
    return parse;
  }
  parse.status = PacketParse::Status::kOk;
  return parse;
}

BirthdayPunch::BirthdayPunch(Role role, uint64_t session_id, const PunchKey& key,
                             TransportAddress remote, uint64_t seed, Limits limits)
    : role_(role),
      session_id_(session_id),
      key_(key),
      remote_(remote),
      limits_(limits),
      rng_(seed) {
  if (limits_.sockets < 1 || limits_.probes < 1 || limits_.acks < 1 ||
      limits_.lowest_port == 0 ||
      static_cast<int>(65536 - limits_.lowest_port) < limits_.probes)
    throw std::invalid_argument("BirthdayPunch: limits out of range");
}

BirthdayPunch::Actions BirthdayPunch::start(Micros now) {
  if (state_ != State::kIdle) throw std::logic_error("BirthdayPunch started twice");
  state_ = State::kSearching;
  give_up_at_ = now + limits_.give_up_after;
  next_open_at_ = now;
  next_probe_at_ = now;
  Actions out;
  timers(now, out);
  return out;
}

BirthdayPunch::Actions BirthdayPunch::on_timer(Micros now) {
  Actions out;
  if (state_ != State::kSearching) return out;
  timers(now, out);
  give_up_if_due(now);
  return out;
}

void BirthdayPunch::give_up_if_due(Micros now) {
  if (state_ == State::kSearching && now >= give_up_at_) {
    state_ = State::kGaveUp;
    chosen_.reset();
  }
}

void BirthdayPunch::timers(Micros now, Actions& out) {
  if (role_ == Role::kHard) {
    if (chosen_ && acks_left_ == 0 && next_ack_at_ <= now) {
      // No confirm for any ack: the easy side never heard us on this pair (its NAT
      // lets nothing in from there after all). Search on.
      chosen_.reset();
      next_open_at_ = std::max(next_open_at_, now);
    }
    // Catch up on the sockets due by now (a late timer must not lower the bound, only
    // send the due ones together).
    while (opening() && next_open_at_ <= now) {
      const int socket = counters_.sockets_opened++;
      Action open;
      open.kind = Action::Kind::kOpenSocket;
      open.socket = socket;
      out.push_back(open);
      send(out, socket, remote_, PacketKind::kOpener, static_cast<uint32_t>(socket));
      ++counters_.openers_sent;
      next_open_at_ += limits_.open_interval;
    }
    if (chosen_ && acks_left_ > 0 && next_ack_at_ <= now) {
      send(out, chosen_->socket, chosen_->remote, PacketKind::kAck, chosen_seq_);
      --acks_left_;
      next_ack_at_ = now + limits_.ack_interval;
    }
    return;
  }
  while (counters_.probes_sent < limits_.probes && next_probe_at_ <= now) {
    TransportAddress to = remote_;
    to.port = next_probe_port();
    send(out, 0, to, PacketKind::kProbe, static_cast<uint32_t>(counters_.probes_sent++));
    next_probe_at_ += limits_.probe_interval;
  }
}

uint16_t BirthdayPunch::next_probe_port() {
  // Distinct ports: a port probed once is either closed or already ours.
  std::uniform_int_distribution<int> pick(limits_.lowest_port, 65535);
  for (;;) {
    const auto port = static_cast<uint16_t>(pick(rng_));
    if (probed_ports_.insert(port).second) return port;
  }
}

void BirthdayPunch::send(Actions& out, int socket, const TransportAddress& to, PacketKind kind,
                         uint32_t seq) {
  Action action;
  action.kind = Action::Kind::kSend;
  action.socket = socket;
  action.to = to;
  action.bytes = encode_packet(PunchPacket{kind, role_, session_id_, seq}, key_);
  if (kind == PacketKind::kAck) ++counters_.acks_sent;
  out.push_back(action);
}

bool BirthdayPunch::from_remote(const TransportAddress& from) const {
  // Only the address the relay reported: the easy side's srflx IP (its port may differ
  // behind a CGNAT that keeps the mapping but not the port), the hard side's IP.
  return from.family == remote_.family && from.ip == remote_.ip;
}

BirthdayPunch::Actions BirthdayPunch::on_datagram(int socket, const TransportAddress& from,
                                                  std::span<const std::byte> datagram,
                                                  Micros now) {
  Actions out;
  if (state_ == State::kIdle || state_ == State::kGaveUp) return out;
  const PacketParse parse = parse_packet(datagram, key_, session_id_);
  if (parse.status != PacketParse::Status::kOk || !from_remote(from) ||
      parse.packet.sender == role_ || socket < 0 ||
      socket >= (role_ == Role::kHard ? counters_.sockets_opened : 1)) {
    if (parse.status != PacketParse::Status::kNotPunch) ++counters_.dropped;
    return out;
  }
  const PunchPacket& packet = parse.packet;
  if (role_ == Role::kHard) {
    if (state_ == State::kWon) return out;
    if (packet.kind == PacketKind::kProbe) {
      // The first probe through picks the pair; later ones through the same pair are
      // answered (our ack may have been lost), others ignored.
      if (!chosen_) {
        chosen_ = Win{socket, from};
        chosen_seq_ = packet.seq;
        acks_left_ = limits_.acks;
      } else if (chosen_->socket != socket || !(chosen_->remote == from)) {
        return out;
      }
      if (acks_left_ > 0) {
        send(out, chosen_->socket, chosen_->remote, PacketKind::kAck, chosen_seq_);
        --acks_left_;
        next_ack_at_ = now + limits_.ack_interval;
      }
    } else if (packet.kind == PacketKind::kConfirm && chosen_ && chosen_->socket == socket &&
               chosen_->remote == from) {
      win_ = *chosen_;
      state_ = State::kWon;
    } else {
      ++counters_.dropped;
    }
    return out;
  }
  switch (packet.kind) {
    case PacketKind::kOpener:
      // Our NAT let the opener in: probe its source directly, within the budget (even
      // a port the random search tried already: it may have come before the mapping).
      if (state_ == State::kSearching && counters_.probes_sent < limits_.probes &&
          opener_sources_.insert(from.port).second)
        send(out, 0, from, PacketKind::kProbe, static_cast<uint32_t>(counters_.probes_sent++));
      break;
    case PacketKind::kAck:
      if (packet.seq >= static_cast<uint32_t>(counters_.probes_sent)) {
        ++counters_.dropped;
        break;
      }
      if (state_ == State::kSearching) {
        win_ = Win{socket, from};
        state_ = State::kWon;
      } else if (!(win_.remote == from)) {
        break;
      }
      send(out, 0, from, PacketKind::kConfirm, packet.seq);
      break;
    default:
      ++counters_.dropped;
      break;
  }
  return out;
}

void BirthdayPunch::socket_failed(int socket) {
  (void)socket;
  open_failed_ = true;
}

bool BirthdayPunch::opening() const {
  return role_ == Role::kHard && !open_failed_ && !chosen_ &&
         counters_.sockets_opened < limits_.sockets;
}

std::optional<Micros> BirthdayPunch::next_deadline() const {
  if (state_ != State::kSearching) return std::nullopt;
  Micros next = give_up_at_;
  if (role_ == Role::kHard) {
    if (opening()) next = std::min(next, next_open_at_);
    if (chosen_) next = std::min(next, next_ack_at_);
  } else if (counters_.probes_sent < limits_.probes) {
    next = std::min(next, next_probe_at_);
  }
  return next;
}

}  // namespace natfwd::punch
