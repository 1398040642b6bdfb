#include "server/turn_service.h"

#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <glib-unix.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <exception>
#include <stdexcept>

#include "log.h"
#include "socket_buffers.h"
#include "net/datagrams.h"
#include "net/socket_address.h"
#include "stun/turn_framing.h"

namespace natfwd::relay {
namespace {

using turn::TransportAddress;

turn::TimePoint now() { return turn::Clock::now(); }

std::string ip_of(const TransportAddress& address) {
  std::string text = address.to_string();
  text.erase(text.rfind(':'));
  if (!text.empty() && text.front() == '[') text = text.substr(1, text.size() - 2);
  return text;
}

bool is_wildcard(const std::string& ip) { return ip == "0.0.0.0" || ip == "::" || ip.empty(); }

bool is_ipv6(const std::string& ip) { return ip.find(':') != std::string::npos; }

// Never sent to: only routed, to learn the default route's IPv4 source address.
constexpr const char* kDefaultRouteProbeIp = "192.0.2.1";

// The odd port of an EVEN-PORT R=1 pair while it waits for its RESERVATION-TOKEN:
// bound, in no epoll set and no GLib source, so any shard's thread may take it in or
// close it.
class ReservedSocket : public turn::ReservedRelay {
 public:
  ReservedSocket(GObjectPtr<GSocket> socket, const TransportAddress& address)
      : socket_(std::move(socket)), address_(address) {}
  TransportAddress address() const override { return address_; }
  GObjectPtr<GSocket> take() { return std::move(socket_); }

