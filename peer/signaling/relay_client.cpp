#include "signaling/relay_client.h"

#include "frame.h"
#include "identity.h"
#include "log.h"

namespace natfwd {
namespace {

constexpr guint kInitialBackoffMs = 500;
constexpr guint kMaxBackoffMs = 30000;
constexpr guint kClaimFirstRetryMs = 10'000;
constexpr guint kClaimMaxRetryMs = 600'000;
constexpr guint kConnectTimeoutSeconds = 10;
// After a network change the relay has this long to answer a Ping. A live relay
// answers within one RTT; a link over an address that is gone never does.
constexpr guint kProbeTimeoutMs = 1500;
// From TCP connected to the relay's Challenge: a TLS handshake and one round trip. A
// relay under load answers within a second or two; a port where nothing answers is
// no relay.
constexpr guint kWelcomeTimeoutSeconds = 10;
// A server that spoke already answers a plain Hello at once.
constexpr unsigned kForeignProbeSeconds = 3;

}  // namespace

RelayClient::RelayClient(ConnectOptions link, const Identity& identity,
                         std::optional<std::string> name, Callbacks callbacks)
    : link_options_(std::move(link)),
      identity_(identity),
      name_(std::move(name)),
      callbacks_(std::move(callbacks)) {
  // A certificate refused by the check is a changed or wrong key, which no retry
  // fixes: remember why, to end the link for good when the handshake fails.
  if (link_options_.tls_check) {
    link_options_.tls_check = [this, check = std::move(link_options_.tls_check)](
                                  X509* leaf, const std::string& spki) {
      std::string refusal = check(leaf, spki);
      certificate_refused_ = refusal;
      return refusal;
    };
  }
}

RelayClient::~RelayClient() {
  stopped_ = true;
  attempt_.reset();
  ping_timer_.reset();
  reconnect_timer_.reset();
  probe_timer_.reset();
  welcome_timer_.reset();
  probe_.reset();
  if (link_) link_->close();
  link_.reset();
}

void RelayClient::check_link() {
  if (stopped_) return;
  if (reconnect_timer_ || (attempt_ && !link_)) {
    // Waiting for a backoff, or a connection attempt that may be stuck on the old
    // route: try again now, on the new network.
    reconnect_timer_.reset();
    backoff_ms_ = 0;
    attempt_.reset();
    start();
    return;
  }
  if (link_ && !welcomed_) {
    backoff_ms_ = 0;
    disconnected("relay link lost: the network changed before the relay answered", false);
    return;
  }
  if (!link_ || probe_timer_) return;
  wire::Envelope ping;
  ping.mutable_ping()->set_nonce(static_cast<uint64_t>(g_get_monotonic_time()));
  send(ping);
  probe_timer_.reset(g_timeout_add(kProbeTimeoutMs, on_probe_timeout, this));
}

gboolean RelayClient::on_probe_timeout(gpointer self) {
  auto* client = static_cast<RelayClient*>(self);
  client->probe_timer_.release();
  guard_callback("relay link: probe", [client] {
    client->backoff_ms_ = 0;  // the relay is probably fine; our network moved
    client->disconnected("relay link lost: no answer after a network change", false);
  });
  return G_SOURCE_REMOVE;
}

gboolean RelayClient::on_welcome_timeout(gpointer self) {
  auto* client = static_cast<RelayClient*>(self);
  client->welcome_timer_.release();
  guard_callback("relay link: welcome", [client] {
    const std::string foreign = foreign_protocol(
        bytes_to_judge(*client->first_bytes_, client->link_options_.tls));
    if (!foreign.empty() && !client->heard_relay_) return client->link_closed("no answer");
    client->attempt_failed("relay " + client->relay().to_string() +
                           " accepted the connection but did not answer within " +
                           std::to_string(kWelcomeTimeoutSeconds) +
                           " s: is a natfwd relay listening on that port?");
  });
  return G_SOURCE_REMOVE;
}

void RelayClient::start() {
  heard_relay_ = false;
  certificate_refused_.clear();
  log::debug("connecting to relay %s%s%s", relay().to_string().c_str(),
             link_options_.tls ? " (TLS)" : "",
             link_options_.http_proxy
                 ? (" via proxy " + link_options_.http_proxy->to_string()).c_str()
                 : "");
  attempt_ = std::make_unique<ConnectAttempt>(
      link_options_, [this](std::unique_ptr<ByteStream> stream, const std::string& error) {
        connected(std::move(stream), error);
      });
}

void RelayClient::connected(std::unique_ptr<ByteStream> stream, const std::string& error) {
  // Destroyed from idle: this runs inside the attempt's own callback.
  delete_later(std::move(attempt_));
  if (!stream) {
    attempt_failed("cannot reach relay " + relay().to_string() + ": " + error);
    return;
  }
  unreachable_.clear();  // it answers at TCP level; whether it is a relay comes next
  first_bytes_ = std::make_shared<FirstBytes>();
  stream = record_first_bytes(std::move(stream), first_bytes_);
  // The address for STUN and TURN over UDP: the relay's own IP. Through a proxy the
  // socket's peer is the proxy, so only an IP literal in --relay can tell.
  relay_ip_.clear();
  if (g_hostname_is_ip_address(relay().host.c_str())) {
    relay_ip_ = relay().host;
  } else if (!link_options_.http_proxy) {
    std::string remote = stream->remote_address();
    auto parsed = parse_host_port(remote);
    if (auto* address = std::get_if<HostPort>(&parsed)) relay_ip_ = address->host;
  }
  link_ = std::make_unique<FramedConnection>(
      std::move(stream), [this](const wire::Envelope& envelope) { handle(envelope); },
      [this](const std::string& reason) { link_closed(reason); });
  welcome_timer_.reset(g_timeout_add_seconds(kWelcomeTimeoutSeconds, on_welcome_timeout, this));
  wire::Envelope hello;
  hello.mutable_hello()->set_protocol_version(wire::kProtocolVersion);
  hello.mutable_hello()->set_public_key(
      std::string(reinterpret_cast<const char*>(identity_.public_key().data()),
                  identity_.public_key().size()));
  hello.mutable_hello()->set_software("natfwd-peer " NATFWD_VERSION);
  link_->send(hello);
}

void RelayClient::link_closed(const std::string& reason) {
  if (welcomed_) return disconnected("relay link lost: " + reason, false);
  if (!certificate_refused_.empty()) return disconnected(certificate_refused_, true);
  const std::string foreign =
      heard_relay_ ? "" : foreign_protocol(bytes_to_judge(*first_bytes_, link_options_.tls));
  if (!foreign.empty()) return not_a_relay(foreign);
  const std::string failure =
      "relay " + relay().to_string() + " closed the connection before answering: " + reason;
  if (heard_relay_ || !link_options_.tls) return attempt_failed(failure);
  // TLS may have failed on bytes it read before we could see them: ask once more
  // without TLS.
  link_->close();
  delete_later(std::move(link_));
  welcome_timer_.reset();
  probe_ = std::make_unique<RelayProbe>(link_options_, kForeignProbeSeconds,
                                        [this, failure](const RelayProbe::Answer& answer) {
                                          delete_later(std::move(probe_));
                                          if (!answer.foreign.empty()) not_a_relay(answer.foreign);
                                          else attempt_failed(failure);
                                        });
}

void RelayClient::not_a_relay(const std::string& foreign) {
  disconnected("relay " + relay().to_string() + ": this is not a natfwd relay (it answered like " +
                   foreign + "); check the host and port of --relay",
               true);
}

void RelayClient::attempt_failed(const std::string& reason) {
  unreachable_ = reason;
  disconnected(reason, false);
}

void RelayClient::send(const wire::Envelope& envelope) {
  if (link_ && link_->is_open()) link_->send(envelope);
}

void RelayClient::handle(const wire::Envelope& envelope) {
  heard_relay_ = true;
  switch (envelope.msg_case()) {
    case wire::Envelope::kChallenge: {
      // Prove that we hold the key Hello claimed; the relay does nothing for us before.
      wire::Envelope prove;
      prove.mutable_prove()->set_signature(
          identity_.sign(connection_proof_message(envelope.challenge().challenge())));
      link_->send(prove);
      break;
    }
    case wire::Envelope::kWelcome: {
      welcomed_ = true;
      welcome_timer_.reset();
      unreachable_.clear();
      backoff_ms_ = 0;
      keepalive_seconds_ = std::clamp<guint>(envelope.welcome().keepalive_seconds(), 1, 300);
      last_pong_us_ = g_get_monotonic_time();
      ping_timer_.reset(g_timeout_add_seconds(keepalive_seconds_, on_ping_timer, this));
      log::debug("relay %s sees us as %s", relay().to_string().c_str(),
                 envelope.welcome().observed_address().c_str());
      if (name_) {
        // Prove that we hold the key the name is (or will be) bound to.
        wire::Envelope reg;
        reg.mutable_register_()->set_name(*name_);
        reg.mutable_register_()->set_signature(identity_.sign(
            registration_message(envelope.welcome().challenge(), *name_)));
        for (const wire::Publish& publish : publishes_) *reg.mutable_register_()->add_publish() = publish;
        link_->send(reg);
      }
      if (callbacks_.on_welcome) callbacks_.on_welcome(envelope.welcome(), relay_ip_);
      break;
    }
    case wire::Envelope::kRegistered:
      claim_backoff_ms_ = 0;
      if (callbacks_.on_registered) callbacks_.on_registered(envelope.registered());
      break;
    case wire::Envelope::kPong:
      last_pong_us_ = g_get_monotonic_time();
      probe_timer_.reset();
      break;
    case wire::Envelope::kPing: {
      wire::Envelope pong;
      pong.mutable_pong()->set_nonce(envelope.ping().nonce());
      link_->send(pong);
      break;
    }
    case wire::Envelope::kError: {
      const auto& error = envelope.error();
      const bool fatal = error.code() == wire::Error::NAME_TAKEN ||
                         error.code() == wire::Error::NAME_INVALID ||
                         error.code() == wire::Error::NOT_HOLDER ||
                         error.code() == wire::Error::BAD_SIGNATURE ||
                         error.code() == wire::Error::NOT_PUBLISHER ||
                         error.code() == wire::Error::VERSION;
      if (error.code() == wire::Error::VERSION) {
        // A relay from before protocol 2 says only "relay speaks protocol version 1, peer
        // sent 2"; its peers cannot be newer than it, so it is the one to upgrade.
        const bool says_which = error.detail().find("upgrade") != std::string::npos;
        disconnected("relay " + relay().to_string() + " and this peer speak different natfwd "
                         "protocols: " + error.detail() + (says_which ? "" : "; upgrade the relay"),
                     true);
        break;
      }
      if (error.code() == wire::Error::CLAIM_UNCONFIRMED) {
        claim_backoff_ms_ = claim_backoff_ms_ == 0
                                ? kClaimFirstRetryMs
                                : std::min(claim_backoff_ms_ * 2, kClaimMaxRetryMs);
        disconnected("relay refused us: " + error.detail() + " (asking again in " +
                         std::to_string(claim_backoff_ms_ / 1000) + " s)",
                     false, claim_backoff_ms_);
        break;
      }
      disconnected("relay refused us: " + error.detail(), fatal);
      break;
    }
    case wire::Envelope::kIceServersUpdate:
      if (callbacks_.on_ice_servers) callbacks_.on_ice_servers(envelope.ice_servers_update());
      break;
    case wire::Envelope::kIncomingSession:
    case wire::Envelope::kAcceptSession:
    case wire::Envelope::kCandidate:
    case wire::Envelope::kCloseSession:
    case wire::Envelope::kNetcheckQuery:
    case wire::Envelope::kNetcheckReply:
    case wire::Envelope::kHandedOver:
      if (callbacks_.on_session_message) callbacks_.on_session_message(envelope);
      break;
    default:
      log::warn_limited("relay message", "unexpected message %d from the relay",
                        static_cast<int>(envelope.msg_case()));
      break;
  }
}

gboolean RelayClient::on_ping_timer(gpointer self) {
  auto* client = static_cast<RelayClient*>(self);
  const gint64 silent_us = g_get_monotonic_time() - client->last_pong_us_;
  if (silent_us > 3 * static_cast<gint64>(client->keepalive_seconds_) * G_USEC_PER_SEC) {
    client->ping_timer_.release();
    guard_callback("relay link: keepalive", [client] {
      client->disconnected("relay link lost: no answer to keepalives", false);
    });
    return G_SOURCE_REMOVE;
  }
  return guard_callback("relay link: keepalive", G_SOURCE_CONTINUE, [client] {
    wire::Envelope ping;
    ping.mutable_ping()->set_nonce(static_cast<uint64_t>(g_get_monotonic_time()));
    client->send(ping);
    return G_SOURCE_CONTINUE;
  });
}

void RelayClient::disconnected(const std::string& reason, bool fatal, guint at_least_ms) {
  welcomed_ = false;
  welcome_timer_.reset();
  probe_timer_.reset();
  ping_timer_.reset();
  if (link_) {
    link_->close();
    // Destroyed later: we may be inside one of its callbacks.
    delete_later(std::move(link_));
  }
  if (callbacks_.on_disconnected) callbacks_.on_disconnected(reason, fatal);
  if (!fatal && !stopped_) schedule_reconnect(at_least_ms);
}

void RelayClient::schedule_reconnect(guint at_least_ms) {
  backoff_ms_ = backoff_ms_ == 0 ? kInitialBackoffMs : std::min(backoff_ms_ * 2, kMaxBackoffMs);
  // Full jitter between half and all of the backoff, so that many peers that lost
  // the same relay do not come back in lockstep.
  const guint delay = std::max(
      at_least_ms,
      backoff_ms_ / 2 + g_random_int_range(0, static_cast<gint32>(backoff_ms_ / 2 + 1)));
  log::debug("reconnecting to the relay in %u ms", delay);
  reconnect_timer_.reset(g_timeout_add(delay, on_reconnect_timer, this));
}

gboolean RelayClient::on_reconnect_timer(gpointer self) {
  auto* client = static_cast<RelayClient*>(self);
  client->reconnect_timer_.release();
  guard_callback("relay link: reconnect", [client] { client->start(); });
  return G_SOURCE_REMOVE;
}

}  // namespace natfwd
