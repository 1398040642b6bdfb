#include "ice/ice_session.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <netinet/udp.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>

#include <glib-unix.h>
#include <nice/interfaces.h>
#include <openssl/rand.h>

#include "log.h"
#include "net/socket_address.h"
#include "socket_buffers.h"

namespace natfwd {
namespace {

constexpr guint kComponent = 1;
// Datagrams held while no pair is selected: enough for QUIC's first flight and a few
// retransmissions; older ones are dropped (QUIC recovers them).
constexpr size_t kMaxPendingDatagrams = 256;
// How long the end of our candidates waits for the gateway's port mapping: PCP and
// NAT-PMP answer on the LAN within milliseconds, UPnP discovery takes
// portmap::kUpnpDiscoverMs; the relay candidates are held longer than that anyway
// (ice_leg.cpp), so a mapping costs setup time only where none comes.
constexpr guint kMappingWaitMs = 1500;
// The foundation of a mapped candidate (RFC 8445 section 5.1.1.3 leaves its form to
// us): the other side tells a mapped address from a STUN one by it.
constexpr char kMappedFoundation[] = "mapped";
// RFC 8445 section 5.1.2.2: type preferences are ours to pick. A mapping reaches the
// host candidate with no NAT guessing: above server-reflexive (100), below host (126).
constexpr guint32 kMappedTypePreference = 110;

bool connected_to(int fd, const sockaddr_storage& peer) {
  sockaddr_storage connected{};
  socklen_t length = sizeof connected;
  return getpeername(fd, reinterpret_cast<sockaddr*>(&connected), &length) == 0 &&
         net::same_address(connected, peer);
}

// The fds of this process's sockets of `wanted_type` for which `match(fd)` holds; the
// first one only when `first_only`.
template <typename Match>
std::vector<int> own_sockets(int wanted_type, bool first_only, Match&& match) {
  std::vector<int> found;
  DIR* dir = opendir("/proc/self/fd");
  if (!dir) return found;
  while (dirent* entry = readdir(dir)) {
    char* end = nullptr;
    const long fd = std::strtol(entry->d_name, &end, 10);
    if (end == entry->d_name || *end != '\0' || fd == dirfd(dir)) continue;
    int type = 0;
    socklen_t type_length = sizeof type;
    if (getsockopt(static_cast<int>(fd), SOL_SOCKET, SO_TYPE, &type, &type_length) != 0 ||
        type != wanted_type || !match(static_cast<int>(fd)))
      continue;
    found.push_back(static_cast<int>(fd));
    if (first_only) break;
  }
  closedir(dir);
  return found;
}

// The fd of this process's socket of `type` bound to exactly `address`, or -1. libnice
// binds each host candidate's socket to its own address and port, so the match is
// unique.
int find_socket_bound_to(int wanted_type, const sockaddr_storage& address) {
  const auto found = own_sockets(wanted_type, true, [&](int fd) {
    sockaddr_storage bound{};
    socklen_t bound_length = sizeof bound;
    return getsockname(fd, reinterpret_cast<sockaddr*>(&bound), &bound_length) == 0 &&
           net::same_address(bound, address);
  });
  return found.empty() ? -1 : found.front();
}

// The TURN server libnice knows for our relayed candidate `local` (a bridge of ours, or
// the real one); only for the agent's own candidates, not the signals' copies.
sockaddr_storage relay_server_of(NiceCandidate* local) {
  NiceAddress server;
  nice_address_init(&server);
  nice_candidate_relay_address(local, &server);
  sockaddr_storage out{};
  nice_address_copy_to_sockaddr(&server, reinterpret_cast<sockaddr*>(&out));
  return out;
}

// NATFWD_TURN_UDP_BRIDGE=off: libnice talks to TURN servers over UDP itself (the
// fallback, and the way to compare).
bool turn_udp_bridge_turned_off() {
  const char* value = std::getenv("NATFWD_TURN_UDP_BRIDGE");
  return value && std::strcmp(value, "off") == 0;
}

std::optional<sockaddr_storage> socket_address_of(const std::string& ip, uint16_t port) {
  NiceAddress address;
  nice_address_init(&address);
  if (!nice_address_set_from_string(&address, ip.c_str())) return std::nullopt;
  nice_address_set_port(&address, port);
  sockaddr_storage out{};
  nice_address_copy_to_sockaddr(&address, reinterpret_cast<sockaddr*>(&out));
  return out;
}

// The one address of `family` among the host addresses libnice gathers on, where a
// TURN bridge can listen (turn_udp_bridge.h); none when there are several: libnice
// sends to the server from each, pinned to its own interface.
std::optional<sockaddr_storage> only_host_address(const std::vector<std::string>& addresses,
                                                  sa_family_t family) {
  std::optional<sockaddr_storage> found;
  for (const auto& ip : addresses) {
    auto address = socket_address_of(ip, 0);
    if (!address || address->ss_family != family) continue;
    if (found) return std::nullopt;
    found = address;
  }
  return found;
}

// The fds of this process's TCP sockets connected to `peer`.
std::vector<int> find_streams_to(const sockaddr_storage& peer) {
  return own_sockets(SOCK_STREAM, false, [&](int fd) { return connected_to(fd, peer); });
}

// One GSO send: at most 64 segments (UDP_MAX_SEGMENTS) and one IP datagram's worth
// of payload.
constexpr size_t kMaxSegments = 64;
constexpr size_t kMaxGsoBytes = 65000;
// Datagrams queued before flush_sends() sends them anyway.
constexpr size_t kMaxQueuedDatagrams = 256;
#ifndef UDP_SEGMENT
constexpr int UDP_SEGMENT = 103;  // linux/udp.h, kernel 4.18
#endif

const char* candidate_type_name(NiceCandidateType type) {
  switch (type) {
    case NICE_CANDIDATE_TYPE_HOST: return "host";
    case NICE_CANDIDATE_TYPE_SERVER_REFLEXIVE: return "srflx";
    case NICE_CANDIDATE_TYPE_PEER_REFLEXIVE: return "prflx";
    case NICE_CANDIDATE_TYPE_RELAYED: return "relay";
  }
  return "unknown";
}

CandidateKind candidate_kind(NiceCandidateType type) {
  switch (type) {
    case NICE_CANDIDATE_TYPE_HOST: return CandidateKind::kHost;
    case NICE_CANDIDATE_TYPE_SERVER_REFLEXIVE: return CandidateKind::kServerReflexive;
    case NICE_CANDIDATE_TYPE_PEER_REFLEXIVE: return CandidateKind::kPeerReflexive;
    case NICE_CANDIDATE_TYPE_RELAYED: return CandidateKind::kRelayed;
  }
  return CandidateKind::kRelayed;  // unknown: leave it to libnice
}

// "ip:port" ("[ip]:port" for IPv6) through the shared conversions.
std::string address_text(const NiceAddress& address) {
  sockaddr_storage storage{};
  nice_address_copy_to_sockaddr(&address, reinterpret_cast<sockaddr*>(&storage));
  return net::to_transport_address(storage).to_string();
}

// The host's addresses that make useful host candidates. IPv6 link-local addresses are
// left out (RFC 8445 section 5.1.1.1 leaves them to the application): a candidate
// carries no scope id, so the remote side cannot tell which of its links fe80::x is on,
// and on a LAN the IPv4 or global IPv6 host candidate reaches the same machine.
std::vector<std::string> candidate_host_addresses() {
  std::vector<std::string> out;
  GList* ips = nice_interfaces_get_local_ips(FALSE);
  for (GList* i = ips; i != nullptr; i = i->next) {
    const std::string ip = static_cast<const char*>(i->data);
    in6_addr v6{};
    const std::string bare = ip.substr(0, ip.find('%'));  // "fe80::1%eth0"
    if (inet_pton(AF_INET6, bare.c_str(), &v6) == 1 && IN6_IS_ADDR_LINKLOCAL(&v6)) continue;
    out.push_back(ip);
  }
  g_list_free_full(ips, g_free);
  return out;
}

bool is_mapped_foundation(const char* foundation) {
  return std::strncmp(foundation, kMappedFoundation, sizeof kMappedFoundation - 1) == 0;
}

}  // namespace

std::string SelectedPath::describe() const {
  // A path a hard-NAT punch found (peer/punch/) rather than a candidate pair.
  if (local_type == "punched")
    return "direct " + transport + " punched " + local_address + " <-> " + remote_address;
  if (relayed) return "relayed " + transport + " " + local_type + " " + local_address +
                      " <-> " + remote_type + " " + remote_address;
  return "direct " + transport + " " + local_type + " " + local_address + " <-> " +
         remote_type + " " + remote_address;
}

std::string SelectedPath::family() const {
  // address_text() writes IPv6 as "[ip]:port".
  return !local_address.empty() && local_address.front() == '[' ? "ipv6" : "ipv4";
}

IceSession::IceSession(const Options& options, Callbacks callbacks)
    : options_(options), callbacks_(std::move(callbacks)) {
  // Regular nomination: with aggressive nomination libnice ignores remote ICE-TCP
  // candidates that trickle in after checks started ("conncheck has started already
  // in aggressive mode"), which lost the only working pair when UDP is blocked.
  agent_.reset(nice_agent_new_full(
      g_main_context_default(), NICE_COMPATIBILITY_RFC5245,
      static_cast<NiceAgentOption>(NICE_AGENT_OPTION_ICE_TRICKLE |
                                   NICE_AGENT_OPTION_REGULAR_NOMINATION)));
  // Every default that matters is set explicitly: Debian's libnice has UPnP on.
  g_object_set(agent_.get(), "controlling-mode", options_.controlling ? TRUE : FALSE, "upnp", FALSE,
               "ice-udp", options_.udp ? TRUE : FALSE, "ice-tcp", options_.tcp ? TRUE : FALSE,
               nullptr);
  // An empty list (a host with only link-local addresses) leaves the choice to libnice.
  const std::vector<std::string> local_addresses = options_.local_addresses.empty()
                                                       ? candidate_host_addresses()
                                                       : options_.local_addresses;
  for (const auto& ip : local_addresses) {
    NiceAddress address;
    nice_address_init(&address);
    if (nice_address_set_from_string(&address, ip.c_str()))
      nice_agent_add_local_address(agent_.get(), &address);
  }
  if (options_.force_relay) g_object_set(agent_.get(), "force-relay", TRUE, nullptr);
  stream_id_ = nice_agent_add_stream(agent_.get(), 1);
  nice_agent_set_stream_name(agent_.get(), stream_id_, "application");
  const bool bridge_udp_turn = !turn_udp_bridge_turned_off();
  std::string stun_ip = options_.stun_server.ip;
  uint16_t stun_port = options_.stun_server.port;
  for (const auto& turn : options_.turn_servers) {
    std::string ip = turn.ip;
    uint16_t port = turn.port;
    const auto server = socket_address_of(turn.ip, turn.port);
    const auto host = server ? only_host_address(local_addresses, server->ss_family)
                             : std::nullopt;
    if (!turn.tcp && bridge_udp_turn && host) {
      auto bridge = TurnUdpBridge::open(*server, *host, [](const sockaddr_storage& bound) {
        return find_socket_bound_to(SOCK_DGRAM, bound);
      });
      if (bridge) {
        bridge->set_on_tunnel_datagram([this](std::span<const std::byte> datagram) {
          if (callbacks_.on_datagram) callbacks_.on_datagram(datagram);
        });
        ip = bridge->address_ip();
        port = bridge->address_port();
        // The relay's STUN port is its TURN port: through the bridge too, or its
        // answers to libnice's socket would land on the bridge's twin of it.
        if (stun_ip == turn.ip && stun_port == turn.port) {
          stun_ip = ip;
          stun_port = port;
        }
        udp_bridges_.push_back(std::move(bridge));
      }
    }
    nice_agent_set_relay_info(agent_.get(), stream_id_, kComponent, ip.c_str(), port,
                              turn.username.c_str(), turn.password.c_str(),
                              turn.tcp ? NICE_RELAY_TYPE_TURN_TCP : NICE_RELAY_TYPE_TURN_UDP);
  }
  if (!stun_ip.empty())
    g_object_set(agent_.get(), "stun-server", stun_ip.c_str(), "stun-server-port",
                 static_cast<guint>(stun_port), nullptr);
  // Attach the receive callback before gathering, or checks never complete.
  nice_agent_attach_recv(agent_.get(), stream_id_, kComponent, g_main_context_default(),
                         on_recv_trampoline, this);
  signal_handlers_ = {
      g_signal_connect(agent_.get(), "new-candidate-full", G_CALLBACK(on_new_candidate_trampoline),
                       this),
      g_signal_connect(agent_.get(), "candidate-gathering-done",
                       G_CALLBACK(on_gathering_done_trampoline), this),
      g_signal_connect(agent_.get(), "component-state-changed",
                       G_CALLBACK(on_state_changed_trampoline), this),
      g_signal_connect(agent_.get(), "new-selected-pair-full",
                       G_CALLBACK(on_selected_pair_trampoline), this),
      g_signal_connect(agent_.get(), "reliable-transport-writable",
                       G_CALLBACK(on_writable_trampoline), this),
  };
}

IceSession::~IceSession() {
  receiver_.reset();
  drop_own_sends();
  for (gulong handler : signal_handlers_) g_signal_handler_disconnect(agent_.get(), handler);
  nice_agent_attach_recv(agent_.get(), stream_id_, kComponent, g_main_context_default(), nullptr,
                         nullptr);
  nice_agent_remove_stream(agent_.get(), stream_id_);
  // Closing the agent asynchronously lets libnice free TURN allocations and sockets
  // cleanly; agent_ then drops our reference. Its Refresh with lifetime 0 (RFC 8656
  // section 7) goes through our bridges, which live until it is done.
  if (udp_bridges_.empty()) {
    nice_agent_close_async(agent_.get(), nullptr, nullptr);
    return;
  }
  auto* bridges = new std::vector<std::unique_ptr<TurnUdpBridge>>(std::move(udp_bridges_));
  for (auto& bridge : *bridges) bridge->set_on_tunnel_datagram({});
  nice_agent_close_async(
      agent_.get(),
      [](GObject*, GAsyncResult*, gpointer data) {
        delete static_cast<std::vector<std::unique_ptr<TurnUdpBridge>>*>(data);
      },
      bridges);
}

std::pair<std::string, std::string> IceSession::local_credentials() const {
  gchar* raw_ufrag = nullptr;
  gchar* raw_pwd = nullptr;
  nice_agent_get_local_credentials(agent_.get(), stream_id_, &raw_ufrag, &raw_pwd);
  GCharPtr ufrag(raw_ufrag), pwd(raw_pwd);
  return {ufrag ? ufrag.get() : "", pwd ? pwd.get() : ""};
}

void IceSession::start_gathering() {
  if (!nice_agent_gather_candidates(agent_.get(), stream_id_)) {
    failed_ = true;
    if (callbacks_.on_failed) callbacks_.on_failed("cannot gather ICE candidates");
    return;
  }
  request_port_mapping();
}

void IceSession::request_port_mapping() {
  portmap::PortMapper* mapper = options_.port_mapper;
  if (!mapper || !options_.udp || options_.force_relay) return;
  // The host candidate on the interface toward the gateway: the one whose packets
  // the gateway forwards. libnice made the host candidates during gather_candidates.
  const std::string local = mapper->local_address();
  if (local.empty()) return;
  uint16_t port = 0;
  GSList* candidates = nice_agent_get_local_candidates(agent_.get(), stream_id_, kComponent);
  for (GSList* item = candidates; item; item = item->next) {
    const auto* candidate = static_cast<NiceCandidate*>(item->data);
    if (candidate->type != NICE_CANDIDATE_TYPE_HOST ||
        candidate->transport != NICE_CANDIDATE_TRANSPORT_UDP)
      continue;
    gchar ip[NICE_ADDRESS_STRING_LEN];
    nice_address_to_string(&candidate->addr, ip);
    if (local == ip) port = static_cast<uint16_t>(nice_address_get_port(&candidate->addr));
  }
  g_slist_free_full(candidates, reinterpret_cast<GDestroyNotify>(nice_candidate_free));
  if (port == 0) return;
  portmap::PortMapping::Callbacks callbacks;
  callbacks.on_mapped = [this](portmap::MapProtocol protocol, const std::string& ip,
                               uint16_t external_port) {
    log::info("port mapping: %s maps %s to %s:%u", std::string(to_string(protocol)).c_str(),
              mapped_internal_.c_str(), ip.c_str(), external_port);
    on_port_mapped(ip, external_port);
  };
  callbacks.on_failed = [this](const std::string& why) {
    log::debug("port mapping of %s: %s", mapped_internal_.c_str(), why.c_str());
    port_mapping_settled();
  };
  mapped_internal_ = local + ":" + std::to_string(port);
  mapping_ = mapper->map(local, port, std::move(callbacks));
  if (!mapping_) return;
  mapping_pending_ = true;
  mapping_wait_.reset(g_timeout_add(kMappingWaitMs, &IceSession::on_mapping_wait_over, this));
}

void IceSession::on_port_mapped(const std::string& external_ip, uint16_t external_port) {
  const std::string external = external_ip + ":" + std::to_string(external_port);
  if (mapped_candidate_sent_ || !mapping_pending_) {
    // A renewal that moved the mapping, or an answer after we stopped waiting: the
    // candidates are out; ICE keeps what it has.
    if (external != mapped_external_)
      log::debug("port mapping %s now %s; not offered", mapped_internal_.c_str(), external.c_str());
    return;
  }
  NiceCandidate* candidate = nice_candidate_new(NICE_CANDIDATE_TYPE_SERVER_REFLEXIVE);
  candidate->stream_id = stream_id_;
  candidate->component_id = kComponent;
  candidate->transport = NICE_CANDIDATE_TRANSPORT_UDP;
  const bool parsed = nice_address_set_from_string(&candidate->addr, external_ip.c_str());
  nice_address_set_port(&candidate->addr, external_port);
  const std::string internal_ip = mapped_internal_.substr(0, mapped_internal_.rfind(':'));
  nice_address_set_from_string(&candidate->base_addr, internal_ip.c_str());
  nice_address_set_port(&candidate->base_addr, mapping_ ? mapping_->internal_port() : 0);
  // RFC 8445 section 5.1.2.1 with the local preference at its maximum.
  candidate->priority = (kMappedTypePreference << 24) | (0xffffu << 8) | (256 - kComponent);
  g_strlcpy(candidate->foundation, kMappedFoundation, NICE_CANDIDATE_MAX_FOUNDATION);
  GCharPtr sdp(parsed ? nice_agent_generate_local_candidate_sdp(agent_.get(), candidate) : nullptr);
  nice_candidate_free(candidate);
  if (sdp && callbacks_.on_local_candidate) {
    mapped_candidate_sent_ = true;
    mapped_external_ = external;
    callbacks_.on_local_candidate(sdp.get());
  }
  port_mapping_settled();
}

void IceSession::port_mapping_settled() {
  if (!mapping_pending_) return;
  mapping_pending_ = false;
  mapping_wait_.reset();
  if (gathering_done_held_) {
    gathering_done_held_ = false;
    if (callbacks_.on_gathering_done) callbacks_.on_gathering_done();
  }
}

gboolean IceSession::on_mapping_wait_over(gpointer self) {
  auto* session = static_cast<IceSession*>(self);
  session->mapping_wait_.release();
  guard_callback("ice: port mapping wait", [session] {
    log::debug("port mapping of %s: no answer within %u ms; candidates end without it",
               session->mapped_internal_.c_str(), kMappingWaitMs);
    session->port_mapping_settled();
  });
  return G_SOURCE_REMOVE;
}

void IceSession::set_remote_credentials(const std::string& ufrag, const std::string& pwd) {
  nice_agent_set_remote_credentials(agent_.get(), stream_id_, ufrag.c_str(), pwd.c_str());
}

bool IceSession::add_remote_candidate(const std::string& sdp) {
  NiceCandidate* candidate = nice_agent_parse_remote_candidate_sdp(agent_.get(), stream_id_,
                                                                   sdp.c_str());
  if (!candidate) return false;
  if (is_mapped_foundation(candidate->foundation))
    remote_mapped_.push_back(address_text(candidate->addr));
  GSList* list = g_slist_append(nullptr, candidate);
  int added = nice_agent_set_remote_candidates(agent_.get(), stream_id_, kComponent, list);
  g_slist_free_full(list, reinterpret_cast<GDestroyNotify>(nice_candidate_free));
  return added >= 0;
}

void IceSession::remote_gathering_done() {
  nice_agent_peer_candidate_gathering_done(agent_.get(), stream_id_);
}

bool IceSession::send(std::span<const std::byte> datagram) {
  if (failed_) return true;  // dropped; the owner is tearing down
  if (!selected_) {
    if (pending_.size() >= kMaxPendingDatagrams) pending_.pop_front();
    pending_.emplace_back(datagram.begin(), datagram.end());
    return true;
  }
  if (!cork_fds_.empty()) {
    if (corked_blocked_) return false;  // on_writable_trampoline says when not
    queued_.insert(queued_.end(), datagram.begin(), datagram.end());
    queued_sizes_.push_back(static_cast<uint16_t>(datagram.size()));
    if (queued_sizes_.size() >= kMaxQueuedDatagrams) flush_sends();
    return true;
  }
  if (!send_fd_) return send_now(datagram);
  if (writable_source_) return false;  // the socket is full: on_writable says when not
  const size_t before = queued_.size();
  if (framer_)
    framer_->append(datagram, queued_);
  else
    queued_.insert(queued_.end(), datagram.begin(), datagram.end());
  queued_sizes_.push_back(static_cast<uint16_t>(queued_.size() - before));
  if (queued_sizes_.size() >= kMaxQueuedDatagrams) flush_sends();
  return true;
}

void IceSession::flush_corked() {
  if (corked_blocked_ || queued_next_ >= queued_sizes_.size()) return;
  // Scratch kept between flushes: no allocation per batch once they have grown.
  std::vector<GOutputVector>& vectors = cork_vectors_;
  std::vector<NiceOutputMessage>& messages = cork_messages_;
  vectors.clear();
  messages.clear();
  vectors.reserve(queued_sizes_.size() - queued_next_);
  size_t offset = queued_next_offset_;
  for (size_t i = queued_next_; i < queued_sizes_.size(); ++i) {
    vectors.push_back({queued_.data() + offset, queued_sizes_[i]});
    offset += queued_sizes_[i];
  }
  for (auto& vector : vectors) messages.push_back({&vector, 1});
  // TCP_CORK holds partial segments until it is lifted (tcp(7)): libnice writes each
  // datagram with its own send, and with TCP_NODELAY each would be a segment of its
  // own, each costing a pass through the TCP transmit path. One datagram (a lone ACK,
  // the receiving side's usual batch) is one send and one segment either way: corking
  // it would only add three system calls.
  // The descriptors are libnice's: one that no longer leads to the TURN server is
  // left alone (closed, or reused for something else).
  const int on = 1, off = 0;
  std::vector<int>& corked = corked_fds_;
  corked.clear();
  if (messages.size() > 1) {
    for (int fd : cork_fds_)
      if (connected_to(fd, cork_peer_) &&
          setsockopt(fd, IPPROTO_TCP, TCP_CORK, &on, sizeof on) == 0)
        corked.push_back(fd);
  }
  // libnice stops at the first message it could not send, would-block or error alike:
  // go on from there until it says which.
  size_t done = 0;
  bool blocked = false;
  while (done < messages.size()) {
    GError* raw_error = nullptr;
    const gint sent = nice_agent_send_messages_nonblocking(
        agent_.get(), stream_id_, kComponent, messages.data() + done, messages.size() - done,
        nullptr, &raw_error);
    GErrorPtr error(raw_error);
    if (sent > 0) {
      done += static_cast<size_t>(sent);
      continue;
    }
    blocked = error && g_error_matches(error.get(), G_IO_ERROR, G_IO_ERROR_WOULD_BLOCK);
    // Any other error drops the rest, as send_now does; QUIC retransmits.
    if (!blocked && error) log::debug("ice send failed: %s", error->message);
    break;
  }
  for (int fd : corked) setsockopt(fd, IPPROTO_TCP, TCP_CORK, &off, sizeof off);
  if (blocked) {
    // Full: the rest waits for reliable-transport-writable.
    corked_blocked_ = true;
    for (size_t i = 0; i < done; ++i) queued_next_offset_ += queued_sizes_[queued_next_ + i];
    queued_next_ += done;
    return;
  }
  queued_.clear();
  queued_sizes_.clear();
  queued_next_ = 0;
  queued_next_offset_ = 0;
}

void IceSession::flush_sends() {
  if (!cork_fds_.empty()) {
    flush_corked();
    return;
  }
  if (!send_fd_ || writable_source_) return;
  const int fd = send_fd_->get();
  while (queued_next_ < queued_sizes_.size()) {
    // A run of equal sizes (the last one may be shorter) goes out in one call.
    const size_t first = queued_next_;
    const size_t segment = queued_sizes_[first];
    size_t count = 1, bytes = segment;
    while (gso_works_ && first + count < queued_sizes_.size() && count < kMaxSegments) {
      const size_t next = queued_sizes_[first + count];
      if (next > segment || bytes + next > kMaxGsoBytes) break;
      ++count;
      bytes += next;
      if (next < segment) break;
    }
    iovec iov{queued_.data() + queued_next_offset_, bytes};
    msghdr message{};
    message.msg_name = &send_to_;
    message.msg_namelen = send_to_length_;
    message.msg_iov = &iov;
    message.msg_iovlen = 1;
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(uint16_t))] = {};
    if (count > 1) {
      message.msg_control = control;
      message.msg_controllen = sizeof control;
      cmsghdr* header = CMSG_FIRSTHDR(&message);
      header->cmsg_level = SOL_UDP;
      header->cmsg_type = UDP_SEGMENT;
      header->cmsg_len = CMSG_LEN(sizeof(uint16_t));
      const uint16_t size = static_cast<uint16_t>(segment);
      std::memcpy(CMSG_DATA(header), &size, sizeof size);
    }
    if (sendmsg(fd, &message, MSG_DONTWAIT) < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOBUFS) {
        // Full: the rest waits for the socket, and QUIC for on_writable.
        writable_source_.reset(g_unix_fd_source_new(fd, G_IO_OUT));
        g_source_set_callback(writable_source_.get(), G_SOURCE_FUNC(on_send_writable), this,
                              nullptr);
        g_source_attach(writable_source_.get(), nullptr);
        return;
      }
      if (count > 1 && (errno == EIO || errno == EINVAL || errno == ENOPROTOOPT)) {
        // No UDP GSO here (or not on this device): one datagram per call from now on.
        log::debug("ice: UDP_SEGMENT refused (%s); sending datagrams one by one",
                   g_strerror(errno));
        gso_works_ = false;
        continue;
      }
      // A route gone, say: drop this run, as libnice would; QUIC retransmits.
      log::debug("ice send failed: %s", g_strerror(errno));
    }
    queued_next_ += count;
    queued_next_offset_ += bytes;
  }
  queued_.clear();
  queued_sizes_.clear();
  queued_next_ = 0;
  queued_next_offset_ = 0;
}

