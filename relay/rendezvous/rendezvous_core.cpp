#include "rendezvous/rendezvous_core.h"

#include <arpa/inet.h>

#include <algorithm>
#include <cctype>
#include <cinttypes>
#include <ctime>
#include <stdexcept>

#include <openssl/rand.h>

#include "admission/connection_budget.h"
#include "frame.h"
#include "identity.h"
#include "log.h"
#include "turn/credentials.h"

namespace natfwd::relay {
namespace {

// Public keys are raw Ed25519 keys (proto/identity.h).
constexpr size_t kPublicKeySize = 32;
// Longest name: one leading character plus 62 more.
constexpr size_t kMaxNameLength = 63;
// A published target's host: a DNS name is at most 253 characters (RFC 1035 2.3.4).
constexpr size_t kMaxHostLength = 253;
// Services one peer may publish at once (one http, one tls, the rest tcp).
constexpr int kMaxPublishes = 16;
// Ranges in one publish's allow-from: a home user's few networks, bounded so a peer
// cannot make the front door test thousands per visitor.
constexpr int kMaxAllowFrom = 32;
// ICE ufrag and pwd are at most 256 characters (RFC 8839 section 5.4); candidate
// lines are about a hundred. Bounds keep relayed messages far below the frame limit.
constexpr size_t kMaxIceFieldLength = 256;
constexpr size_t kMaxCandidateLength = 4096;
// Welcome.challenge: fresh random bytes per connection, signed in Register.
constexpr size_t kChallengeSize = 32;
// Custom domains one Register may claim: a home's few names, each two DNS look-ups.
constexpr size_t kMaxCustomDomains = 4;
// Rate limit buckets refill over this period; full buckets are swept this often.
constexpr std::chrono::seconds kRatePeriod{60};
constexpr std::chrono::seconds kNewNamePeriod{3600};

std::string random_challenge() {
  std::string challenge(kChallengeSize, '\0');
  if (RAND_bytes(reinterpret_cast<unsigned char*>(challenge.data()), kChallengeSize) != 1)
    throw std::runtime_error("no random bytes for a rendezvous challenge");
  return challenge;
}

PublicKey to_public_key(const std::string& raw_key) {
  PublicKey key{};
  public_key_from_bytes(std::span(reinterpret_cast<const uint8_t*>(raw_key.data()),
                                  raw_key.size()),
                        key);
  return key;
}

std::string short_key_id(const std::string& raw_key) {
  PublicKey key{};
  if (!public_key_from_bytes(std::span(reinterpret_cast<const uint8_t*>(raw_key.data()),
                                       raw_key.size()),
                             key))
    return "?";
  return key_id(key).substr(0, 12);
}

bool ice_params_ok(const wire::IceParams& ice) {
  return ice.ufrag().size() <= kMaxIceFieldLength && ice.pwd().size() <= kMaxIceFieldLength;
}

}  // namespace

bool is_valid_peer_name(std::string_view name) {
  if (name.empty() || name.size() > kMaxNameLength) return false;
  auto lower_or_digit = [](char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); };
  if (!lower_or_digit(name[0])) return false;
  return std::all_of(name.begin() + 1, name.end(), [&](char c) {
    return lower_or_digit(c) || c == '.' || c == '_' || c == '-';
  });
}

RendezvousCore::RendezvousCore(RendezvousConfig config, std::unique_ptr<NameBindingPolicy> names)
    : config_(config), names_policy_(std::move(names)) {}

Admission RendezvousCore::on_connection_opened(ConnectionId id, const HostPort& remote,
                                               TimePoint now) {
  if (connections_.size() >= config_.max_connections) return Admission::kTooManyConnections;
  size_t& from_address = connections_per_address_[remote.host];
  if (from_address >= config_.max_connections_per_address) return Admission::kTooManyFromAddress;
  ++from_address;
  Connection& connection = connections_[id];
  connection.remote = remote;
  set_deadline(id, connection, now + config_.hello_timeout);
  log::debug("connection %" PRIu64 " from %s", id, remote.to_string().c_str());
  return Admission::kAccepted;
}

void RendezvousCore::on_envelope(ConnectionId id, const wire::Envelope& envelope, TimePoint now) {
  auto it = connections_.find(id);
  if (it == connections_.end()) return;  // closed while the message was in flight
  Connection& connection = it->second;

  if (!connection.hello_done) {
    if (envelope.msg_case() != wire::Envelope::kHello) {
      fail(id, wire::Error::NOT_HELLO, "the first message must be Hello");
      return;
    }
    handle_hello(id, connection, envelope.hello());  // may forget the connection
    return;
  }
  if (!connection.proven) {
    if (envelope.msg_case() != wire::Envelope::kProve) {
      fail(id, wire::Error::NOT_PROVEN,
           "prove the Hello key (Prove after Challenge) before anything else");
      return;
    }
    handle_prove(id, connection, envelope.prove(), now);  // may forget the connection
    return;
  }

  // Any message is a sign of life.
  set_deadline(id, connection, now + config_.idle_timeout);
  switch (envelope.msg_case()) {
    case wire::Envelope::kRegister:
      handle_register(id, connection, envelope.register_(), now);
      break;
    case wire::Envelope::kOpenSession:
      handle_open_session(id, connection, envelope.open_session(), now);
      break;
    case wire::Envelope::kAcceptSession:
      handle_accept_session(id, envelope.accept_session());
      break;
    case wire::Envelope::kCandidate:
      handle_candidate(id, envelope.candidate());
      break;
    case wire::Envelope::kCloseSession:
      handle_close_session(id, envelope.close_session());
      break;
    case wire::Envelope::kNetcheckQuery:
      handle_netcheck_query(id, connection, envelope.netcheck_query(), now);
      break;
    case wire::Envelope::kHandOver:
      handle_hand_over(id, connection, envelope.hand_over());
      break;
    case wire::Envelope::kNetcheckReply:
      handle_netcheck_reply(id, envelope.netcheck_reply());
      break;
    case wire::Envelope::kPing: {
      wire::Envelope reply;
      reply.mutable_pong()->set_nonce(envelope.ping().nonce());
      send(id, std::move(reply));
      break;
    }
    case wire::Envelope::kPong:
      break;  // activity only
    case wire::Envelope::kError:
      // The peer gives up on us; no point in answering.
      log::info("%s sent error %d: %.200s", describe(id).c_str(),
                static_cast<int>(envelope.error().code()), envelope.error().detail().c_str());
      close(id, "peer sent an error");
      break;
    case wire::Envelope::kHello:
      fail(id, wire::Error::BAD_MESSAGE, "Hello sent twice");
      break;
    case wire::Envelope::kProve:
      fail(id, wire::Error::BAD_MESSAGE, "Prove sent twice");
      break;
    case wire::Envelope::kChallenge:
    case wire::Envelope::kWelcome:
    case wire::Envelope::kRegistered:
    case wire::Envelope::kIncomingSession:
    case wire::Envelope::kIceServersUpdate:
    case wire::Envelope::kHandedOver:
      fail(id, wire::Error::BAD_MESSAGE, "message only the relay may send");
      break;
    case wire::Envelope::MSG_NOT_SET:
    default:
      fail(id, wire::Error::BAD_MESSAGE, "unknown message");
      break;
  }
}