 private:
  GObjectPtr<GSocket> socket_;
  TransportAddress address_;
};

}  // namespace

TurnService::TurnService(GSocket* udp, TurnServiceConfig config)
    : config_(std::move(config)),
      udp_(G_SOCKET(g_object_ref(udp))),
      core_(config_.turn, *this, config_.nonces),
      responder_(config_.turn.software),
      relay_epoll_(epoll_create1(EPOLL_CLOEXEC)),
      stream_budget_({config_.max_stream_clients, config_.max_stream_clients_per_address,
                      kStreamIdleTimeout}) {
  if (relay_epoll_.get() < 0)
    throw std::runtime_error(std::string("epoll: ") + std::strerror(errno));
  relay_epoll_source_.reset(g_unix_fd_source_new(relay_epoll_.get(), G_IO_IN));
  g_source_set_callback(relay_epoll_source_.get(),
                        G_SOURCE_FUNC(on_relays_readable_trampoline), this, nullptr);
  keep_polled_while_dispatched(relay_epoll_source_.get());  // and the TCP/TLS clients' (watch())
  g_source_attach(relay_epoll_source_.get(), g_main_context_get_thread_default());
}

TurnService::~TurnService() {
  timer_.arm(std::nullopt);
  reap_source_.reset();
  for (auto& [id, client] : streams_) {
    client->read_source.reset();
    client->write_source.reset();
    client->resume_source.reset();
    if (client->stream) client->stream->shutdown_write();
  }
  streams_.clear();
  // The core's destructor closes the relays through close_relay; drop them first
  // so that it finds nothing left.
  relay_epoll_source_.reset();
  relays_.clear();
}

// ---- UDP clients -------------------------------------------------------------------

turn::TurnServer::Result TurnService::on_udp_message(std::span<const std::byte> datagram,
                                                     const TransportAddress& from) {
  turn::ClientKey key{turn::Transport::kUdp, from, 0};
  auto result = core_.on_client_message(key, datagram, now());
  arm_timer();
  return result;
}

// ---- relayed sockets -----------------------------------------------------------------

std::string TurnService::relay_ip_for(const turn::ClientKey& client,
                                      TransportAddress::Family family) {
  if (family == TransportAddress::Family::kIPv6) return config_.ipv6_address;
  if (!config_.ipv4_address.empty()) return config_.ipv4_address;
  if (!is_wildcard(config_.listen_ip) && !is_ipv6(config_.listen_ip)) return config_.listen_ip;
  // The source address the kernel picks toward the client: a connected UDP socket
  // sends nothing, it only routes. A client of the other family (IPv6 asking for an
  // IPv4 relayed address, RFC 8656 section 7.2's default) has no IPv4 route of its
  // own: take the default route's source, toward a documentation address (RFC 5737).
  const std::string toward =
      client.address.family == TransportAddress::Family::kIPv4 ? ip_of(client.address)
                                                               : kDefaultRouteProbeIp;
  GObjectPtr<GSocket> probe(g_socket_new(G_SOCKET_FAMILY_IPV4, G_SOCKET_TYPE_DATAGRAM,
                                         G_SOCKET_PROTOCOL_UDP, nullptr));
  GObjectPtr<GSocketAddress> target(net::make_socket_address(toward, 9));
  if (probe && target && g_socket_connect(probe.get(), target.get(), nullptr, nullptr)) {
    GObjectPtr<GSocketAddress> local(g_socket_get_local_address(probe.get(), nullptr));
    if (local) return net::to_host_port(local.get()).host;
  }
  return "0.0.0.0";
}

GObjectPtr<GSocket> TurnService::bind_udp(TransportAddress::Family family, const std::string& ip,
                                          uint16_t port) {
  const GSocketFamily socket_family =
      family == TransportAddress::Family::kIPv6 ? G_SOCKET_FAMILY_IPV6 : G_SOCKET_FAMILY_IPV4;
  GObjectPtr<GSocket> socket(
      g_socket_new(socket_family, G_SOCKET_TYPE_DATAGRAM, G_SOCKET_PROTOCOL_UDP, nullptr));
  if (!socket) return nullptr;
  GObjectPtr<GSocketAddress> address(net::make_socket_address(ip, port));
  if (!address || !g_socket_bind(socket.get(), address.get(), FALSE, nullptr)) return nullptr;
  return socket;
}

GObjectPtr<GSocket> TurnService::bind_relay_socket(TransportAddress::Family family,
                                                   const std::string& ip, bool even_port) {
  auto try_port = [&](uint16_t port) { return bind_udp(family, ip, port); };
  if (config_.min_port == 0) {
    // The kernel picks; for an even port, ask again until it gives one (half the
    // time at each try).
    for (int attempt = 0; attempt < 32; ++attempt) {
      auto socket = try_port(0);
      if (!socket || !even_port) return socket;
      GObjectPtr<GSocketAddress> local(g_socket_get_local_address(socket.get(), nullptr));
      if (local && g_inet_socket_address_get_port(G_INET_SOCKET_ADDRESS(local.get())) % 2 == 0)
        return socket;
    }
    return nullptr;
  }
  // A range: walk it from where the last search stopped, so that freed ports are not
  // reused at once.
  const uint32_t span = uint32_t{config_.max_port} - config_.min_port + 1;
  for (uint32_t i = 0; i < span; ++i) {
    const uint32_t offset = (next_port_offset_ + i) % span;
    if (even_port && (config_.min_port + offset) % 2 != 0) continue;
    if (auto socket = try_port(static_cast<uint16_t>(config_.min_port + offset))) {
      next_port_offset_ = (offset + 1) % span;
      return socket;
    }
  }
  return nullptr;
}

std::optional<TransportAddress> TurnService::open_relay(turn::AllocationId id,
                                                        const turn::ClientKey& client,
                                                        TransportAddress::Family family,
                                                        bool even_port) {
  const std::string ip = relay_ip_for(client, family);
  if (ip.empty()) return std::nullopt;
  auto socket = bind_relay_socket(family, ip, even_port);
  if (!socket) return std::nullopt;
  return install_relay(id, client, std::move(socket));
}

std::optional<std::pair<GObjectPtr<GSocket>, GObjectPtr<GSocket>>> TurnService::bind_relay_pair(
    TransportAddress::Family family, const std::string& ip) {
  auto port_of = [](GSocket* socket) -> uint32_t {
    GObjectPtr<GSocketAddress> local(g_socket_get_local_address(socket, nullptr));
    return local ? g_inet_socket_address_get_port(G_INET_SOCKET_ADDRESS(local.get())) : 0;
  };
  if (config_.min_port == 0) {
    // The kernel picks the even port (half the time at each try); the odd one above
    // it is free most of the time, or the next try finds another pair.
    for (int attempt = 0; attempt < 64; ++attempt) {
      auto even = bind_udp(family, ip, 0);
      if (!even) return std::nullopt;
      const uint32_t port = port_of(even.get());
      if (port == 0 || port % 2 != 0 || port >= 65535) continue;
      if (auto odd = bind_udp(family, ip, static_cast<uint16_t>(port + 1)))
        return std::make_pair(std::move(even), std::move(odd));
    }
    return std::nullopt;
  }
  // A range: both ports inside it, walked from where the last search stopped.
  const uint32_t span = uint32_t{config_.max_port} - config_.min_port + 1;
  for (uint32_t i = 0; i < span; ++i) {
    const uint32_t offset = (next_port_offset_ + i) % span;
    const uint32_t port = config_.min_port + offset;
    if (port % 2 != 0 || port + 1 > config_.max_port) continue;
    auto even = bind_udp(family, ip, static_cast<uint16_t>(port));
    if (!even) continue;
    if (auto odd = bind_udp(family, ip, static_cast<uint16_t>(port + 1))) {
      next_port_offset_ = (offset + 2) % span;
      return std::make_pair(std::move(even), std::move(odd));
    }
  }
  return std::nullopt;
}

std::optional<turn::TurnIo::RelayPair> TurnService::open_relay_pair(
    turn::AllocationId id, const turn::ClientKey& client, TransportAddress::Family family) {
  const std::string ip = relay_ip_for(client, family);
  if (ip.empty()) return std::nullopt;
  auto pair = bind_relay_pair(family, ip);
  if (!pair) return std::nullopt;
  GObjectPtr<GSocketAddress> odd_local(g_socket_get_local_address(pair->second.get(), nullptr));
  if (!odd_local) return std::nullopt;
  const TransportAddress odd = net::to_transport_address(odd_local.get());
  const auto relayed = install_relay(id, client, std::move(pair->first));
  if (!relayed) return std::nullopt;
  return RelayPair{*relayed, std::make_unique<ReservedSocket>(std::move(pair->second), odd)};
}

std::optional<TransportAddress> TurnService::adopt_relay(
    turn::AllocationId id, const turn::ClientKey& client,
    std::unique_ptr<turn::ReservedRelay> reserved) {
  auto* socket = dynamic_cast<ReservedSocket*>(reserved.get());
  if (!socket) return std::nullopt;
  return install_relay(id, client, socket->take());
}

std::optional<TransportAddress> TurnService::install_relay(turn::AllocationId id,
                                                           const turn::ClientKey& client,
                                                           GObjectPtr<GSocket> socket) {
  if (!socket) return std::nullopt;
  g_socket_set_blocking(socket.get(), FALSE);
  // Every relayed datagram of a tunnel passes this socket; the default buffer drops
  // bursts (measured: 0.3 % of a 25 MB/s relayed tunnel at 20 ms RTT). Memory is only
  // used while datagrams wait.
  raise_socket_buffers(g_socket_get_fd(socket.get()), kRelaySocketBufferBytes);
  GObjectPtr<GSocketAddress> local(g_socket_get_local_address(socket.get(), nullptr));
  if (!local) return std::nullopt;
  const TransportAddress relayed = net::to_transport_address(local.get());

  auto relay = std::make_unique<RelaySocket>();
  relay->id = id;
  if (client.transport != turn::Transport::kUdp) {
    // A stream with an allocation lives as long as the allocation.
    if (auto stream = streams_.find(client.connection); stream != streams_.end()) {
      relay->stream = client.connection;
      stream->second->allocated = true;
      stream_budget_.hold(client.connection);
    }
  }
  epoll_event event{};
  event.events = EPOLLIN;
  event.data.u64 = id;
  if (epoll_ctl(relay_epoll_.get(), EPOLL_CTL_ADD, g_socket_get_fd(socket.get()), &event) != 0) {
    log::error("turn: epoll_ctl: %s", std::strerror(errno));
    return std::nullopt;
  }
  relay->socket = std::move(socket);
  relays_[id] = std::move(relay);
  return relayed;
}

void TurnService::close_relay(turn::AllocationId id) {
  auto it = relays_.find(id);
  if (it == relays_.end()) return;
  // Safe from the relay's own callback: on_relays_readable finds relays by id.
  const int fd = g_socket_get_fd(it->second->socket.get());
  epoll_ctl(relay_epoll_.get(), EPOLL_CTL_DEL, fd, nullptr);
  // Datagrams queued for this socket must not reach whatever reuses its descriptor.
  for (size_t i = 0; i < active_batches_; ++i)
    if (batches_[i].fd == fd) batches_[i].batch.clear();
  g_socket_close(it->second->socket.get(), nullptr);
  // The allocation of a stream that is still open went (expired, unused, refreshed
  // to 0): the connection must make progress again or go.
  if (auto stream = streams_.find(it->second->stream);
      stream != streams_.end() && !stream->second->closed) {
    stream->second->allocated = false;
    stream_budget_.touch(stream->first, now());
  }
  relays_.erase(it);
}

gboolean TurnService::on_relays_readable_trampoline(gint, GIOCondition, gpointer data) {
  auto* service = static_cast<TurnService*>(data);
  guard_callback("turn: relayed sockets", [=] { service->on_relays_readable(); });
  service->arm_timer();
  return G_SOURCE_CONTINUE;
}

// Level triggered: a socket with datagrams left after its turn is reported again.
void TurnService::on_relays_readable() {
  std::array<epoll_event, kMaxDatagramsPerWakeup> events;
  const int n = epoll_wait(relay_epoll_.get(), events.data(), static_cast<int>(events.size()), 0);
  BatchedSends batched(*this);
  for (int i = 0; i < n; ++i) {
    auto it = relays_.find(events[static_cast<size_t>(i)].data.u64);
    if (it != relays_.end()) on_relay_readable(*it->second);
  }
}

void TurnService::on_relay_readable(RelaySocket& relay) {
  const turn::AllocationId id = relay.id;
  BatchedSends batched(*this);
  reader_.read(
      g_socket_get_fd(relay.socket.get()), kMaxDatagramsPerWakeup, "turn: relayed socket",
      [&](std::span<const std::byte> datagram, const sockaddr_storage& from, socklen_t) {
        core_.on_peer_data(id, net::to_transport_address(from), datagram, now());
        // The core may have closed this relay (it does not today, but stay safe).
        return relays_.contains(id);
      });
}

void TurnService::send_to_peer(turn::AllocationId id, const TransportAddress& peer,
                               std::span<const std::byte> bytes) {
  auto it = relays_.find(id);
  if (it == relays_.end()) return;
  send_datagram(it->second->socket.get(), peer, bytes, "peer");
}

void TurnService::send_datagram(GSocket* socket, const TransportAddress& to,
                                std::span<const std::byte> bytes, const char* what) {
  const std::span<const std::byte> pieces[] = {bytes};
  send_datagram(socket, to, pieces, what);
}

void TurnService::send_datagram(GSocket* socket, const TransportAddress& to,
                                std::span<const std::span<const std::byte>> pieces,
                                const char* what) {
  sockaddr_storage address{};
  const socklen_t length =
      net::to_sockaddr(to, g_socket_get_family(socket) == G_SOCKET_FAMILY_IPV6 ? AF_INET6 : AF_INET,
                  address);
  if (length == 0) return;
  const int fd = g_socket_get_fd(socket);
  if (batch_depth_ == 0) {
    // Outside a batch (a timer's send): rare, so joined in a copy.
    std::vector<std::byte> joined;
    for (const auto& piece : pieces) joined.insert(joined.end(), piece.begin(), piece.end());
    if (sendto(fd, joined.data(), joined.size(), MSG_DONTWAIT,
               reinterpret_cast<const sockaddr*>(&address), length) < 0)
      log::debug("turn: send to %s %s: %s", what, to.to_string().c_str(), std::strerror(errno));
    return;
  }
  auto pending = std::find_if(batches_.begin(), batches_.begin() + active_batches_,
                              [fd](const PendingBatch& batch) { return batch.fd == fd; });
  if (pending == batches_.begin() + active_batches_) {
    if (active_batches_ == batches_.size()) batches_.push_back({-1, net::DatagramBatch(io_mode_)});
    pending = batches_.begin() + active_batches_++;
    pending->fd = fd;
  }
  pending->batch.add(address, length, pieces);
  if (pending->batch.full()) flush_batch(fd, pending->batch);
}

void TurnService::flush_sends() noexcept {
  for (size_t i = 0; i < active_batches_; ++i) flush_batch(batches_[i].fd, batches_[i].batch);
  active_batches_ = 0;
  // A flush may close a stream (a write error): look each one up again.
  std::vector<uint64_t> ids;
  ids.swap(streams_to_flush_);
  for (uint64_t id : ids) {
    auto it = streams_.find(id);
    if (it == streams_.end()) continue;
    it->second->flush_queued = false;
    guard_callback("turn: stream write", [&] { flush(*it->second); });
  }
}

void TurnService::flush_batch(int fd, net::DatagramBatch& batch) noexcept {
  if (batch.empty()) return;
  const auto outcome = batch.flush(fd);
  if (outcome.dropped > 0)
    log::debug("turn: %zu of %zu datagrams dropped on send: %s", outcome.dropped,
               outcome.dropped + outcome.sent, std::strerror(outcome.last_error));
}

// ---- sending to clients --------------------------------------------------------------

void TurnService::send_to_client(const turn::ClientKey& client, std::span<const std::byte> bytes) {
  const std::span<const std::byte> pieces[] = {bytes};
  send_gathered_to_client(client, pieces);
}

void TurnService::send_gathered_to_client(const turn::ClientKey& client,
                                          std::span<const std::span<const std::byte>> pieces) {
  if (client.transport == turn::Transport::kUdp) {
    send_datagram(udp_.get(), client.address, pieces, "client");
    return;
  }
  auto it = streams_.find(client.connection);
  if (it == streams_.end() || it->second->closed) return;
  StreamClient& stream = *it->second;
  size_t size = 0;
  for (const auto& piece : pieces) size += piece.size();
  if (stream.output.size() - stream.output_offset + size > kMaxStreamOutputBytes) {
    log::debug("turn: %s reads too slowly, dropping %zu bytes", client.to_string().c_str(),
               size);
    return;
  }
  for (const auto& piece : pieces) stream.output.insert(stream.output.end(), piece.begin(), piece.end());
  // Over TLS each message is a record of its own: coturn's client (turnutils_uclient
  // -S) takes one message per record and loses the rest of a record that holds more.
  if (batch_depth_ == 0 || client.transport == turn::Transport::kTls) {
    flush(stream);
  } else if (!stream.flush_queued) {
    stream.flush_queued = true;
    streams_to_flush_.push_back(stream.id);
  }
}

// ---- TURN over TCP/TLS -----------------------------------------------------------------

void TurnService::adopt_stream(std::unique_ptr<ByteStream> stream, turn::Transport transport,
                               const TransportAddress& remote,
                               std::span<const std::byte> already_read) {
  const uint64_t id = next_stream_id_++;
  const auto admission = stream_budget_.admit(id, remote, now());
  if (admission != ConnectionBudget::Admission::kAccepted) {
    const bool per_address = admission == ConnectionBudget::Admission::kTooManyFromAddress;
    log::warn_limited("turn-streams", "turn: refusing %s connection from %s: %s",
                      turn::to_string(transport), remote.to_string().c_str(),
                      per_address ? "too many from this address" : "too many");
    if (config_.turn.stats)
      config_.turn.stats->error(per_address ? "turn_streams_per_address" : "turn_streams_total");
    stream->shutdown_write();
    return;
  }
  // This connection may carry a whole relayed tunnel (socket_buffers.h).
  if (GSocket* socket = stream->socket()) prefer_bbr(g_socket_get_fd(socket));
  auto client = std::make_unique<StreamClient>();
  client->service = this;
  client->id = id;
  client->key = turn::ClientKey{transport, remote, client->id};
  client->stream = std::move(stream);
  StreamClient& ref = *client;
  streams_.emplace(ref.id, std::move(client));
  log::debug("turn: %s connected", ref.key.to_string().c_str());
  watch(ref, ref.read_source, ref.read_condition, G_IO_IN, false);
  // Bytes already read (or buffered inside TLS) are not announced by the socket. They
  // go where reads land (the sniffers read at most 4 KiB), as every read's do.
  if (already_read.size() > kStreamReadBytes) {
    close_stream(ref, "first read too long");
  } else if (!already_read.empty() || ref.stream->has_buffered_input()) {
    std::byte* const fresh = stream_read_area_.get() + kMaxStreamMessageBytes;
    std::copy(already_read.begin(), already_read.end(), fresh);
    if (deliver_stream_messages(ref, std::span(fresh, already_read.size())))
      on_stream_readable(ref);
  }
  arm_timer();
}

void TurnService::watch(StreamClient& client, GSourcePtr& source, GIOCondition& current,
                        GIOCondition condition, bool write) {
  if (source && current == condition) return;
  source.reset();
  current = condition;
  source.reset(g_socket_create_source(client.stream->socket(), condition, nullptr));
  g_source_set_callback(source.get(),
                        write ? G_SOURCE_FUNC(on_stream_writable_trampoline)
                              : G_SOURCE_FUNC(on_stream_readable_trampoline),
                        &client, nullptr);
  keep_polled_while_dispatched(source.get());
  g_source_attach(source.get(), g_main_context_get_thread_default());
}

gboolean TurnService::on_stream_readable_trampoline(GSocket*, GIOCondition, gpointer data) {
  auto* client = static_cast<StreamClient*>(data);
  TurnService* service = client->service;
  try {
    // The datagrams this read makes for peers go out in one sendmmsg per socket.
    BatchedSends batched(*service);
    if (!client->closed) service->on_stream_readable(*client);
  } catch (const std::exception& e) {
    log::error("turn: %s: %s", client->key.to_string().c_str(), e.what());
    service->close_stream(*client, "internal error");
  }
  service->arm_timer();
  return G_SOURCE_CONTINUE;
}

gboolean TurnService::on_stream_writable_trampoline(GSocket*, GIOCondition, gpointer data) {
  auto* client = static_cast<StreamClient*>(data);
  if (!client->closed) client->service->flush(*client);
  // A TLS write may have needed a read: try reading too.
  if (!client->closed && client->stream->has_buffered_input())
    client->service->on_stream_readable(*client);
  return G_SOURCE_CONTINUE;
}

gboolean TurnService::on_stream_resume_trampoline(gpointer data) {
  auto* client = static_cast<StreamClient*>(data);
  // Destroying the source from its own callback is safe: GLib holds a reference
  // while it dispatches.
  client->resume_source.reset();
  on_stream_readable_trampoline(nullptr, G_IO_IN, data);
  return G_SOURCE_REMOVE;
}

void TurnService::on_stream_readable(StreamClient& client) {
  // Bounded (1 MiB), so that one sender cannot monopolise the loop; TLS may hold
  // decrypted bytes that the socket will not announce again, so read until it would
  // block.
  constexpr int kMaxReadsPerWakeup = 16;
  std::byte* const fresh = stream_read_area_.get() + kMaxStreamMessageBytes;
  for (int i = 0; i < kMaxReadsPerWakeup && !client.closed; ++i) {
    size_t n = 0;
    std::string error;
    switch (client.stream->read(std::span(fresh, kStreamReadBytes), n, error)) {
      case ByteStream::Io::kOk:
        if (!deliver_stream_messages(client, std::span(fresh, n))) return;
        continue;
      case ByteStream::Io::kWouldBlock:
        watch(client, client.read_source, client.read_condition,
              client.stream->wait_condition(), false);
        return;
      case ByteStream::Io::kEof:
        close_stream(client, "closed by the client");
        return;
      case ByteStream::Io::kError:
        close_stream(client, error);
        return;
    }
  }
  // Stopped at the bound. Bytes left in the kernel wake the read source again; bytes
  // left inside TLS do not: come back from the main loop, after the other sources.
  if (!client.closed && !client.resume_source && client.stream->has_buffered_input()) {
    client.resume_source.reset(g_idle_source_new());
    g_source_set_callback(client.resume_source.get(), on_stream_resume_trampoline, &client,
                          nullptr);
    g_source_attach(client.resume_source.get(), g_main_context_get_thread_default());
  }
}

bool TurnService::deliver_stream_messages(StreamClient& client, std::span<std::byte> bytes) {
  // The incomplete message goes just before the new bytes, in the read area's room for
  // the longest one.
  const size_t held = client.input.size();
  std::memcpy(bytes.data() - held, client.input.data(), held);
  const std::span<const std::byte> input(bytes.data() - held, held + bytes.size());
  client.input.clear();
  size_t offset = 0;
  while (!client.closed) {
    const auto rest = input.subspan(offset);
    const auto probe = turn::stream_frame_length(rest);
    if (probe.status == stun::StreamStatus::kNeedMore) break;
    if (probe.status == stun::StreamStatus::kInvalid) {
      log::warn_limited("turn-garbage", "turn: closing %s: %.*s", client.key.to_string().c_str(),
                        static_cast<int>(probe.error.size()), probe.error.data());
      close_stream(client, std::string(probe.error));
      return false;
    }
    const auto message = rest.first(probe.length);
    offset += probe.length;
    if (!client.allocated) stream_budget_.touch(client.id, now());
    // Binding goes to the Binding responder, everything else to the TURN core.
    if (stun::looks_like_stun(message) &&
        stun::method_of(static_cast<uint16_t>((std::to_integer<uint16_t>(message[0]) << 8) |
                                              std::to_integer<uint16_t>(message[1]))) ==
            stun::method::kBinding) {
      auto result = responder_.handle(message, client.key.address);
      if (result.outcome == stun::BindingResponder::Outcome::kRespond)
        send_to_client(client.key, result.response);
      else if (result.outcome == stun::BindingResponder::Outcome::kDrop) {
        log::warn_limited("turn-garbage", "turn: closing %s: %.*s",
                          client.key.to_string().c_str(), static_cast<int>(result.reason.size()),
                          result.reason.data());
        close_stream(client, std::string(result.reason));
        return false;
      }
      continue;
    }
    const auto result = core_.on_client_message(client.key, message, now());
    if (result.verdict == turn::TurnServer::Verdict::kMalformed) {
      log::warn_limited("turn-garbage", "turn: closing %s: %.*s", client.key.to_string().c_str(),
                        static_cast<int>(result.reason.size()), result.reason.data());
      close_stream(client, std::string(result.reason));
      return false;
    }
  }
  if (client.closed) return false;
  client.input.assign(input.begin() + static_cast<ptrdiff_t>(offset), input.end());
  return true;
}

void TurnService::flush(StreamClient& client) {
  while (!client.closed && client.output_offset < client.output.size()) {
    size_t n = 0;
    std::string error;
    switch (client.stream->write(std::span(client.output).subspan(client.output_offset), n,
                                 error)) {
      case ByteStream::Io::kOk:
        client.output_offset += n;
        continue;
      case ByteStream::Io::kWouldBlock:
        watch(client, client.write_source, client.write_condition,
              client.stream->wait_condition(), true);
        return;
      case ByteStream::Io::kEof:
      case ByteStream::Io::kError:
        close_stream(client, error.empty() ? "connection closed" : error);
        return;
    }
  }
  if (client.closed) return;
  client.output.clear();
  client.output_offset = 0;
  client.write_source.reset();
}

void TurnService::close_stream(StreamClient& client, const std::string& reason) {
  if (client.closed) return;
  client.closed = true;
  log::debug("turn: %s closed: %s", client.key.to_string().c_str(), reason.c_str());
  client.read_source.reset();
  client.write_source.reset();
  client.resume_source.reset();
  core_.on_client_closed(client.key);
  stream_budget_.release(client.id);
  to_reap_.insert(client.id);
  if (!reap_source_) {
    reap_source_.reset(g_idle_source_new());
    g_source_set_callback(reap_source_.get(), on_reap_trampoline, this, nullptr);
    g_source_attach(reap_source_.get(), g_main_context_get_thread_default());
  }
}

gboolean TurnService::on_reap_trampoline(gpointer self) {
  auto* service = static_cast<TurnService*>(self);
  for (uint64_t id : service->to_reap_) {
    auto it = service->streams_.find(id);
    if (it == service->streams_.end()) continue;
    if (it->second->stream) {
      it->second->stream->shutdown_write();
      g_socket_close(it->second->stream->socket(), nullptr);
    }
    service->streams_.erase(it);
  }
  service->to_reap_.clear();
  service->reap_source_.reset();
  return G_SOURCE_REMOVE;
}

// ---- timer -----------------------------------------------------------------------

void TurnService::arm_timer() {
  auto deadline = core_.next_deadline();
  const auto streams = stream_budget_.next_deadline();
  if (streams && (!deadline || *streams < *deadline)) deadline = streams;
  timer_.arm(deadline);
}

void TurnService::on_timer() {
  guard_callback("turn: timer", [this] {
    const auto at = now();
    core_.on_tick(at);
    close_idle_streams(at);
  });
  arm_timer();
}

void TurnService::close_idle_streams(turn::TimePoint at) {
  for (uint64_t id : stream_budget_.take_expired(at)) {
    auto it = streams_.find(id);
    if (it == streams_.end() || it->second->closed) continue;
    // A silent connection is what a peer's TURN-over-TCP bridge or ICE-TCP leaves when
    // its tunnel went another way: ordinary, so debug. Half a message held this long
    // is someone holding the place: worth an operator's look.
    if (it->second->input.empty())
      log::debug("turn: closing %s: silent for %lld s", it->second->key.to_string().c_str(),
                 static_cast<long long>(kStreamIdleTimeout.count()));
    else
      log::warn_limited("turn-idle", "turn: closing %s: no complete message in %lld s",
                        it->second->key.to_string().c_str(),
                        static_cast<long long>(kStreamIdleTimeout.count()));
    if (config_.turn.stats) config_.turn.stats->error("turn_stream_idle");
    close_stream(*it->second, "idle");
  }
}

}  // namespace natfwd::relay