gboolean IceSession::on_send_writable(gint, GIOCondition, gpointer self) {
  auto* session = static_cast<IceSession*>(self);
  // Destroying the source from its own callback is safe: GLib holds a reference
  // while it dispatches.
  session->writable_source_.reset();
  return guard_callback("ice: writable", G_SOURCE_REMOVE, [session] {
    session->flush_sends();
    if (!session->writable_source_ && session->callbacks_.on_writable)
      session->callbacks_.on_writable();
    return G_SOURCE_REMOVE;
  });
}

void IceSession::use_own_sends(NiceCandidate* local, NiceCandidate* remote, bool live) {
  drop_own_sends();
  // A TCP pair needs RFC 4571 framing on libnice's stream: libnice sends there.
  if (local->transport != NICE_CANDIDATE_TRANSPORT_UDP) return;
  int fd = -1;
  sockaddr_storage to{};
  if (local->type == NICE_CANDIDATE_TYPE_RELAYED) {
    // Our relayed candidate: Send indications (send_indication.h) to its TURN server,
    // from the base socket libnice allocated on. libnice's connectivity checks to
    // this remote candidate installed the permission they need (RFC 8656 section 9)
    // and its timers keep it.
    if (!live) return;
    const sockaddr_storage libnice_server = relay_server_of(local);
    auto server = udp_turn_server_of(libnice_server);
    if (!server) {
      // TURN over TCP (to a TurnBridge on loopback, relay_links.cpp): libnice frames,
      // we batch (flush_corked) on its connection to the server, when we can tell
      // which one that is. libnice may hold more than one connection to it (a relayed
      // candidate per host base) and shows none of them: cork them all; one that
      // carries nothing in the meantime is left as it was.
      cork_fds_ = find_streams_to(libnice_server);
      cork_peer_ = libnice_server;
      if (!cork_fds_.empty())
        log::debug("ice: relayed sends over TURN-over-TCP in corked batches");
      return;
    }
    sockaddr_storage base{};
    nice_address_copy_to_sockaddr(&local->base_addr, reinterpret_cast<sockaddr*>(&base));
    // Through a bridge, from its upstream twin of the base: the same address and port
    // unless the twin could not be made.
    const TurnUdpBridge* bridge = bridge_at(libnice_server);
    fd = bridge ? bridge->upstream_fd_for(base) : -1;
    if (fd < 0) fd = find_socket_bound_to(SOCK_DGRAM, base);
    if (fd < 0) return;
    sockaddr_storage peer{};
    nice_address_copy_to_sockaddr(&remote->addr, reinterpret_cast<sockaddr*>(&peer));
    const auto peer_address = net::to_transport_address(peer);
    if (peer_address.port == 0) return;
    stun::TransactionId first{};
    RAND_bytes(reinterpret_cast<unsigned char*>(first.data()), static_cast<int>(first.size()));
    framer_.emplace(peer_address, first);
    to = *server;
  } else {
    GObjectPtr<GSocket> socket(
        nice_agent_get_selected_socket(agent_.get(), stream_id_, kComponent));
    if (!socket) return;
    fd = g_socket_get_fd(socket.get());
    nice_address_copy_to_sockaddr(&remote->addr, reinterpret_cast<sockaddr*>(&to));
  }
  const socklen_t length = net::sockaddr_length(to);
  const int copy = length == 0 ? -1 : fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (copy < 0) {
    framer_.reset();
    return;
  }
  send_fd_.emplace(copy);
  send_to_ = to;
  send_to_length_ = length;
  if (framer_)
    log::debug("ice: relayed sends as TURN Send indications to %s",
               net::to_transport_address(to).to_string().c_str());
}