void RendezvousCore::handle_hello(ConnectionId id, Connection& connection,
                                  const wire::Hello& hello) {
  if (hello.protocol_version() != wire::kProtocolVersion) {
    const bool peer_older = hello.protocol_version() < wire::kProtocolVersion;
    fail(id, wire::Error::VERSION,
         "this relay speaks rendezvous protocol " + std::to_string(wire::kProtocolVersion) +
             " and the peer " + std::to_string(hello.protocol_version()) + ": upgrade the " +
             (peer_older ? "peer" : "relay"));
    return;
  }
  if (hello.public_key().size() != kPublicKeySize) {
    fail(id, wire::Error::BAD_MESSAGE, "public_key must be 32 bytes");
    return;
  }
  connection.hello_done = true;
  connection.public_key = hello.public_key();
  connection.challenge = config_.make_challenge ? config_.make_challenge() : random_challenge();
  // The Hello deadline runs on until the Prove: a claim of a key buys no time.
  log::debug("hello from %s key %s software '%.80s'", connection.remote.to_string().c_str(),
             short_key_id(connection.public_key).c_str(), hello.software().c_str());
  wire::Envelope reply;
  reply.mutable_challenge()->set_challenge(connection.challenge);
  send(id, std::move(reply));
}

void RendezvousCore::handle_prove(ConnectionId id, Connection& connection,
                                  const wire::Prove& prove, TimePoint now) {
  const PublicKey key = to_public_key(connection.public_key);
  if (!verify_signature(key, connection_proof_message(connection.challenge),
                        prove.signature())) {
    fail(id, wire::Error::BAD_SIGNATURE,
         "the connection proof does not verify with key " + key_id(key));
    return;
  }
  connection.proven = true;
  set_deadline(id, connection, now + config_.idle_timeout);

  wire::Envelope reply;
  auto* welcome = reply.mutable_welcome();
  welcome->set_observed_address(connection.remote.to_string());
  welcome->set_keepalive_seconds(static_cast<uint32_t>(config_.keepalive.count()));
  welcome->set_challenge(connection.challenge);
  add_ice_servers(connection, *welcome->mutable_ice_servers());
  schedule_refresh(id, connection, now);
  send(id, std::move(reply));
}

bool RendezvousCore::announces_turn() const {
  return !config_.turn.secret.empty() &&
         (config_.turn.own_turn || !config_.turn.external.empty());
}

void RendezvousCore::add_ice_servers(
    const Connection& connection, google::protobuf::RepeatedPtrField<wire::IceServer>& out) const {
  auto* stun = out.Add();
  stun->set_kind(wire::IceServer::STUN);
  stun->set_host("");  // the host the peer used to reach us
  stun->set_port(config_.stun_port);
  if (!announces_turn()) return;

  const TurnAnnouncement& turn = config_.turn;
  const uint64_t now_unix =
      turn.unix_now ? turn.unix_now() : static_cast<uint64_t>(std::time(nullptr));
  const uint64_t expires = now_unix + static_cast<uint64_t>(turn.credential_lifetime.count());
  const std::string username =
      turn::rest_username(expires, key_id(to_public_key(connection.public_key)));
  const std::string password = turn::rest_password(turn.secret, username);
  auto add = [&](wire::IceServer::Kind kind, const std::string& host, uint16_t port) {
    auto* server = out.Add();
    server->set_kind(kind);
    server->set_host(host);
    server->set_port(port);
    server->set_username(username);
    server->set_password(password);
    server->set_expires_unix(expires);
    return server;
  };
  if (turn.own_turn) {
    add(wire::IceServer::TURN_UDP, "", config_.stun_port);
    add(wire::IceServer::TURN_TCP, "", config_.stun_port);
    if (turn.tls_port != 0)
      add(wire::IceServer::TURN_TLS, "", turn.tls_port)->set_tls_spki_sha256(turn.tls_spki_sha256);
  }
  for (const HostPort& server : turn.external) {
    add(wire::IceServer::TURN_UDP, server.host, server.port);
    add(wire::IceServer::TURN_TCP, server.host, server.port);
  }
}

void RendezvousCore::schedule_refresh(ConnectionId id, Connection& connection, TimePoint now) {
  if (connection.refresh) refreshes_.erase({*connection.refresh, id});
  connection.refresh.reset();
  if (!announces_turn()) return;
  connection.refresh = now + config_.turn.refresh_interval;
  refreshes_.insert({*connection.refresh, id});
}

void RendezvousCore::handle_register(ConnectionId id, Connection& connection,
                                     const wire::Register& message, TimePoint now) {
  const std::string& name = message.name();
  // First, before any costly check: a flood of registrations from one address.
  if (!take_token(registration_buckets_, connection.remote.host,
                  config_.max_registrations_per_minute, now, kRatePeriod)) {
    count(&RelayStats::rate_limited_registrations);
    fail(id, wire::Error::RATE_LIMITED,
         "more than " + std::to_string(config_.max_registrations_per_minute) +
             " registrations per minute from " + connection.remote.host + "; retry later");
    return;
  }
  if (!is_valid_peer_name(name)) {
    fail(id, wire::Error::NAME_INVALID,
         "a name is 1-63 characters of a-z 0-9 . _ - and starts with a letter or digit");
    return;
  }
  // Possession of the Hello key: a signature over this connection's challenge and
  // the name, so that it is good for neither another connection nor another name.
  // The signature and the challenge are never logged.
  const PublicKey key = to_public_key(connection.public_key);
  if (!verify_signature(key, registration_message(connection.challenge, name),
                        message.signature())) {
    fail(id, wire::Error::BAD_SIGNATURE,
         "the signature for '" + name + "' does not verify with key " + key_id(key));
    return;
  }
  if (auto refusal = check_publish(id, connection, message)) {
    fail(id, refusal->first, refusal->second);
    return;
  }
  if (const std::vector<std::string> domains = custom_domains_of(message); !domains.empty()) {
    // The Registered waits for the DNS (on_domains_checked).
    connection.pending_register = message;
    request_domain_check(id, connection, domains, name);
    return;
  }
  connection.pending_register.reset();  // an earlier Register's look-up no longer counts
  connection.check_id = 0;
  complete_register(id, connection, message, now);
}

