#include "tunnel/tunnel.h"


#include "frame.h"
#include "log.h"
#include "tcp_reset.h"

namespace natfwd {
namespace {

// ICE plus the QUIC handshake must be done within this time, or the attempt fails
// with the phase it was in.
constexpr guint kSetupTimeoutSeconds = 30;
// TCP connections held while the tunnel is being set up.
constexpr size_t kMaxPendingForwards = 256;
// Our relay candidates are trickled to the other side only this long after ICE
// starts. libnice's regular nomination (needed for ICE-TCP, RFC 6544 section 8)
// nominates as soon as two pairs are valid. The other side's checks towards our relay
// candidate validate relayed pairs fast, so with 20 ms of delay they beat a direct
// ICE-TCP pair that needs a TCP handshake first (measured in the NAT lab: none x
// udpblock went relayed). Our own checks on relayed pairs come last anyway (lowest
// priority). Measured cost: about +300 ms setup for direct pairs with a single valid
// pair, +500 ms for relayed ones.
constexpr guint kRelayCandidateHoldMs = 500;

bool is_relay_candidate(const std::string& sdp) {
  return sdp.find(" typ relay") != std::string::npos;
}

}  // namespace

Tunnel::Tunnel(Role role, uint64_t session_id, std::string remote_label,
               const Identity& identity, const IceSession::Options& ice_options,
               TargetPolicy target_policy, Hooks hooks)
    : role_(role),
      session_id_(session_id),
      remote_label_(std::move(remote_label)),
      identity_(identity),
      ice_options_(ice_options),
      target_policy_(std::move(target_policy)),
      hooks_(std::move(hooks)) {
  started_us_ = g_get_monotonic_time();
  setup_timer_ = g_timeout_add_seconds(kSetupTimeoutSeconds, on_setup_timeout, this);
}

Tunnel::~Tunnel() {
  if (setup_timer_) g_source_remove(setup_timer_);
  if (relay_hold_timer_) g_source_remove(relay_hold_timer_);
  if (reap_idle_) g_source_remove(reap_idle_);
  for (auto& pending : pending_) {
    g_io_stream_close(G_IO_STREAM(pending.tcp), nullptr, nullptr);
    g_object_unref(pending.tcp);
  }
  bridges_.clear();
  finished_bridges_.clear();
  quic_.reset();
  ice_.reset();
}

void Tunnel::create_ice(bool controlling) {
  IceSession::Options options = ice_options_;
  options.controlling = controlling;
  IceSession::Callbacks callbacks;
  callbacks.on_local_candidate = [this](const std::string& sdp) { send_candidate(sdp, false); };
  callbacks.on_gathering_done = [this] { send_candidate("", true); };
  callbacks.on_datagram = [this](std::span<const std::byte> datagram) {
    if (quic_) quic_->receive(datagram);
  };
  callbacks.on_selected_pair = [this](const SelectedPath& path) {
    path_ = path;
    have_path_ = true;
    log::debug("%s: selected pair %s", remote_label_.c_str(), path.describe().c_str());
    if (role_ == Role::kConnecting && !quic_) {
      // Start the QUIC client only now: an Initial written earlier would wait in the
      // ICE queue, and QUIC would count that wait as its first RTT sample.
      create_quic();
      quic_->flush();
    }
    if (established_) print_path_line();
  };
  callbacks.on_writable = [this] {
    if (quic_) quic_->resume_write();
  };
  callbacks.on_failed = [this](const std::string& reason) {
    // Before QUIC is up this is the end of the attempt. Afterwards libnice reports
    // FAILED when the other side simply went away; QUIC's own close or idle timeout
    // decides then (NOTES-transport.md).
    if (!established_) fail(reason);
  };
  ice_ = std::make_unique<IceSession>(options, std::move(callbacks));
  relay_hold_timer_ = g_timeout_add(kRelayCandidateHoldMs, on_relay_hold_over, this);
}

gboolean Tunnel::on_relay_hold_over(gpointer self) {
  auto* tunnel = static_cast<Tunnel*>(self);
  tunnel->relay_hold_timer_ = 0;
  tunnel->relay_hold_over_ = true;
  for (const auto& sdp : tunnel->held_local_) tunnel->send_candidate(sdp, false);
  tunnel->held_local_.clear();
  if (tunnel->held_local_done_) tunnel->send_candidate("", true);
  return G_SOURCE_REMOVE;
}

void Tunnel::create_quic() {
  quic::Config config;
  config.is_server = role_ == Role::kServing;
  config.identity = &identity_;
  config.verify_remote_key = [this](const PublicKey& key) {
    // The certificate must carry the key the rendezvous exchange announced, and pass
    // the owner's policy (pinning/authorisation) if it has one.
    if (key != expected_remote_key_) {
      log::warn("%s: remote certificate key %s is not the announced key %s; refusing",
                remote_label_.c_str(), key_fingerprint(key).c_str(),
                key_fingerprint(expected_remote_key_).c_str());
      return false;
    }
    if (hooks_.authorize_key && !hooks_.authorize_key(key)) return false;
    return true;
  };
  quic_ = std::make_unique<quic::Driver>(config, *this, [this](std::span<const std::byte> d) {
    return ice_ ? ice_->send(d) : true;
  });
}

void Tunnel::start_outgoing(const std::string& target_name) {
  create_ice(true);
  wire::Envelope envelope;
  auto* open = envelope.mutable_open_session();
  open->set_session_id(session_id_);
  open->set_target(target_name);
  const auto [ufrag, pwd] = ice_->local_credentials();
  open->mutable_ice()->set_ufrag(ufrag);
  open->mutable_ice()->set_pwd(pwd);
  hooks_.send_to_relay(envelope);
  ice_->start_gathering();
}

void Tunnel::start_incoming(const wire::IncomingSession& incoming) {
  if (!public_key_from_bytes(
          std::span(reinterpret_cast<const uint8_t*>(incoming.caller_key().data()),
                    incoming.caller_key().size()),
          expected_remote_key_)) {
    fail("the relay announced no valid key for the caller");
    return;
  }
  create_ice(false);
  ice_->set_remote_credentials(incoming.ice().ufrag(), incoming.ice().pwd());
  remote_credentials_set_ = true;
  create_quic();
  wire::Envelope envelope;
  auto* accept = envelope.mutable_accept_session();
  accept->set_session_id(session_id_);
  const auto [ufrag, pwd] = ice_->local_credentials();
  accept->mutable_ice()->set_ufrag(ufrag);
  accept->mutable_ice()->set_pwd(pwd);
  hooks_.send_to_relay(envelope);
  ice_->start_gathering();
}

void Tunnel::relay_link_lost() {
  if (!closed_ && !remote_credentials_set_)
    fail("the relay link was lost while waiting for the peer's answer");
}

void Tunnel::on_relay_message(const wire::Envelope& envelope) {
  if (closed_) return;
  switch (envelope.msg_case()) {
    case wire::Envelope::kAcceptSession: {
      const auto& accept = envelope.accept_session();
      if (role_ != Role::kConnecting || remote_credentials_set_ || !ice_) return;
      if (!public_key_from_bytes(
              std::span(reinterpret_cast<const uint8_t*>(accept.callee_key().data()),
                        accept.callee_key().size()),
              expected_remote_key_)) {
        fail("the relay announced no valid key for " + remote_label_);
        return;
      }
      log::info("%s: peer found (key %s), connecting", remote_label_.c_str(),
                key_id(expected_remote_key_).c_str());
      ice_->set_remote_credentials(accept.ice().ufrag(), accept.ice().pwd());
      remote_credentials_set_ = true;
      for (const auto& sdp : early_candidates_) ice_->add_remote_candidate(sdp);
      early_candidates_.clear();
      // The QUIC client starts once ICE has selected a pair (see on_selected_pair).
      break;
    }
    case wire::Envelope::kCandidate: {
      const auto& candidate = envelope.candidate();
      if (!ice_) return;
      if (candidate.end_of_candidates()) {
        ice_->remote_gathering_done();
      } else {
        apply_remote_candidate(candidate.sdp());
      }
      break;
    }
    case wire::Envelope::kCloseSession: {
      // Once QUIC runs, the tunnel does not depend on the relay any more.
      if (established_) return;
      const auto& close_session = envelope.close_session();
      std::string reason = close_session.detail();
      if (reason.empty()) {
        reason = close_session.reason() == wire::CloseSession::NO_SUCH_PEER
                     ? "no peer named " + remote_label_ + " is registered at the relay"
                     : "the relay closed the session";
      }
      fail(reason);
      break;
    }
    default:
      break;
  }
}

void Tunnel::apply_remote_candidate(const std::string& sdp) {
  if (!remote_credentials_set_) {
    if (early_candidates_.size() < 64) early_candidates_.push_back(sdp);
  } else if (!ice_->add_remote_candidate(sdp)) {
    log::warn_limited("bad candidate", "%s: ignoring a candidate libnice cannot parse",
                      remote_label_.c_str());
  }
}

void Tunnel::send_candidate(const std::string& sdp, bool end_of_candidates) {
  if (closed_) return;
  if (!relay_hold_over_) {
    if (end_of_candidates && !held_local_.empty()) {
      held_local_done_ = true;
      return;
    }
    if (!end_of_candidates && is_relay_candidate(sdp)) {
      held_local_.push_back(sdp);
      return;
    }
  }
  wire::Envelope envelope;
  auto* candidate = envelope.mutable_candidate();
  candidate->set_session_id(session_id_);
  candidate->set_sdp(sdp);
  candidate->set_end_of_candidates(end_of_candidates);
  hooks_.send_to_relay(envelope);
}

void Tunnel::forward(GSocketConnection* tcp, const HostPort& target) {
  if (closed_ || pending_.size() >= kMaxPendingForwards) {
    log::warn("%s: too many connections waiting for the tunnel; refusing one",
              remote_label_.c_str());
    reset_connection(tcp);
    return;
  }
  pending_.push_back({G_SOCKET_CONNECTION(g_object_ref(tcp)), target});
  if (established_) open_pending_streams();
}

void Tunnel::open_pending_streams() {
  size_t opened = 0;
  for (; opened < pending_.size(); ++opened) {
    auto stream_id = quic_->connection().open_stream();
    if (!stream_id) break;  // the remote's stream limit; retried when streams close
    auto& pending = pending_[opened];
    std::string prefix = remote_label_ + " stream " + std::to_string(*stream_id);
    bridges_[*stream_id] = StreamBridge::connecting(
        quic_->connection(), *stream_id, pending.tcp, pending.target, prefix,
        [this](int64_t id) { bridge_done(id); }, [this] { quic_->flush(); });
    g_object_unref(pending.tcp);
  }
  pending_.erase(pending_.begin(), pending_.begin() + static_cast<ptrdiff_t>(opened));
}

void Tunnel::bridge_done(int64_t stream_id) {
  auto it = bridges_.find(stream_id);
  if (it == bridges_.end()) return;
  // Not destroyed here: we are inside one of its own calls.
  finished_bridges_.push_back(std::move(it->second));
  bridges_.erase(it);
  if (!reap_idle_) reap_idle_ = g_idle_add(on_reap_bridges, this);
}

gboolean Tunnel::on_reap_bridges(gpointer self) {
  auto* tunnel = static_cast<Tunnel*>(self);
  tunnel->reap_idle_ = 0;
  tunnel->finished_bridges_.clear();
  return G_SOURCE_REMOVE;
}

// ---- QUIC observer -----------------------------------------------------------------

void Tunnel::on_handshake_complete(const PublicKey&) {
  established_ = true;
  if (setup_timer_) {
    g_source_remove(setup_timer_);
    setup_timer_ = 0;
  }
  const double setup_ms = static_cast<double>(g_get_monotonic_time() - started_us_) / 1000.0;
  log::info("%s: tunnel up in %.0f ms (key %s)", remote_label_.c_str(), setup_ms,
            key_id(expected_remote_key_).c_str());
  print_path_line();
  if (role_ == Role::kServing) {
    // The relay can forget the session now. The server completes the handshake after
    // the client (RFC 9001 section 4.1.2), so the forwarded close cannot reach a client
    // that still needs the session.
    wire::Envelope envelope;
    envelope.mutable_close_session()->set_session_id(session_id_);
    envelope.mutable_close_session()->set_reason(wire::CloseSession::NORMAL);
    envelope.mutable_close_session()->set_detail("tunnel established");
    hooks_.send_to_relay(envelope);
  }
  if (hooks_.on_established) hooks_.on_established(*this);
  open_pending_streams();
  if (pair_done_ && pair_stream_ < 0) send_pairing_request();
}

void Tunnel::print_path_line() {
  if (!have_path_ || !quic_) return;
  const auto rtt_ms = quic_->connection().stats().min_rtt / 1000000;
  std::string line = "path " + remote_label_ + ": ";
  if (path_.relayed) {
    if (!path_.local_relay_server.empty()) {
      line += "relayed via " + (hooks_.relay_label ? hooks_.relay_label(path_.local_relay_server)
                                                   : "turn " + path_.local_relay_server);
    } else {
      // Only the other side is relayed; which transport it uses is its to say.
      line += "relayed via remote relay " + path_.remote_address;
    }
  } else {
    line += path_.describe();
  }
  line += ", rtt " + std::to_string(rtt_ms) + " ms";
  if (line == last_path_line_) return;
  last_path_line_ = line;
  log::ready("%s", line.c_str());
}

void Tunnel::on_remote_stream_opened(int64_t stream_id) {
  if (role_ != Role::kServing) {
    // Only the connecting side opens streams; anything else is a protocol error.
    quic_->connection().stream_reset(stream_id, 2);
    return;
  }
  std::string prefix = remote_label_ + " stream " + std::to_string(stream_id);
  bridges_[stream_id] = StreamBridge::serving(
      quic_->connection(), stream_id, target_policy_, hooks_.pair, prefix,
      [this](int64_t id) { bridge_done(id); }, [this] { quic_->flush(); });
}

void Tunnel::request_pairing(const std::string& secret, PairDone done) {
  pair_secret_ = secret;
  pair_done_ = std::move(done);
  if (established_) send_pairing_request();
}

void Tunnel::send_pairing_request() {
  auto stream_id = quic_->connection().open_stream();
  if (!stream_id) {
    auto done = std::move(pair_done_);
    done(false, "the serving peer accepts no stream");
    return;
  }
  pair_stream_ = *stream_id;
  wire::StreamOpen open;
  open.set_pair_secret(pair_secret_);
  std::vector<std::byte> frame;
  wire::encode_message(open, frame);
  quic_->connection().stream_write(pair_stream_, frame);
  quic_->connection().stream_shutdown_write(pair_stream_);
  quic_->flush();
}

void Tunnel::pairing_answer(std::span<const std::byte> data, bool fin) {
  quic_->connection().stream_consumed(pair_stream_, data.size());
  pair_answer_.insert(pair_answer_.end(), data.begin(), data.end());
  auto result = wire::decode_frame(pair_answer_, 4096);
  if (result.status == wire::DecodeStatus::kNeedMore && !fin) return;
  auto done = std::move(pair_done_);
  pair_done_ = nullptr;
  wire::StreamOpenResult answer;
  if (result.status != wire::DecodeStatus::kComplete || !wire::parse_message(result.payload, answer)) {
    if (done) done(false, "no valid answer from the serving peer");
    return;
  }
  if (done) done(answer.status() == wire::StreamOpenResult::OK, answer.detail());
}

void Tunnel::on_stream_data(int64_t stream_id, std::span<const std::byte> data, bool fin) {
  if (stream_id == pair_stream_ && pair_stream_ >= 0) {
    pairing_answer(data, fin);
    return;
  }
  auto it = bridges_.find(stream_id);
  if (it == bridges_.end()) {
    // A stream we already finished: give the credit back so the connection-level
    // window does not shrink.
    quic_->connection().stream_consumed(stream_id, data.size());
    return;
  }
  it->second->on_stream_data(data, fin);
}

void Tunnel::on_stream_reset(int64_t stream_id, uint64_t app_error) {
  auto it = bridges_.find(stream_id);
  if (it != bridges_.end()) it->second->on_stream_reset(app_error);
}

void Tunnel::on_stream_send_space(int64_t stream_id) {
  auto it = bridges_.find(stream_id);
  if (it != bridges_.end()) it->second->on_stream_send_space();
}

void Tunnel::on_stream_closed(int64_t stream_id) {
  auto it = bridges_.find(stream_id);
  if (it != bridges_.end()) it->second->on_stream_closed();
}

void Tunnel::on_streams_available() {
  if (established_ && !pending_.empty()) open_pending_streams();
}

void Tunnel::on_connection_closed(const std::string& reason) {
  fail(established_ ? "tunnel closed: " + reason : "QUIC handshake failed: " + reason);
}

// ---- teardown ----------------------------------------------------------------------

gboolean Tunnel::on_setup_timeout(gpointer self) {
  auto* tunnel = static_cast<Tunnel*>(self);
  tunnel->setup_timer_ = 0;
  std::string phase;
  if (!tunnel->remote_credentials_set_) phase = "waiting for the peer's answer via the relay";
  else if (!tunnel->have_path_) phase = "ICE checks (no candidate pair works)";
  else phase = "the QUIC handshake";
  tunnel->fail("no tunnel after " + std::to_string(kSetupTimeoutSeconds) + " s: stuck in " +
               phase);
  return G_SOURCE_REMOVE;
}

void Tunnel::close(const std::string& reason) {
  if (closed_) return;
  // Driver::close sends CONNECTION_CLOSE before it returns, so the other side
  // learns at once even though the driver is destroyed right after.
  if (quic_) quic_->close(0, reason);
  fail(reason);
}

void Tunnel::fail(const std::string& reason) {
  if (closed_) return;
  closed_ = true;
  if (setup_timer_) {
    g_source_remove(setup_timer_);
    setup_timer_ = 0;
  }
  // abort() reports back through bridge_done, which edits bridges_: walk a copy.
  std::vector<StreamBridge*> open;
  for (auto& [id, bridge] : bridges_) open.push_back(bridge.get());
  for (StreamBridge* bridge : open) bridge->abort(reason);
  for (auto& pending : pending_) {
    // Reset, so the client does not take the close for a complete (empty) reply.
    reset_connection(pending.tcp);
    g_object_unref(pending.tcp);
  }
  pending_.clear();
  if (!established_) {
    wire::Envelope envelope;
    envelope.mutable_close_session()->set_session_id(session_id_);
    envelope.mutable_close_session()->set_reason(wire::CloseSession::NORMAL);
    envelope.mutable_close_session()->set_detail(reason);
    hooks_.send_to_relay(envelope);
  }
  if (pair_done_) {
    auto done = std::move(pair_done_);
    pair_done_ = nullptr;
    done(false, reason);
  }
  if (hooks_.on_closed) hooks_.on_closed(*this, reason);
}

}  // namespace natfwd