void IceSession::use_connected_receive(NiceCandidate* local, NiceCandidate* remote) {
  // The pair changed: datagrams from the old remote go back to libnice at once.
  receiver_.reset();
  const PairShape shape{local->transport == NICE_CANDIDATE_TRANSPORT_UDP,
                        candidate_kind(local->type), candidate_kind(remote->type)};
  if (!receives_on_connected_socket(shape)) return;
  // The base socket of our host, server- or peer-reflexive candidate.
  GObjectPtr<GSocket> socket(nice_agent_get_selected_socket(agent_.get(), stream_id_, kComponent));
  if (!socket) return;
  sockaddr_storage to{};
  nice_address_copy_to_sockaddr(&remote->addr, reinterpret_cast<sockaddr*>(&to));
  auto [ufrag, password] = local_credentials();
  receiver_ = ConnectedReceiver::open(
      g_socket_get_fd(socket.get()), to, CheckResponder(std::move(ufrag), std::move(password)),
      [this](std::span<const std::byte> datagram) {
        if (callbacks_.on_datagram) callbacks_.on_datagram(datagram);
      });
}

const TurnUdpBridge* IceSession::bridge_at(const sockaddr_storage& address) const {
  for (const auto& bridge : udp_bridges_)
    if (net::same_address(bridge->address(), address)) return bridge.get();
  return nullptr;
}

