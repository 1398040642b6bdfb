#include "punch/punch_leg.h"

#include <algorithm>
#include <chrono>
#include <cstring>

#include "log.h"
#include "net/datagrams.h"
#include "net/socket_address.h"
#include "socket_buffers.h"

namespace natfwd::punch {
namespace {

using net::make_socket_address;
using net::to_transport_address;

gint64 now_us() { return g_get_monotonic_time(); }
// The probe's clock: CLOCK_MONOTONIC like GLib's, in its own type.
netcheck::TimePoint now_tp() { return netcheck::TimePoint(std::chrono::microseconds(now_us())); }

uint64_t random_seed() {
  return g_random_int() | (static_cast<uint64_t>(g_random_int()) << 32);
}

bool is_punch_packet(std::span<const std::byte> bytes) {
  return bytes.size() == kPacketSize &&
         std::memcmp(bytes.data(), kPacketMagic.data(), kPacketMagic.size()) == 0;
}

}  // namespace

PunchLeg::PunchLeg(const std::string& stun_ip, uint16_t stun_port, Limits limits,
                   Callbacks callbacks)
    : stun_ip_(stun_ip), stun_port_(stun_port), limits_(limits),
      callbacks_(std::move(callbacks)) {}

PunchLeg::~PunchLeg() {
  timer_.reset();
  sockets_.clear();
}

bool PunchLeg::probe() {
  GObjectPtr<GSocketAddress> server(make_socket_address(stun_ip_, stun_port_));
  if (!server || g_socket_address_get_family(server.get()) != G_SOCKET_FAMILY_IPV4) return false;
  // The local address the kernel would use towards the relay: connect() a UDP socket
  // (no packet is sent) and read it back.
  GObjectPtr<GSocket> route(g_socket_new(G_SOCKET_FAMILY_IPV4, G_SOCKET_TYPE_DATAGRAM,
                                         G_SOCKET_PROTOCOL_UDP, nullptr));
  if (!route || !g_socket_connect(route.get(), server.get(), nullptr, nullptr)) return false;
  GObjectPtr<GSocketAddress> route_local(g_socket_get_local_address(route.get(), nullptr));
  if (!route_local) return false;
  local_ip_ = net::to_host_port(route_local.get()).host;
  if (!open_socket(0)) return false;
  GObjectPtr<GSocketAddress> bound(g_socket_get_local_address(sockets_[0]->socket.get(), nullptr));
  const TransportAddress local = to_transport_address(bound.get());
  // Only the mapping tests matter here; the filtering socket's datagrams are never
  // sent (its tests time out unseen), so it needs no socket of its own.
  TransportAddress unused = local;
  unused.port = 0;
  probe_.emplace(to_transport_address(server.get()), std::array{local, unused}, random_seed());
  probe_->start(now_tp());
  pump_probe();
  return true;
}

bool PunchLeg::open_socket(int index) {
  if (index < static_cast<int>(sockets_.size()) && sockets_[index]) return true;
  GObjectPtr<GSocket> socket(g_socket_new(G_SOCKET_FAMILY_IPV4, G_SOCKET_TYPE_DATAGRAM,
                                          G_SOCKET_PROTOCOL_UDP, nullptr));
  if (!socket) return false;
  g_socket_set_blocking(socket.get(), FALSE);
  GObjectPtr<GSocketAddress> local(make_socket_address(local_ip_, 0));
  if (!local || !g_socket_bind(socket.get(), local.get(), FALSE, nullptr)) return false;
  if (static_cast<int>(sockets_.size()) <= index) sockets_.resize(index + 1);
  auto entry = std::make_unique<Socket>();
  entry->leg = this;
  entry->index = index;
  entry->socket = std::move(socket);
  entry->watch.reset(g_socket_create_source(entry->socket.get(), G_IO_IN, nullptr));
  keep_polled_while_dispatched(entry->watch.get());  // the punched tunnel's receive path
  g_source_set_callback(entry->watch.get(), G_SOURCE_FUNC(&PunchLeg::on_readable), entry.get(),
                        nullptr);
  g_source_attach(entry->watch.get(), nullptr);
  sockets_[index] = std::move(entry);
  return true;
}

gboolean PunchLeg::on_readable(GSocket*, GIOCondition, gpointer data) {
  // `data` may be freed inside (a win or failure closes sockets): read it first.
  auto* socket = static_cast<Socket*>(data);
  PunchLeg* leg = socket->leg;
  const int index = socket->index;
  guard_callback("punch: socket", [leg, index] { leg->readable(index); });
  return G_SOURCE_CONTINUE;
}

void PunchLeg::readable(int index) {
  if (index >= static_cast<int>(sockets_.size()) || !sockets_[index]) return;
  std::byte buffer[2048];
  // A bounded batch: the main loop comes back for the rest. A datagram may end the
  // socket (a win or a failure closes sockets): then the batch stops.
  net::receive_datagrams(
      g_socket_get_fd(sockets_[index]->socket.get()), buffer, 64, "punch",
      [&](std::span<const std::byte> bytes, const sockaddr_storage& from, socklen_t) {
        datagram(index, net::to_transport_address(from), bytes);
        return index < static_cast<int>(sockets_.size()) && sockets_[index] != nullptr;
      });
}

void PunchLeg::datagram(int index, const TransportAddress& from,
                        std::span<const std::byte> bytes) {
  if (failed_) return;
  if (probe_) {
    if (index == 0) probe_->on_datagram(netcheck::NatBehaviourProbe::kMappingSocket, bytes, now_tp());
    pump_probe();
    return;
  }
  if (!search_) return;
  if (is_punch_packet(bytes)) {
    run(search_->on_datagram(index, from, bytes, Micros(now_us())));
    return;
  }
  // Anything else from the other side's public IP is the tunnel's (QUIC checks it);
  // it can arrive before this side has won, once the other side has.
  if (from.family != TransportAddress::Family::kIPv4 ||
      !std::equal(plan_remote_ip_.begin(), plan_remote_ip_.end(), from.ip.begin()))
    return;
  if (won_ && index == won_socket_) last_receive_us_ = now_us();
  if (callbacks_.on_datagram) callbacks_.on_datagram(bytes);
}

void PunchLeg::pump_probe() {
  for (auto& send : probe_->take_sends()) {
    if (send.socket != netcheck::NatBehaviourProbe::kMappingSocket) continue;
    GObjectPtr<GSocketAddress> to(make_socket_address(send.to));
    // Send errors read as silence, as they are.
    if (to)
      g_socket_send_to(sockets_[0]->socket.get(), to.get(),
                       reinterpret_cast<const gchar*>(send.bytes.data()), send.bytes.size(),
                       nullptr, nullptr);
  }
  using netcheck::Mapping;
  const netcheck::NatBehaviour& result = probe_->result();
  if (result.mapping != Mapping::kUnknown && result.mapped) {
    probed_ = true;
    endpoint_dependent_ = result.mapping == Mapping::kAddressDependent ||
                          result.mapping == Mapping::kAddressAndPortDependent;
    public_address_ = *result.mapped;
    probe_.reset();
    timer_.reset();
    log::debug("punch: mapping %s, public address %s",
               std::string(netcheck::to_string(result.mapping)).c_str(),
               public_address_.to_string().c_str());
    callbacks_.on_probed(*this);
    return;
  }
  if (result.mapped && !result.server_discovery) {
    fail("the relay's STUN server has no RFC 5780 alternate address (relay --alternate-address)");
    return;
  }
  if (probe_->done()) {
    fail(result.udp ? "the NAT's mapping behaviour is unknown"
                    : "no answer from the relay's STUN server");
    return;
  }
  if (auto deadline = probe_->next_deadline())
    arm(std::chrono::duration_cast<std::chrono::microseconds>(deadline->time_since_epoch()).count());
}

void PunchLeg::start(const PunchPlan& plan) {
  if (!probed_ || failed_ || search_) return;
  std::copy(plan.remote.ip.begin(), plan.remote.ip.begin() + 4, plan_remote_ip_.begin());
  search_.emplace(plan.role, plan.session_id, plan.key, plan.remote, random_seed(), limits_);
  run(search_->start(Micros(now_us())));
}

void PunchLeg::run(BirthdayPunch::Actions actions) {
  for (const auto& action : actions) {
    if (failed_) return;
    if (action.kind == BirthdayPunch::Action::Kind::kOpenSocket) {
      if (!open_socket(action.socket)) search_->socket_failed(action.socket);
      continue;
    }
    if (action.socket >= static_cast<int>(sockets_.size()) || !sockets_[action.socket]) continue;
    GObjectPtr<GSocketAddress> to(make_socket_address(action.to));
    if (to)
      g_socket_send_to(sockets_[action.socket]->socket.get(), to.get(),
                       reinterpret_cast<const gchar*>(action.bytes.data()), action.bytes.size(),
                       nullptr, nullptr);
  }
  if (search_->state() == BirthdayPunch::State::kWon && !won_) {
    won_ = true;
    won_socket_ = search_->win().socket;
    won_remote_length_ = net::to_sockaddr(
        search_->win().remote,
        g_socket_get_family(sockets_[won_socket_]->socket.get()) == G_SOCKET_FAMILY_IPV6
            ? AF_INET6
            : AF_INET,
        won_remote_);
    last_receive_us_ = now_us();
    keep_only(won_socket_);
    raise_socket_buffers(g_socket_get_fd(sockets_[won_socket_]->socket.get()), kTunnelSocketBufferBytes);
    arm(search_->next_deadline() ? std::optional<gint64>(search_->next_deadline()->count())
                                 : std::nullopt);
    callbacks_.on_won(*this);
    return;
  }
  if (search_->state() == BirthdayPunch::State::kGaveUp) {
    const auto& c = search_->counters();
    fail("no path after " + std::to_string(c.sockets_opened) + " socket(s), " +
         std::to_string(c.probes_sent) + " probe(s)");
    return;
  }
  arm(search_->next_deadline() ? std::optional<gint64>(search_->next_deadline()->count())
                               : std::nullopt);
}

void PunchLeg::keep_only(int index) {
  for (int i = 0; i < static_cast<int>(sockets_.size()); ++i)
    if (i != index) sockets_[i].reset();
}

void PunchLeg::send(std::span<const std::byte> datagram) {
  if (!won_ || failed_ || !sockets_[won_socket_] || won_remote_length_ == 0) return;
  sends_.add(won_remote_, won_remote_length_, datagram);
  if (sends_.full()) flush();
}

void PunchLeg::flush() {
  if (sends_.empty()) return;
  if (!won_ || failed_ || !sockets_[won_socket_]) {
    sends_.clear();
    return;
  }
  const auto outcome = sends_.flush(g_socket_get_fd(sockets_[won_socket_]->socket.get()));
  if (outcome.dropped)
    log::debug("punch: %zu datagram(s) dropped on send: %s", outcome.dropped,
               g_strerror(outcome.last_error));
}

std::string PunchLeg::local_address() const {
  if (!won_ || !sockets_[won_socket_]) return "?";
  GObjectPtr<GSocketAddress> local(
      g_socket_get_local_address(sockets_[won_socket_]->socket.get(), nullptr));
  return local ? net::to_string(local.get()) : "?";
}

std::string PunchLeg::remote_address() const {
  return won_ ? search_->win().remote.to_string() : "?";
}

void PunchLeg::arm(std::optional<gint64> deadline_us) {
  timer_.reset();
  if (!deadline_us) return;
  const gint64 wait_us = std::max<gint64>(0, *deadline_us - now_us());
  GSourcePtr source(g_timeout_source_new(static_cast<guint>((wait_us + 999) / 1000)));
  g_source_set_callback(source.get(), &PunchLeg::on_timer, this, nullptr);
  g_source_attach(source.get(), nullptr);
  timer_ = std::move(source);
}

gboolean PunchLeg::on_timer(gpointer self) {
  auto* leg = static_cast<PunchLeg*>(self);
  g_source_unref(leg->timer_.release());  // GLib removes it as we return
  guard_callback("punch: timer", [leg] { leg->timer(); });
  return G_SOURCE_REMOVE;
}

void PunchLeg::timer() {
  if (failed_) return;
  if (probe_) {
    probe_->on_timer(now_tp());
    pump_probe();
  } else if (search_) {
    run(search_->on_timer(Micros(now_us())));
  }
}

void PunchLeg::fail(const std::string& why) {
  if (failed_) return;
  failed_ = true;
  timer_.reset();
  probe_.reset();
  sockets_.clear();
  if (callbacks_.on_failed) callbacks_.on_failed(*this, why);
}

}  // namespace natfwd::punch