void RendezvousCore::complete_register(ConnectionId id, Connection& connection,
                                       const wire::Register& message, TimePoint now) {
  const std::string& name = message.name();
  const PublicKey key = to_public_key(connection.public_key);
  const std::optional<std::string> bound = names_policy_->bound_key(name);
  // The holder of the name handed it to this key (`peer handover`).
  const bool inherits = bound && *bound != connection.public_key &&
                        names_policy_->handed_over_to(name) == key_id(key);
  if (bound && *bound != connection.public_key && !inherits) {
    fail(id, wire::Error::NAME_TAKEN,
         "the name '" + name + "' is bound to another key (" + key_id(to_public_key(*bound)) +
             "); to give it to this key (" + key_id(key) + "), its holder runs `peer handover " +
             name + " " + key_id(key) + "` with the old state dir, or the relay's operator "
             "runs `relay names release " + name + "`; unused, it is free after the relay's "
             "--name-expiry");
    return;
  }
  if (auto holder = names_.find(name); holder != names_.end() && holder->second != id) {
    const ConnectionId old_id = holder->second;
    if (inherits) {
      log::info("'%s' handed over: %s takes it from %s", name.c_str(),
                connection.remote.to_string().c_str(), describe(old_id).c_str());
      fail(old_id, wire::Error::NAME_TAKEN,
           "'" + name + "' was handed over to key " + key_id(key) + ", which registered it");
    } else if (connections_.at(old_id).public_key != connection.public_key) {
      // Only when the policy does not bind names (the check above covers the rest).
      fail(id, wire::Error::NAME_TAKEN, "'" + name + "' is registered by another key");
      return;
    } else {
      // Same key from a new connection: the peer reconnected (e.g. after a network
      // change) and the old connection is a leftover.
      log::info("'%s' taken over by %s from %s", name.c_str(),
                connection.remote.to_string().c_str(), describe(old_id).c_str());
      fail(old_id, wire::Error::NAME_TAKEN, "replaced by a newer connection with the same key");
    }
  }
  if (inherits) {
    if (!names_policy_->bind(name, connection.public_key, connection.remote.host)) {
      fail(id, wire::Error::UNKNOWN, "the relay could not record the name; try again later");
      return;
    }
    log::info("'%s' handed over from key %s to key %s", name.c_str(),
              key_id(to_public_key(*bound)).c_str(), key_id(key).c_str());
  } else if (!bound) {
    if (!take_token(new_name_buckets_, source_group(connection.remote.host),
                    config_.max_new_names_per_hour, now, kNewNamePeriod)) {
      count(&RelayStats::rate_limited_new_names);
      fail(id, wire::Error::RATE_LIMITED,
           "more than " + std::to_string(config_.max_new_names_per_hour) +
               " new names per hour from " + connection.remote.host +
               "; register a name this key already holds, or retry later");
      return;
    }
    if (!names_policy_->bind(name, connection.public_key, connection.remote.host)) {
      fail(id, wire::Error::UNKNOWN, "the relay could not record the name; try again later");
      return;
    }
    log::info("bound '%s' to key %s", name.c_str(), key_id(key).c_str());
  } else {
    names_policy_->used(name);
  }
  if (!connection.name.empty() && connection.name != name) names_.erase(connection.name);
  connection.name = name;
  names_[name] = id;
  // check_publish saw the ports fit; a connection of the same key that held some was
  // replaced above, which freed them.
  const std::vector<uint16_t> ports = assign_tcp_ports(id, connection, message).value_or(
      std::vector<uint16_t>{});
  for (auto it = tcp_ports_.begin(); it != tcp_ports_.end();)
    it = it->second == id ? tcp_ports_.erase(it) : std::next(it);
  connection.publishes.assign(message.publish().begin(), message.publish().end());
  size_t next_port = 0;
  for (wire::Publish& publish : connection.publishes) {
    if (publish.kind() != wire::Publish::TCP) continue;
    publish.set_public_port(ports.at(next_port++));
    tcp_ports_[static_cast<uint16_t>(publish.public_port())] = id;
  }
  for (auto it = custom_domains_.begin(); it != custom_domains_.end();)
    it = it->second == id ? custom_domains_.erase(it) : std::next(it);
  const std::vector<std::string> domains = custom_domains_of(message);
  for (const std::string& domain : domains) custom_domains_[domain] = id;
  schedule_recheck(id, connection,
                   domains.empty() ? std::nullopt
                                   : std::optional<TimePoint>(now + config_.publish.claim_recheck));
  count(&RelayStats::registrations_total);
  log::info("registered '%s' for %s (key %s)%s", name.c_str(),
            connection.remote.to_string().c_str(), short_key_id(connection.public_key).c_str(),
            connection.publishes.empty() ? "" : ", publishing");

  wire::Envelope reply;
  reply.mutable_registered()->set_name(name);
  if (!connection.publishes.empty()) {
    reply.mutable_registered()->mutable_publish()->set_domain(config_.publish.domain);
    reply.mutable_registered()->mutable_publish()->set_relay_key(config_.publish.relay_key);
    for (const char* feature : kPublishFeatures)
      reply.mutable_registered()->mutable_publish()->add_features(feature);
    for (const wire::Publish& publish : connection.publishes)
      *reply.mutable_registered()->mutable_publish()->add_published() = publish;
  }
  send(id, std::move(reply));
}

std::optional<std::vector<uint16_t>> RendezvousCore::assign_tcp_ports(
    ConnectionId id, const Connection& connection, const wire::Register& message) const {
  const PublishConfig& config = config_.publish;
  auto is_free = [&](uint16_t port, const std::vector<uint16_t>& taken) {
    if (std::find(taken.begin(), taken.end(), port) != taken.end()) return false;
    auto holder = tcp_ports_.find(port);
    return holder == tcp_ports_.end() || holder->second == id ||
           connections_.at(holder->second).public_key == connection.public_key;
  };
  std::vector<uint16_t> ports;
  // Ports asked for first, so that "any" does not take one of them.
  for (const wire::Publish& publish : message.publish()) {
    if (publish.kind() != wire::Publish::TCP || publish.public_port() == 0) continue;
    const auto port = static_cast<uint16_t>(publish.public_port());
    if (port < config.tcp_port_min || port > config.tcp_port_max || !is_free(port, ports))
      return std::nullopt;
    ports.push_back(port);
  }
  std::vector<uint16_t> out;
  size_t next_asked = 0;
  for (const wire::Publish& publish : message.publish()) {
    if (publish.kind() != wire::Publish::TCP) continue;
    if (publish.public_port() != 0) {
      out.push_back(ports[next_asked++]);
      continue;
    }
    std::optional<uint16_t> found;
    for (uint32_t port = config.tcp_port_min; port <= config.tcp_port_max && !found; ++port) {
      std::vector<uint16_t> taken = ports;
      taken.insert(taken.end(), out.begin(), out.end());
      if (is_free(static_cast<uint16_t>(port), taken)) found = static_cast<uint16_t>(port);
    }
    if (!found) return std::nullopt;
    out.push_back(*found);
  }
  return out;
}