std::optional<sockaddr_storage> IceSession::udp_turn_server_of(
    const sockaddr_storage& libnice_server) const {
  if (const TurnUdpBridge* bridge = bridge_at(libnice_server)) return bridge->server();
  for (const auto& turn : options_.turn_servers) {
    if (turn.tcp) continue;
    const auto configured = socket_address_of(turn.ip, turn.port);
    if (configured && net::same_address(*configured, libnice_server)) return configured;
  }
  return std::nullopt;
}

void IceSession::drop_own_sends() {
  flush_sends();  // what is queued still goes to the old pair
  writable_source_.reset();
  queued_.clear();
  queued_sizes_.clear();
  queued_next_ = 0;
  queued_next_offset_ = 0;
  send_fd_.reset();
  framer_.reset();
  cork_fds_.clear();
  corked_blocked_ = false;
}

bool IceSession::send_now(std::span<const std::byte> datagram) {
  GOutputVector vector{datagram.data(), datagram.size()};
  NiceOutputMessage message{&vector, 1};
  GError* raw_error = nullptr;
  gint sent = nice_agent_send_messages_nonblocking(agent_.get(), stream_id_, kComponent,
                                                   &message, 1, nullptr, &raw_error);
  GErrorPtr error(raw_error);
  if (sent >= 1) return true;
  if (error && g_error_matches(error.get(), G_IO_ERROR, G_IO_ERROR_WOULD_BLOCK)) return false;
  // Any other error (a route gone, a closed TCP pair): drop it; QUIC retransmits, and
  // ICE reports a failed component if the path is really dead.
  if (error) log::debug("ice send failed: %s", error->message);
  return true;
}