namespace {

// What the front door needs of a publish check_publish accepted.
PublishedService service_of(const wire::Publish& publish, const std::string& public_key) {
  PublishedService service{{publish.host(), static_cast<uint16_t>(publish.port())}, public_key,
                           publish.kind() != wire::Publish::HTTP && publish.proxy_protocol(),
                           {}, publish.kind() == wire::Publish::TLS && publish.tls_at_home()};
  for (const std::string& text : publish.allow_from())
    if (auto cidr = turn::parse_cidr(text)) service.allow_from.push_back(*cidr);
  return service;
}

// A visitor's numeric IP as the Cidr test takes it; IPv4-mapped IPv6 (a dual-stack
// listener's view of an IPv4 visitor) as IPv4.
std::optional<stun::TransportAddress> to_transport_address(const HostPort& visitor) {
  stun::TransportAddress address;
  address.port = visitor.port;
  if (inet_pton(AF_INET, visitor.host.c_str(), address.ip.data()) == 1) return address;
  if (inet_pton(AF_INET6, visitor.host.c_str(), address.ip.data()) != 1) return std::nullopt;
  static constexpr uint8_t kMapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  if (std::equal(kMapped, kMapped + 12, address.ip.begin())) {
    std::copy(address.ip.begin() + 12, address.ip.end(), address.ip.begin());
    std::fill(address.ip.begin() + 4, address.ip.end(), 0);
    return address;
  }
  address.family = stun::TransportAddress::Family::kIPv6;
  return address;
}

}  // namespace

bool PublishedService::admits(const HostPort& visitor) const {
  if (allow_from.empty()) return true;
  auto address = to_transport_address(visitor);
  if (!address) return false;
  for (const turn::Cidr& range : allow_from)
    if (range.contains(*address)) return true;
  return false;
}

std::optional<std::pair<std::string, PublishedService>> RendezvousCore::published_tcp(
    uint16_t port) const {
  auto holder = tcp_ports_.find(port);
  if (holder == tcp_ports_.end()) return std::nullopt;
  const Connection& connection = connections_.at(holder->second);
  for (const wire::Publish& publish : connection.publishes)
    if (publish.kind() == wire::Publish::TCP && publish.public_port() == port)
      return std::pair{connection.name,
                       service_of(publish, connection.public_key)};
  return std::nullopt;
}

std::optional<std::pair<wire::Error::Code, std::string>> RendezvousCore::check_publish(
    ConnectionId id, const Connection& connection, const wire::Register& message) const {
  if (message.publish().empty()) return std::nullopt;
  if (config_.publish.domain.empty())
    return std::pair{
        wire::Error::NOT_PUBLISHER,
        std::string("this relay publishes nothing (it runs without --publish-domain)")};
  // One HTTP and one TLS service: the front door routes a name to one target. TCP
  // services have a port each.
  // A TLS service per custom domain besides.
  std::set<std::pair<int, std::string>> kinds;
  bool tcp = false;
  for (const wire::Publish& publish : message.publish()) {
    const bool is_tcp = publish.kind() == wire::Publish::TCP;
    tcp = tcp || is_tcp;
    if (publish.host().empty() || publish.host().size() > kMaxHostLength ||
        publish.port() == 0 || publish.port() > 65535 || publish.public_port() > 65535 ||
        (!is_tcp && (publish.public_port() != 0 ||
                     !kinds.insert({publish.kind(), publish.custom_domain()}).second)) ||
        publish.kind() > wire::Publish::TCP || message.publish().size() > kMaxPublishes)
      return std::pair{wire::Error::BAD_MESSAGE,
                       std::string("a publish list holds one http and one tls service and a "
                                   "few tcp ones, each with a host and a port")};
    if (publish.allow_from().size() > kMaxAllowFrom ||
        std::any_of(publish.allow_from().begin(), publish.allow_from().end(),
                    [](const std::string& text) { return !turn::parse_cidr(text); }))
      return std::pair{wire::Error::BAD_MESSAGE,
                       std::string("allow-from takes up to " + std::to_string(kMaxAllowFrom) +
                                   " address ranges such as 192.168.0.0/16")};
  }
  const std::string key = key_id(to_public_key(connection.public_key));
  if (!config_.publish.any_publisher && !config_.publish.publishers.contains(key))
    return refuse_publisher(key, message.name(), connection.remote.host);
  if (auto refusal = check_custom_domains(connection, message)) return refusal;
  if (tcp && config_.publish.tcp_port_max == 0)
    return std::pair{wire::Error::NOT_PUBLISHER,
                     std::string("this relay publishes no tcp ports (it runs without "
                                 "--publish-ports)")};
  if (tcp && !assign_tcp_ports(id, connection, message))
    return std::pair{wire::Error::NOT_PUBLISHER,
                     "the relay's ports " + std::to_string(config_.publish.tcp_port_min) + "-" +
                         std::to_string(config_.publish.tcp_port_max) +
                         " do not have the ones asked for free"};
  return std::nullopt;
}

std::optional<std::pair<wire::Error::Code, std::string>> RendezvousCore::refuse_publisher(
    const std::string& id, const std::string& name, const std::string& host) const {
  // Anyone can ask, as often as the registration budget allows: rate limited.
  log::warn_limited("refused-publisher",
                    "refused publisher %s for '%s' from %s: its key is not allowed to publish "
                    "(--allow-publisher %s, or a line in the state dir's publishers file)",
                    id.c_str(), name.c_str(), host.c_str(), id.c_str());
  return std::pair{wire::Error::NOT_PUBLISHER,
                   "key " + id + " may not publish at this relay; its operator allows it "
                   "with `relay --allow-publisher " + id + "`"};
}

std::optional<PublishedService> RendezvousCore::published(std::string_view name,
                                                          wire::Publish::Kind kind) const {
  auto holder = names_.find(std::string(name));
  if (holder == names_.end()) return std::nullopt;
  const Connection& connection = connections_.at(holder->second);
  for (const wire::Publish& publish : connection.publishes)
    if (publish.kind() == kind && publish.custom_domain().empty())
      return service_of(publish, connection.public_key);
  return std::nullopt;
}