void IceSession::on_recv_trampoline(NiceAgent*, guint, guint, guint length, gchar* data,
                                    gpointer self) {
  auto* session = static_cast<IceSession*>(self);
  guard_callback("ice: receive", [&] {
    if (session->callbacks_.on_datagram)
      session->callbacks_.on_datagram(
          std::span(reinterpret_cast<const std::byte*>(data), length));
  });
}

void IceSession::on_new_candidate_trampoline(NiceAgent* agent, NiceCandidate* candidate,
                                             gpointer self) {
  auto* session = static_cast<IceSession*>(self);
  if (candidate->stream_id != session->stream_id_) return;
  GCharPtr sdp(nice_agent_generate_local_candidate_sdp(agent, candidate));
  guard_callback("ice: new candidate", [&] {
    if (sdp && session->callbacks_.on_local_candidate)
      session->callbacks_.on_local_candidate(sdp.get());
  });
}

void IceSession::on_gathering_done_trampoline(NiceAgent*, guint stream, gpointer self) {
  auto* session = static_cast<IceSession*>(self);
  guard_callback("ice: gathering done", [&] {
    if (stream != session->stream_id_) return;
    if (session->mapping_pending_) {
      session->gathering_done_held_ = true;  // port_mapping_settled() says it
      return;
    }
    if (session->callbacks_.on_gathering_done) session->callbacks_.on_gathering_done();
  });
}

void IceSession::on_state_changed_trampoline(NiceAgent*, guint stream, guint, guint state,
                                             gpointer self) {
  auto* session = static_cast<IceSession*>(self);
  if (stream != session->stream_id_) return;
  log::debug("ice state: %s", nice_component_state_to_string(static_cast<NiceComponentState>(state)));
  if (state == NICE_COMPONENT_STATE_FAILED && !session->failed_) {
    session->failed_ = true;
    session->receiver_.reset();  // the path is dead; what still comes is libnice's
    guard_callback("ice: failed", [&] {
      if (session->callbacks_.on_failed)
        session->callbacks_.on_failed("ICE failed: no candidate pair works");
    });
  }
}

void IceSession::on_selected_pair_trampoline(NiceAgent*, guint stream, guint,
                                             NiceCandidate* local, NiceCandidate* remote,
                                             gpointer self) {
  auto* session = static_cast<IceSession*>(self);
  if (stream != session->stream_id_) return;
  guard_callback("ice: selected pair", [&] { session->handle_selected_pair(local, remote); });
}

void IceSession::on_writable_trampoline(NiceAgent*, guint stream, guint, gpointer self) {
  auto* session = static_cast<IceSession*>(self);
  if (stream != session->stream_id_) return;
  guard_callback("ice: writable", [&] {
    if (session->corked_blocked_) {
      session->corked_blocked_ = false;
      session->flush_corked();
      if (session->corked_blocked_) return;
    }
    while (!session->pending_.empty()) {
      if (!session->send_now(session->pending_.front())) return;
      session->pending_.pop_front();
    }
    if (session->callbacks_.on_writable) session->callbacks_.on_writable();
  });
}