std::optional<std::pair<std::string, PublishedService>> RendezvousCore::published_custom(
    std::string_view host) const {
  std::string domain(host);
  std::transform(domain.begin(), domain.end(), domain.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  if (!domain.empty() && domain.back() == '.') domain.pop_back();  // the absolute form
  auto holder = custom_domains_.find(domain);
  if (holder == custom_domains_.end()) return std::nullopt;
  const Connection& connection = connections_.at(holder->second);
  for (const wire::Publish& publish : connection.publishes)
    if (publish.custom_domain() == domain)
      return std::pair{connection.name, service_of(publish, connection.public_key)};
  return std::nullopt;
}

void RendezvousCore::handle_open_session(ConnectionId id, Connection& connection,
                                         const wire::OpenSession& message, TimePoint now) {
  const SessionId session_id = message.session_id();
  if (!ice_params_ok(message.ice()) || message.target().size() > kMaxNameLength) {
    fail(id, wire::Error::BAD_MESSAGE, "OpenSession fields too long");
    return;
  }
  if (!take_token(session_buckets_, connection.remote.host, config_.max_sessions_per_minute,
                  now, kRatePeriod)) {
    count(&RelayStats::rate_limited_sessions);
    log::warn_limited("rendezvous-rate", "%s: more than %zu session requests per minute from "
                      "its address, refusing", describe(id).c_str(),
                      config_.max_sessions_per_minute);
    send_close_session(id, session_id, wire::CloseSession::LIMIT, "rate limited");
    return;
  }
  auto target = names_.find(message.target());
  if (target == names_.end()) {
    send_close_session(id, session_id, wire::CloseSession::NO_SUCH_PEER,
                       "no peer named " + message.target() + " is registered");
    return;
  }
  if (sessions_.contains(session_id)) {
    send_close_session(id, session_id, wire::CloseSession::PROTOCOL, "session_id already in use");
    return;
  }
  const ConnectionId callee_id = target->second;
  if (callee_id == id) {
    send_close_session(id, session_id, wire::CloseSession::PROTOCOL,
                       "cannot open a session with yourself");
    return;
  }
  if (connection.sessions.size() >= config_.max_sessions_per_connection) {
    log::warn_limited("rendezvous-session-limit", "%s has %zu open sessions, refusing more",
                      describe(id).c_str(), connection.sessions.size());
    send_close_session(id, session_id, wire::CloseSession::LIMIT,
                       "too many open sessions on this connection (at most " +
                           std::to_string(config_.max_sessions_per_connection) + ")");
    return;
  }
  if (auto exceeded = callee_budget_exceeded(connection, callee_id)) {
    log::warn_limited("rendezvous-session-limit", "session from %s to %s refused: %s",
                      describe(id).c_str(), describe(callee_id).c_str(), exceeded->c_str());
    send_close_session(id, session_id, wire::CloseSession::LIMIT, *exceeded);
    return;
  }
  Connection& callee = connections_.at(callee_id);

  wire::Envelope incoming;
  auto* in = incoming.mutable_incoming_session();
  in->set_session_id(session_id);
  in->set_caller_key(connection.public_key);
  *in->mutable_ice() = message.ice();
  in->set_caller_address(connection.remote.to_string());
  in->set_resumes_session(message.resumes_session());
  // Opaque to the relay; bounded so a caller cannot make it forward more than a proof.
  if (message.pairing_proof().size() <= kMaxPairingProofBytes)
    in->set_pairing_proof(message.pairing_proof());
  sessions_[session_id] = Session{id, callee_id, false, connection.public_key,
                                  connection.remote.host};
  ++sessions_per_pair_[{callee_id, connection.public_key}];
  ++sessions_per_caller_address_[{callee_id, connection.remote.host}];
  ++sessions_per_callee_[callee_id];
  count(&RelayStats::sessions_total);
  connection.sessions.insert(session_id);
  callee.sessions.insert(session_id);
  log::info("session %016" PRIx64 " opened: %s -> %s", session_id, describe(id).c_str(),
            describe(callee_id).c_str());
  send(callee_id, std::move(incoming));
}

void RendezvousCore::handle_hand_over(ConnectionId id, Connection& connection,
                                      const wire::HandOver& message) {
  const std::string& name = message.name();
  // A peer name has no dot; a custom domain has one at least (address.h). A custom
  // domain goes to the new key only once the DNS backs that key too (its claim is
  // looked up as any other), so the hand-over only waives the rule that a held domain
  // is refused to other keys whatever the DNS says.
  const bool domain = config_.publish.domain_claims && is_custom_domain_name(name);
  if (!domain && !is_valid_peer_name(name)) {
    fail(id, wire::Error::NAME_INVALID,
         "'" + name.substr(0, 64) + "' is not a valid name" +
             (config_.publish.domain_claims ? " or custom domain" : ""));
    return;
  }
  NameBindingPolicy& policy = domain ? *config_.publish.domain_claims : *names_policy_;
  const std::string what = domain ? "custom domain " + name : "'" + name + "'";
  if (!is_valid_key_id(message.to_key_id())) {
    fail(id, wire::Error::BAD_MESSAGE, "the key to hand over to is not a key id (as `peer id` "
                                       "prints it)");
    return;
  }
  const PublicKey key = to_public_key(connection.public_key);
  const std::optional<std::string> bound = policy.bound_key(name);
  if (!bound || *bound != connection.public_key) {
    fail(id, wire::Error::NOT_HOLDER,
         what + " is " + (bound ? "bound to another key" : "not bound to any key") +
             ", not to this one (" + key_id(key) + "): only its holder can hand it over" +
             (bound ? "" : domain ? "; the new key can simply claim it"
                                  : "; the new key can simply register it"));
    return;
  }
  if (!policy.hand_over(name, message.to_key_id())) {
    fail(id, wire::Error::UNKNOWN, "the relay could not record the hand-over; try again later");
    return;
  }
  log::info("%s handed over by key %s to key %s, which may now %s", what.c_str(),
            key_id(key).c_str(), message.to_key_id().c_str(),
            domain ? "claim it where the DNS backs it" : "register it");
  wire::Envelope reply;
  reply.mutable_handed_over()->set_name(name);
  reply.mutable_handed_over()->set_to_key_id(message.to_key_id());
  send(id, std::move(reply));
}

void RendezvousCore::handle_accept_session(ConnectionId id, const wire::AcceptSession& message) {
  auto it = sessions_.find(message.session_id());
  if (it == sessions_.end() || it->second.callee != id) {
    log::warn_limited("rendezvous-misrouted", "%s: AcceptSession for %s session %016" PRIx64
                      ", dropped", describe(id).c_str(),
                      it == sessions_.end() ? "unknown" : "someone else's", message.session_id());
    return;
  }
  if (!ice_params_ok(message.ice())) {
    fail(id, wire::Error::BAD_MESSAGE, "AcceptSession fields too long");
    return;
  }
  it->second.accepted = true;
  wire::Envelope forward;
  auto* accept = forward.mutable_accept_session();
  accept->set_session_id(message.session_id());
  *accept->mutable_ice() = message.ice();
  accept->set_callee_key(connections_.at(id).public_key);
  log::debug("session %016" PRIx64 " accepted by %s", message.session_id(), describe(id).c_str());
  send(it->second.caller, std::move(forward));
}

void RendezvousCore::handle_candidate(ConnectionId id, const wire::Candidate& message) {
  auto other = other_member(message.session_id(), id);
  if (!other) {
    if (recently_ended_.contains(message.session_id())) {
      log::debug("%s: late Candidate for ended session %016" PRIx64 ", dropped",
                 describe(id).c_str(), message.session_id());
      return;
    }
    if (config_.stats) config_.stats->error("rendezvous_misrouted_candidate");
    log::warn_limited("rendezvous-misrouted", "%s: Candidate for a session it is not in (%016"
                      PRIx64 "), dropped", describe(id).c_str(), message.session_id());
    return;
  }
  if (message.sdp().size() > kMaxCandidateLength) {
    fail(id, wire::Error::BAD_MESSAGE, "candidate too long");
    return;
  }
  wire::Envelope forward;
  *forward.mutable_candidate() = message;
  send(*other, std::move(forward));
}

void RendezvousCore::handle_close_session(ConnectionId id, const wire::CloseSession& message) {
  const SessionId session_id = message.session_id();
  auto other = other_member(session_id, id);
  if (!other) {
    // Both sides closing at once is normal; not worth a warning.
    log::debug("%s: CloseSession for a session it is not in (%016" PRIx64 ")",
               describe(id).c_str(), session_id);
    return;
  }
  log::info("session %016" PRIx64 " closed by %s: %s %.200s", session_id, describe(id).c_str(),
            wire::CloseSession::Reason_Name(message.reason()).c_str(), message.detail().c_str());
  wire::Envelope forward;
  *forward.mutable_close_session() = message;
  send(*other, std::move(forward));
  drop_session(session_id);
}

std::optional<ConnectionId> RendezvousCore::other_member(SessionId session_id,
                                                         ConnectionId id) const {
  auto it = sessions_.find(session_id);
  if (it == sessions_.end()) return std::nullopt;
  if (it->second.caller == id) return it->second.callee;
  if (it->second.callee == id) return it->second.caller;
  return std::nullopt;
}

void RendezvousCore::send(ConnectionId id, wire::Envelope envelope) {
  // Everything we build is bounded by the checks above; this is the last guard
  // before FramedConnection, which would throw on an oversized payload.
  if (envelope.ByteSizeLong() > wire::kMaxFramePayload) {
    log::warn_limited("rendezvous-oversize", "dropping an oversized message for %s",
                      describe(id).c_str());
    return;
  }
  actions_.push_back(SendAction{id, std::move(envelope)});
}

void RendezvousCore::send_close_session(ConnectionId id, SessionId session,
                                        wire::CloseSession::Reason reason, std::string detail) {
  wire::Envelope envelope;
  auto* close = envelope.mutable_close_session();
  close->set_session_id(session);
  close->set_reason(reason);
  close->set_detail(std::move(detail));
  send(id, std::move(envelope));
}

void RendezvousCore::fail(ConnectionId id, wire::Error::Code code, const std::string& detail) {
  if (config_.stats) config_.stats->error("rendezvous_" + wire::Error::Code_Name(code));
  log::warn_limited("rendezvous-protocol", "%s: %s: %s", describe(id).c_str(),
                    wire::Error::Code_Name(code).c_str(), detail.c_str());
  wire::Envelope envelope;
  envelope.mutable_error()->set_code(code);
  envelope.mutable_error()->set_detail(detail);
  send(id, std::move(envelope));
  close(id, wire::Error::Code_Name(code) + ": " + detail);
}

void RendezvousCore::close(ConnectionId id, const std::string& reason) {
  if (!connections_.contains(id)) return;
  actions_.push_back(CloseAction{id, reason});
  forget(id, reason);
}

void RendezvousCore::on_connection_closed(ConnectionId id, std::string_view reason, TimePoint) {
  if (!connections_.contains(id)) return;
  forget(id, reason);
}

void RendezvousCore::handle_netcheck_query(ConnectionId id, Connection& connection,
                                           const wire::NetcheckQuery& message, TimePoint now) {
  // A query costs the target a message: the same budget as opening a session.
  if (!take_token(session_buckets_, connection.remote.host, config_.max_sessions_per_minute,
                  now, kRatePeriod)) {
    count(&RelayStats::rate_limited_sessions);
    send_netcheck_status(id, message.query_id(), wire::NetcheckReply::LIMIT);
    return;
  }
  // The target decides by the caller's key, so the key must be the caller's own.
  const PublicKey key = to_public_key(connection.public_key);
  if (!verify_signature(key, netcheck_query_message(connection.challenge, message.target()),
                        message.signature())) {
    fail(id, wire::Error::BAD_SIGNATURE,
         "the netcheck query signature does not verify with key " + key_id(key));
    return;
  }
  auto target = names_.find(message.target());
  if (target == names_.end()) {
    send_netcheck_status(id, message.query_id(), wire::NetcheckReply::NO_SUCH_PEER);
    return;
  }
  size_t in_flight = 0;
  for (const auto& [rid, pending] : netchecks_) in_flight += pending.caller == id;
  if (in_flight >= kMaxNetchecksPerCaller) {
    send_netcheck_status(id, message.query_id(), wire::NetcheckReply::LIMIT);
    return;
  }
  const uint64_t relay_id = next_netcheck_id_++;
  netchecks_[relay_id] = PendingNetcheck{id, message.query_id(), target->second};
  wire::Envelope forward;
  auto* query = forward.mutable_netcheck_query();
  query->set_query_id(relay_id);
  query->set_target(message.target());
  query->set_caller_key(connection.public_key);
  log::debug("netcheck query from %s to %s", describe(id).c_str(),
             describe(target->second).c_str());
  send(target->second, std::move(forward));
}

void RendezvousCore::handle_netcheck_reply(ConnectionId id, const wire::NetcheckReply& message) {
  auto it = netchecks_.find(message.query_id());
  if (it == netchecks_.end() || it->second.target != id) return;  // late, or not theirs
  wire::Envelope reply;
  *reply.mutable_netcheck_reply() = message;
  reply.mutable_netcheck_reply()->set_query_id(it->second.caller_query_id);
  const ConnectionId caller = it->second.caller;
  netchecks_.erase(it);
  send(caller, std::move(reply));
}

void RendezvousCore::send_netcheck_status(ConnectionId id, uint64_t query_id,
                                          wire::NetcheckReply::Status status) {
  wire::Envelope reply;
  reply.mutable_netcheck_reply()->set_query_id(query_id);
  reply.mutable_netcheck_reply()->set_status(status);
  send(id, std::move(reply));
}

void RendezvousCore::forget(ConnectionId id, std::string_view reason) {
  auto it = connections_.find(id);
  if (it == connections_.end()) return;
  for (auto q = netchecks_.begin(); q != netchecks_.end();) {
    if (q->second.target == id && q->second.caller != id)
      send_netcheck_status(q->second.caller, q->second.caller_query_id,
                           wire::NetcheckReply::NO_SUCH_PEER);
    if (q->second.target == id || q->second.caller == id) q = netchecks_.erase(q);
    else ++q;
  }
  log::debug("connection %s closed: %.*s", describe(id).c_str(), static_cast<int>(reason.size()),
             reason.data());
  // Copy: end_session edits the set.
  const std::set<SessionId> sessions = it->second.sessions;
  for (SessionId session : sessions) end_session(session, id, reason);

  Connection& connection = it->second;
  if (!connection.name.empty()) {
    auto holder = names_.find(connection.name);
    if (holder != names_.end() && holder->second == id) {
      names_.erase(holder);
      names_policy_->used(connection.name);  // unused from now on: the expiry counts from here
      log::info("unregistered '%s' (%s)", connection.name.c_str(),
                connection.remote.to_string().c_str());
    }
  }
  for (auto port = tcp_ports_.begin(); port != tcp_ports_.end();)
    port = port->second == id ? tcp_ports_.erase(port) : std::next(port);
  for (auto domain = custom_domains_.begin(); domain != custom_domains_.end();)
    domain = domain->second == id ? custom_domains_.erase(domain) : std::next(domain);
  if (connection.recheck) rechecks_.erase({*connection.recheck, id});
  deadlines_.erase({connection.deadline, id});
  if (connection.refresh) refreshes_.erase({*connection.refresh, id});
  if (auto count = connections_per_address_.find(connection.remote.host);
      count != connections_per_address_.end() && --count->second == 0)
    connections_per_address_.erase(count);
  connections_.erase(it);
}

void RendezvousCore::end_session(SessionId session_id, ConnectionId gone, std::string_view why) {
  auto it = sessions_.find(session_id);
  if (it == sessions_.end()) return;
  const ConnectionId other = it->second.caller == gone ? it->second.callee : it->second.caller;
  log::info("session %016" PRIx64 " closed: %s went away (%.*s)", session_id,
            describe(gone).c_str(), static_cast<int>(why.size()), why.data());
  send_close_session(other, session_id, wire::CloseSession::PEER_GONE,
                     "the other peer's relay connection closed");
  drop_session(session_id);
}

void RendezvousCore::drop_session(SessionId session_id) {
  auto it = sessions_.find(session_id);
  if (it == sessions_.end()) return;
  const Session session = it->second;
  sessions_.erase(it);
  auto release = [](auto& budget, const auto& key) {
    auto entry = budget.find(key);
    if (entry != budget.end() && --entry->second == 0) budget.erase(entry);
  };
  if (auto caller = connections_.find(session.caller); caller != connections_.end())
    caller->second.sessions.erase(session_id);
  release(sessions_per_pair_, CalleeBudgetKey{session.callee, session.caller_key});
  release(sessions_per_caller_address_, CalleeBudgetKey{session.callee, session.caller_host});
  if (auto callee = connections_.find(session.callee); callee != connections_.end())
    callee->second.sessions.erase(session_id);
  release(sessions_per_callee_, session.callee);
  if (recently_ended_.insert(session_id).second) {
    recently_ended_order_.push_back(session_id);
    if (recently_ended_order_.size() > kRecentlyEndedSessions) {
      recently_ended_.erase(recently_ended_order_.front());
      recently_ended_order_.pop_front();
    }
  }
}

std::optional<std::string> RendezvousCore::callee_budget_exceeded(const Connection& caller,
                                                                  ConnectionId callee_id) const {
  auto used = [](const auto& budget, const auto& key) -> size_t {
    auto entry = budget.find(key);
    return entry == budget.end() ? 0 : entry->second;
  };
  if (used(sessions_per_pair_, CalleeBudgetKey{callee_id, caller.public_key}) >=
      config_.max_sessions_per_pair)
    return "too many open sessions between this key and the peer (at most " +
           std::to_string(config_.max_sessions_per_pair) + ")";
  if (used(sessions_per_caller_address_, CalleeBudgetKey{callee_id, caller.remote.host}) >=
      config_.max_sessions_per_caller_address)
    return "too many open sessions from " + caller.remote.host + " to the peer (at most " +
           std::to_string(config_.max_sessions_per_caller_address) + ")";
  if (used(sessions_per_callee_, callee_id) >= config_.max_sessions_per_callee)
    return "the peer has too many open sessions (at most " +
           std::to_string(config_.max_sessions_per_callee) + ")";
  return std::nullopt;
}

bool RendezvousCore::take_token(Buckets& buckets, const std::string& source, size_t per_period,
                                TimePoint now, std::chrono::seconds period) {
  auto it = buckets.try_emplace(source, static_cast<double>(per_period), period, now).first;
  return it->second.take(1.0, now);
}

void RendezvousCore::sweep_buckets(TimePoint now) {
  if (now < next_sweep_) return;
  next_sweep_ = now + kRatePeriod;
  // A bucket that is full again can be forgotten: a new one starts full.
  for (Buckets* buckets : {&registration_buckets_, &session_buckets_, &new_name_buckets_})
    std::erase_if(*buckets, [&](const auto& entry) { return entry.second.full_at(now); });
}

void RendezvousCore::on_tick(TimePoint now) {
  sweep_buckets(now);
  // Fresh TURN credentials well before the old ones expire.
  while (!refreshes_.empty() && refreshes_.begin()->first <= now) {
    const ConnectionId id = refreshes_.begin()->second;
    Connection& connection = connections_.at(id);
    wire::Envelope update;
    add_ice_servers(connection, *update.mutable_ice_servers_update()->mutable_ice_servers());
    send(id, std::move(update));
    schedule_refresh(id, connection, now);
  }
  // Held custom domains: the DNS still backs them, or the route ends.
  while (!rechecks_.empty() && rechecks_.begin()->first <= now) {
    const ConnectionId id = rechecks_.begin()->second;
    Connection& connection = connections_.at(id);
    schedule_recheck(id, connection, std::nullopt);
    std::vector<std::string> domains;
    for (const wire::Publish& publish : connection.publishes)
      if (!publish.custom_domain().empty()) domains.push_back(publish.custom_domain());
    // A Register being looked up covers the claims.
    if (!connection.pending_register && !domains.empty())
      request_domain_check(id, connection, domains, connection.name);
  }
  while (!deadlines_.empty() && deadlines_.begin()->first <= now) {
    const ConnectionId id = deadlines_.begin()->second;
    const bool hello_done = connections_.at(id).hello_done;
    const std::string reason =
        hello_done ? "silent for " + std::to_string(config_.idle_timeout.count()) + " s"
                   : "no Hello within " + std::to_string(config_.hello_timeout.count()) + " s";
    log::info("closing %s: %s", describe(id).c_str(), reason.c_str());
    close(id, reason);
  }
}

void RendezvousCore::set_deadline(ConnectionId id, Connection& connection, TimePoint deadline) {
  deadlines_.erase({connection.deadline, id});
  connection.deadline = deadline;
  deadlines_.insert({deadline, id});
}

std::optional<TimePoint> RendezvousCore::next_deadline() const {
  std::optional<TimePoint> next;
  if (!deadlines_.empty()) next = deadlines_.begin()->first;
  if (!refreshes_.empty() && (!next || refreshes_.begin()->first < *next))
    next = refreshes_.begin()->first;
  if (!rechecks_.empty() && (!next || rechecks_.begin()->first < *next))
    next = rechecks_.begin()->first;
  return next;
}

std::vector<Action> RendezvousCore::take_actions() {
  std::vector<Action> out;
  out.swap(actions_);
  return out;
}

std::optional<ConnectionId> RendezvousCore::holder_of(std::string_view name) const {
  auto it = names_.find(std::string(name));
  if (it == names_.end()) return std::nullopt;
  return it->second;
}

std::string RendezvousCore::describe(ConnectionId id) const {
  auto it = connections_.find(id);
  if (it == connections_.end()) return "connection " + std::to_string(id);
  const Connection& connection = it->second;
  if (connection.name.empty()) return connection.remote.to_string();
  return "'" + connection.name + "' (" + connection.remote.to_string() + ")";
}

std::vector<std::string> RendezvousCore::custom_domains_of(const wire::Register& message) {
  std::vector<std::string> out;
  for (const wire::Publish& publish : message.publish())
    if (!publish.custom_domain().empty()) out.push_back(publish.custom_domain());
  return out;
}

std::optional<std::pair<wire::Error::Code, std::string>> RendezvousCore::check_custom_domains(
    const Connection& connection, const wire::Register& message) const {
  const std::vector<std::string> domains = custom_domains_of(message);
  if (domains.empty()) return std::nullopt;
  const PublishConfig& config = config_.publish;
  if (!config.domain_claims)
    return std::pair{wire::Error::NOT_PUBLISHER,
                     std::string("this relay takes no custom domains (its operator turns them "
                                 "on with --publish-address)")};
  if (domains.size() > kMaxCustomDomains)
    return std::pair{wire::Error::BAD_MESSAGE, "a publish list claims up to " +
                                                   std::to_string(kMaxCustomDomains) +
                                                   " custom domains"};
  for (const wire::Publish& publish : message.publish()) {
    const std::string& domain = publish.custom_domain();
    if (domain.empty()) continue;
    if (publish.kind() != wire::Publish::TLS || !is_custom_domain_name(domain))
      return std::pair{wire::Error::BAD_MESSAGE,
                       "'" + domain.substr(0, 64) + "' is not a custom domain a tls or https "
                       "publish can claim (a lowercase DNS name such as www.example.org)"};
    if (domain == config.domain || domain.ends_with("." + config.domain))
      return std::pair{wire::Error::NOT_PUBLISHER,
                       domain + " is under this relay's own domain " + config.domain +
                           ": publish it as NAME." + config.domain + " instead"};
    // Held by another key: refused before any look-up, whatever the DNS says now,
    // unless the holder handed it to this key (`peer handover DOMAIN KEYID`).
    if (auto holder = config.domain_claims->bound_key(domain);
        holder && *holder != connection.public_key &&
        config.domain_claims->handed_over_to(domain) != key_id(to_public_key(connection.public_key)))
      return std::pair{wire::Error::NOT_PUBLISHER,
                       "custom domain " + domain + " is held at this relay by key " +
                           key_id(to_public_key(*holder)) + "; its operator frees it with "
                           "`relay domains release " + domain + "`"};
  }
  return std::nullopt;
}

void RendezvousCore::request_domain_check(ConnectionId id, Connection& connection,
                                          const std::vector<std::string>& domains,
                                          const std::string& name) {
  connection.check_id = next_check_id_++;
  CheckDomainsAction action{id, connection.check_id, {}};
  const std::string key = key_id(to_public_key(connection.public_key));
  for (const std::string& domain : domains)
    action.domains.push_back({domain, key, name + "." + config_.publish.domain});
  actions_.push_back(std::move(action));
}

void RendezvousCore::schedule_recheck(ConnectionId id, Connection& connection,
                                      std::optional<TimePoint> at) {
  if (connection.recheck) rechecks_.erase({*connection.recheck, id});
  connection.recheck = at;
  if (at) rechecks_.insert({*at, id});
}

void RendezvousCore::on_domains_checked(ConnectionId id, uint64_t check,
                                        const std::vector<DomainVerdict>& verdicts,
                                        TimePoint now) {
  auto it = connections_.find(id);
  if (it == connections_.end() || it->second.check_id != check) return;
  Connection& connection = it->second;
  connection.check_id = 0;  // answered: another answer to it counts for nothing
  std::optional<wire::Register> pending = std::move(connection.pending_register);
  connection.pending_register.reset();
  std::vector<std::string> domains;
  if (pending) {
    domains = custom_domains_of(*pending);
  } else {
    for (const wire::Publish& publish : connection.publishes)
      if (!publish.custom_domain().empty()) domains.push_back(publish.custom_domain());
  }
  if (verdicts.size() != domains.size())
    throw std::invalid_argument("on_domains_checked: one verdict per domain looked up");
  NameBindingPolicy& claims = *config_.publish.domain_claims;
  const std::string key = key_id(to_public_key(connection.public_key));
  bool retry_soon = false;
  for (size_t i = 0; i < domains.size(); ++i) {
    const DomainVerdict& verdict = verdicts[i];
    const std::optional<std::string> holder = claims.bound_key(domains[i]);
    const bool held = holder == connection.public_key;
    if (verdict.outcome == DomainVerdict::Outcome::kRefused) {
      // Any allowed publisher can ask, as often as its registrations allow: limited.
      log::warn_limited("custom-domain-refused", "custom domain for %s (key %s) refused: %s",
                        describe(id).c_str(), key.c_str(), verdict.reason.c_str());
      // The record may be on its way (the user adds it after starting the peer): the
      // peer tries again later, and a held claim the DNS dropped ends its route now.
      fail(id, wire::Error::CLAIM_UNCONFIRMED, verdict.reason);
      return;
    }
    if (verdict.outcome == DomainVerdict::Outcome::kRetry) {
      log::warn_limited("custom-domain-retry", "custom domain for %s (key %s): %s",
                        describe(id).c_str(), key.c_str(), verdict.reason.c_str());
      // A claim the DNS backed before stays through a DNS outage; a new one waits.
      if (!held) {
        fail(id, wire::Error::CLAIM_UNCONFIRMED, verdict.reason);
        return;
      }
      retry_soon = true;
      continue;
    }
    const bool inherits = holder && !held && claims.handed_over_to(domains[i]) == key;
    if (holder && !held && !inherits) {  // another key's claim passed meanwhile
      fail(id, wire::Error::NOT_PUBLISHER,
           "custom domain " + domains[i] + " is held at this relay by key " +
               key_id(to_public_key(*holder)));
      return;
    }
    if (inherits) {
      if (!claims.bind(domains[i], connection.public_key, connection.remote.host)) {
        fail(id, wire::Error::UNKNOWN, "the relay could not record the claim; try again later");
        return;
      }
      log::info("custom domain %s handed over from key %s to key %s", domains[i].c_str(),
                key_id(to_public_key(*holder)).c_str(), key.c_str());
      // The old key's registration that routes the name ends, as a handed-over name's.
      if (auto route = custom_domains_.find(domains[i]);
          route != custom_domains_.end() && route->second != id)
        fail(route->second, wire::Error::NOT_PUBLISHER,
             "custom domain " + domains[i] + " was handed over to key " + key +
                 ", which claimed it");
    } else if (held) {
      claims.used(domains[i]);
    } else if (!claims.bind(domains[i], connection.public_key, connection.remote.host)) {
      fail(id, wire::Error::UNKNOWN, "the relay could not record the claim; try again later");
      return;
    } else {
      log::info("custom domain %s claimed by key %s", domains[i].c_str(), key.c_str());
    }
  }
  if (pending) complete_register(id, connection, *pending, now);
  // complete_register may have failed the connection (a name taken, say).
  auto still = connections_.find(id);
  if (still == connections_.end()) return;
  schedule_recheck(id, still->second,
                   now + (retry_soon ? config_.publish.claim_retry
                                     : config_.publish.claim_recheck));
}

}  // namespace natfwd::relay