void IceSession::handle_selected_pair(NiceCandidate* local, NiceCandidate* remote) {
  SelectedPath path;
  path.relayed = local->type == NICE_CANDIDATE_TYPE_RELAYED ||
                 remote->type == NICE_CANDIDATE_TYPE_RELAYED;
  path.transport = local->transport == NICE_CANDIDATE_TRANSPORT_UDP ? "udp" : "tcp";
  path.local_type = candidate_type_name(local->type);
  path.remote_type = candidate_type_name(remote->type);
  path.local_address = address_text(local->addr);
  NiceCandidate* live_local = nullptr;
  NiceCandidate* live_remote = nullptr;
  // The signal hands us copies, and libnice 0.1.21's copies drop the TURN server
  // (nice_candidate_relay_address would crash on them): ask for the agent's own.
  if (local->type == NICE_CANDIDATE_TYPE_RELAYED &&
      nice_agent_get_selected_pair(agent_.get(), stream_id_, kComponent, &live_local, &live_remote) &&
      live_local && live_local->type == NICE_CANDIDATE_TYPE_RELAYED) {
    const sockaddr_storage server = relay_server_of(live_local);
    const TurnUdpBridge* bridge = bridge_at(server);
    // Bracketed for IPv6, as RelayLinks' labels are keyed.
    path.local_relay_server =
        net::to_transport_address(bridge ? bridge->server() : server).to_string();
  }
  path.remote_address = address_text(remote->addr);
  if (std::find(remote_mapped_.begin(), remote_mapped_.end(), path.remote_address) !=
      remote_mapped_.end())
    path.remote_type = "mapped";
  // Our host candidate seen from outside through our gateway's mapping: as the host
  // candidate (a host candidate on the other side is on our LAN and reaches it
  // directly), or as the peer-reflexive one the other side's checks told us of.
  const bool through_mapping =
      (local->type == NICE_CANDIDATE_TYPE_HOST && remote->type != NICE_CANDIDATE_TYPE_HOST &&
       path.local_address == mapped_internal_) ||
      (local->type == NICE_CANDIDATE_TYPE_PEER_REFLEXIVE && path.local_address == mapped_external_);
  if (!mapped_external_.empty() && through_mapping) {
    path.local_type = "mapped";
    path.local_address = mapped_external_;
  }
  const bool first = !selected_;
  selected_ = true;
  tune_socket_buffers(local);
  const bool live = live_local && live_remote;
  use_own_sends(live ? live_local : local, live ? live_remote : remote, live);
  use_connected_receive(local, remote);
  if (callbacks_.on_selected_pair) callbacks_.on_selected_pair(path);
  if (first) {
    // The controlled side may have queued QUIC datagrams before it had a pair.
    while (!pending_.empty()) {
      if (!send_now(pending_.front())) break;
      pending_.pop_front();
    }
  }
}

void IceSession::tune_socket_buffers(const NiceCandidate* local) {
  // NULL for TCP pairs (NOTES-transport.md); then the kernel's TCP autotuning applies.
  // NULL for relayed pairs too: then the TURN traffic runs over the relayed candidate's
  // base, a host UDP socket of this agent that libnice does not hand out.
  if (GObjectPtr<GSocket> socket{
          nice_agent_get_selected_socket(agent_.get(), stream_id_, kComponent)}) {
    raise_socket_buffers(g_socket_get_fd(socket.get()), kTunnelSocketBufferBytes);
    return;
  }
  if (local->type != NICE_CANDIDATE_TYPE_RELAYED) return;
  sockaddr_storage base{};
  nice_address_copy_to_sockaddr(&local->base_addr, reinterpret_cast<sockaddr*>(&base));
  if (int fd = find_socket_bound_to(SOCK_DGRAM, base); fd >= 0) {
    raise_socket_buffers(fd, kTunnelSocketBufferBytes);
  } else if (int tcp = find_socket_bound_to(SOCK_STREAM, base); tcp >= 0) {
    // TURN over TCP (libnice's own connection, or to our TLS/proxy bridge on loopback,
    // whose upstream is set up in TurnBridge): the whole tunnel in one TCP flow.
    prefer_bbr(tcp);
  }
}

}  // namespace natfwd

