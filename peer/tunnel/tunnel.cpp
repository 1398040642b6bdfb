#include "tunnel/tunnel.h"

#include <exception>

#include <openssl/rand.h>

#include "log.h"
#include "tcp_reset.h"

namespace natfwd {
namespace {

// ICE plus the QUIC handshake must be done within this time, or the attempt fails
// with the phase it was in.
constexpr guint kSetupTimeoutSeconds = 30;
// A path restart must have a working pair within this time, or it is given up (the
// owner then tries a fresh tunnel).
constexpr guint kRestartTimeoutSeconds = 15;
// TCP connections held while the tunnel is being set up.
constexpr size_t kMaxPendingForwards = 256;
// Connecting side: while the serving side's punch probe runs (a few round trips to
// the relay), its offer is asked for again this often, this many times.
constexpr guint kPunchAskIntervalMs = 300;
constexpr int kPunchAsks = 10;
// The punched path is given up when nothing came over it for this long: QUIC sends a
// PING after 1 s without traffic (quic::Config::keepalive_interval), so 3 s is three
// missed keepalives.
constexpr gint64 kPunchSilenceUs = 3'000'000;
constexpr guint kPunchCheckMs = 500;
// Serving side: a connecting peer that has not offered a punch this long after our
// probe finished will not (it has no RFC 5780 relay, or is older): the socket goes.
constexpr guint kPunchOfferWaitMs = 10'000;
// Connecting side: after a punched path was lost (a NAT's mapping timed out, a router
// restarted, the network changed) the tunnel is relayed again; a new search follows
// this long after, doubling each time up to the cap, as long as it stays relayed. A
// search costs up to punch::Limits' sockets and probes for a few seconds.
constexpr guint kRepunchFirstMs = 10'000;
constexpr guint kRepunchMaxMs = 600'000;

// What a timeout or idle source of a Tunnel calls.
struct SourceCall {
  Tunnel* tunnel;
  void (Tunnel::*member)();
};

void delete_source_call(gpointer data) { delete static_cast<SourceCall*>(data); }

TunnelCore::Options core_options(Tunnel::Role role, const std::string& remote_label,
                                 const Identity& identity,
                                 std::function<bool(const PublicKey&)> verify_remote_key,
                                 TargetPolicy target_policy, PairHandler pair,
                                 PunchHandler punch, LocalConnector& connector) {
  TunnelCore::Options options;
  options.role = role == Tunnel::Role::kServing ? TunnelCore::Role::kServing
                                                : TunnelCore::Role::kConnecting;
  options.quic.identity = &identity;
  options.quic.verify_remote_key = std::move(verify_remote_key);
  options.log_label = remote_label;
  options.target_policy = std::move(target_policy);
  options.pair = std::move(pair);
  options.punch = std::move(punch);
  options.connector = &connector;
  options.max_waiting = kMaxPendingForwards;
  return options;
}

}  // namespace

Tunnel::Tunnel(Role role, uint64_t session_id, std::string remote_label,
               const Identity& identity, const IceSession::Options& ice_options,
               TargetPolicy target_policy, Hooks hooks)
    : role_(role),
      first_session_id_(session_id),
      remote_label_(std::move(remote_label)),
      ice_options_(ice_options),
      hooks_(std::move(hooks)),
      core_(core_options(
                role, remote_label_, identity,
                [this](const PublicKey& key) { return verify_remote_key(key); },
                std::move(target_policy), hooks_.pair,
                [this](const wire::PunchOffer& offer) { return answer_punch(offer); },
                hooks_.connector ? *hooks_.connector : connector_),
            *this),
      loop_(core_) {
  started_us_ = g_get_monotonic_time();
  last_receive_us_ = started_us_;
  setup_timer_ = add_timeout(kSetupTimeoutSeconds, &Tunnel::setup_timed_out);
}

Tunnel::~Tunnel() {
  punch_timer_.reset();
  punch_.reset();
  setup_timer_.reset();
  restart_timer_.reset();
  drop_old_idle_.reset();
  for (auto& pending : pending_) {
    g_io_stream_close(G_IO_STREAM(pending.tcp), nullptr, nullptr);
    g_object_unref(pending.tcp);
  }
  next_leg_.reset();
  leg_.reset();
  old_legs_.clear();
}

GSourcePtr Tunnel::attach_source(GSource* raw, void (Tunnel::*member)()) {
  GSourcePtr source(raw);
  g_source_set_callback(source.get(), &Tunnel::on_source, new SourceCall{this, member},
                        delete_source_call);
  g_source_attach(source.get(), nullptr);
  return source;
}

GSourcePtr Tunnel::add_timeout(guint seconds, void (Tunnel::*member)()) {
  return attach_source(g_timeout_source_new_seconds(seconds), member);
}

GSourcePtr Tunnel::add_timeout_ms(guint ms, void (Tunnel::*member)()) {
  return attach_source(g_timeout_source_new(ms), member);
}

GSourcePtr Tunnel::add_idle(void (Tunnel::*member)()) {
  return attach_source(g_idle_source_new(), member);
}

gboolean Tunnel::on_source(gpointer data) {
  // GLib keeps the callback data until the dispatch returns, even when the member
  // destroys its own source.
  const auto* call = static_cast<SourceCall*>(data);
  try {
    (call->tunnel->*call->member)();
  } catch (const std::exception& e) {
    log::error("%s: %s", call->tunnel->remote_label_.c_str(), e.what());
  } catch (...) {
    log::error("%s: unknown exception in a timer", call->tunnel->remote_label_.c_str());
  }
  return G_SOURCE_REMOVE;
}

std::unique_ptr<IceLeg> Tunnel::make_leg(uint64_t session_id,
                                         const IceSession::Options& ice_options,
                                         bool controlling) {
  IceSession::Options options = ice_options;
  options.controlling = controlling;
  IceLeg::Callbacks callbacks;
  callbacks.send_to_relay = [this](const wire::Envelope& envelope) {
    if (!closed_) hooks_.send_to_relay(envelope);
  };
  callbacks.on_datagram = [this](std::span<const std::byte> datagram) { on_datagram(datagram); };
  callbacks.on_selected_pair = [this](IceLeg& leg) { on_leg_selected_pair(&leg); };
  callbacks.on_writable = [this](IceLeg& leg) {
    if (core_.started() && &leg == leg_.get()) loop_.resume_write();
  };
  callbacks.on_failed = [this](IceLeg& leg, const std::string& reason) {
    on_leg_failed(&leg, reason);
  };
  callbacks.on_checking = [this](IceLeg& leg) {
    if (&leg == leg_.get()) progress(ConnectPhase::kChecks);
  };
  return std::make_unique<IceLeg>(session_id, options, std::move(callbacks));
}


bool Tunnel::verify_remote_key(const PublicKey& key) {
  // The certificate must carry the key the rendezvous exchange announced, and pass
  // the owner's policy (pinning/authorisation) if it has one.
  if (key != expected_remote_key_) {
    log::warn("%s: remote certificate key %s is not the announced key %s; refusing",
              remote_label_.c_str(), key_fingerprint(key).c_str(),
              key_fingerprint(expected_remote_key_).c_str());
    key_refused_ = true;
    return false;
  }
  if (hooks_.authorize_key && !hooks_.authorize_key(key)) {
    key_refused_ = true;
    return false;
  }
  return true;
}

void Tunnel::start_quic() {
  core_.start(CoreLoop::now());
  loop_.write_now();  // the client's Initial
}

void Tunnel::on_datagram(std::span<const std::byte> datagram) {
  // From the current leg, a restarting one or the punched path: QUIC does not care
  // which path a packet took (it checks every one).
  last_receive_us_ = g_get_monotonic_time();
  if (!core_.started()) return;
  core_.receive(datagram, CoreLoop::now());
  if (path_line_pending_) print_path_line();
}

bool Tunnel::send_datagram(std::span<const std::byte> datagram) {
  if (punched_) {
    punch_->send(datagram);
    return true;
  }
  if (!leg_ || leg_->ice().send(datagram)) return true;
  loop_.blocked();
  return false;
}

void Tunnel::end_of_pass() {
  if (punched_)
    punch_->flush();
  else if (leg_)
    leg_->ice().flush_sends();
}

void Tunnel::start_outgoing(const std::string& target_name, const std::string& pairing_proof) {
  target_name_ = target_name;
  progress_.emplace(target_name);
  progress(ConnectPhase::kRelay);
  leg_ = make_leg(first_session_id_, ice_options_, /*controlling=*/true);
  wire::Envelope envelope;
  auto* open = envelope.mutable_open_session();
  open->set_session_id(first_session_id_);
  open->set_target(target_name);
  *open->mutable_ice() = leg_->local_params();
  if (!pairing_proof.empty()) open->set_pairing_proof(pairing_proof);
  hooks_.send_to_relay(envelope);
  leg_->start_gathering();
}

void Tunnel::start_incoming(const wire::IncomingSession& incoming) {
  if (!public_key_from_bytes(
          std::span(reinterpret_cast<const uint8_t*>(incoming.caller_key().data()),
                    incoming.caller_key().size()),
          expected_remote_key_)) {
    fail("the relay announced no valid key for the caller");
    return;
  }
  leg_ = make_leg(first_session_id_, ice_options_, /*controlling=*/false);
  leg_->set_remote_params(incoming.ice());
  start_quic();
  wire::Envelope envelope;
  auto* accept = envelope.mutable_accept_session();
  accept->set_session_id(first_session_id_);
  *accept->mutable_ice() = leg_->local_params();
  hooks_.send_to_relay(envelope);
  leg_->start_gathering();
}

IceLeg* Tunnel::leg_for(uint64_t session_id) {
  if (leg_ && leg_->session_id() == session_id) return leg_.get();
  if (next_leg_ && next_leg_->session_id() == session_id) return next_leg_.get();
  return nullptr;
}

void Tunnel::on_relay_message(const wire::Envelope& envelope) {
  if (closed_) return;
  switch (envelope.msg_case()) {
    case wire::Envelope::kAcceptSession: {
      const auto& accept = envelope.accept_session();
      IceLeg* leg = leg_for(accept.session_id());
      if (role_ != Role::kConnecting || !leg || leg->has_remote_params()) return;
      PublicKey callee{};
      if (!public_key_from_bytes(
              std::span(reinterpret_cast<const uint8_t*>(accept.callee_key().data()),
                        accept.callee_key().size()),
              callee)) {
        if (leg == next_leg_.get()) restart_failed("the relay announced no valid key");
        else fail("the relay announced no valid key for " + remote_label_);
        return;
      }
      if (leg == next_leg_.get()) {
        // The new path must lead to the peer this QUIC connection already proved.
        if (callee != expected_remote_key_) {
          restart_failed("the relay announced another key for " + remote_label_);
          return;
        }
        log::info("%s: peer answered the path restart", remote_label_.c_str());
        leg->set_remote_params(accept.ice());
      } else {
        expected_remote_key_ = callee;
        progress(ConnectPhase::kPeerFound, "(key " + key_id(expected_remote_key_) + ")");
        progress(ConnectPhase::kGathering);
        leg->set_remote_params(accept.ice());
      }
      // The QUIC client starts once ICE has selected a pair (see on_leg_selected_pair).
      break;
    }
    case wire::Envelope::kCandidate: {
      if (IceLeg* leg = leg_for(envelope.candidate().session_id()))
        leg->on_candidate(envelope.candidate());
      break;
    }
    case wire::Envelope::kCloseSession: {
      const auto& close_session = envelope.close_session();
      std::string reason = close_session.detail();
      if (next_leg_ && close_session.session_id() == next_leg_->session_id()) {
        // The other side's new path works; ours is about to (or the timer says no).
        if (close_session.reason() == wire::CloseSession::ESTABLISHED) return;
        restart_failed(reason.empty() ? "the relay closed the restart session" : reason);
        return;
      }
      // Once QUIC runs, the tunnel does not depend on the relay any more.
      if (established_) return;
      if (close_session.reason() == wire::CloseSession::NO_SUCH_PEER) {
        peer_not_registered_ = true;
        reason = ConnectProgress::no_such_peer(remote_label_);
      } else if (close_session.reason() == wire::CloseSession::REFUSED && role_ == Role::kConnecting) {
        reason = ConnectProgress::refused(remote_label_, reason);
      } else if (close_session.reason() == wire::CloseSession::NORMAL &&
                 role_ == Role::kConnecting && progress_ &&
                 progress_->phase() >= ConnectPhase::kChecks && leg_ &&
                 leg_->has_remote_params() && !leg_->has_path()) {
        // The other side's checks gave up first (its setup timer ran out). Its reason
        // speaks from its side and knows nothing of ours (--force-relay, our TURN
        // allocations): the user gets this side's diagnosis.
        reason = ConnectProgress::ice_failed(leg_->local_relay_candidates(),
                                             leg_->remote_relay_candidates(),
                                             ice_options_.force_relay) +
                 " (" + remote_label_ + " gave up first)";
      } else if (reason.empty()) {
        reason = "the relay closed the session";
      }
      fail(reason);
      break;
    }
    default:
      break;
  }
}

void Tunnel::on_leg_selected_pair(IceLeg* leg) {
  log::debug("%s: selected pair %s (session %016" G_GINT64_MODIFIER "x)", remote_label_.c_str(),
             leg->path().describe().c_str(), leg->session_id());
  if (leg == next_leg_.get()) {
    // The restart found a path: QUIC moves over, the old leg goes.
    const uint64_t old_session = leg_->session_id();
    old_legs_.push_back(std::move(leg_));
    leg_ = std::move(next_leg_);
    restart_timer_.reset();
    drop_old_legs_later();
    restart_failures_ = 0;
    log::info("%s: path restarted in %.0f ms; %zu open connection(s) carried over",
              remote_label_.c_str(),
              static_cast<double>(g_get_monotonic_time() - restart_started_us_) / 1000.0,
              core_.open_streams());
    if (role_ == Role::kServing) {
      // As after the first handshake: the relay can forget the session now.
      wire::Envelope envelope;
      envelope.mutable_close_session()->set_session_id(leg_->session_id());
      envelope.mutable_close_session()->set_reason(wire::CloseSession::ESTABLISHED);
      envelope.mutable_close_session()->set_detail("path restarted");
      hooks_.send_to_relay(envelope);
    }
    if (hooks_.on_session_moved) hooks_.on_session_moved(*this, old_session);
    // A restart follows a network change: the punched path's addresses are gone too,
    // and the new network's NAT may punch where the old one did not.
    const bool punch_tried = punch_done_ || punch_ || punch_timer_;
    punched_ = false;
    punch_.reset();
    if (!repunch_pending_) {  // a lost punched path may have scheduled one already
      punch_timer_.reset();
      if (punch_tried) schedule_repunch();
    }
    if (core_.started()) core_.move_to_new_path(CoreLoop::now());
    print_path_line();
    return;
  }
  if (leg != leg_.get()) return;
  progress(ConnectPhase::kQuicHandshake);
  if (role_ == Role::kConnecting && !core_.started()) {
    // Start the QUIC client only now: an Initial written earlier would wait in the
    // ICE queue, and QUIC would count that wait as its first RTT sample.
    start_quic();
  }
  if (established_) print_path_line();
}

void Tunnel::on_leg_failed(IceLeg* leg, const std::string& reason) {
  if (leg == next_leg_.get()) {
    restart_failed("ICE failed on the new path: " + reason);
    return;
  }
  // Before QUIC is up this is the end of the attempt. Afterwards libnice reports
  // FAILED when the other side simply went away; QUIC's own close or idle timeout
  // decides then (NOTES-transport.md).
  if (leg != leg_.get() || established_) return;
  if (progress_ && progress_->phase() >= ConnectPhase::kChecks)
    fail(ConnectProgress::ice_failed(leg->local_relay_candidates(),
                                     leg->remote_relay_candidates(), ice_options_.force_relay));
  else
    fail(reason);
}

void Tunnel::restart_path(uint64_t session_id, const IceSession::Options& options) {
  if (closed_ || !established_ || role_ != Role::kConnecting || next_leg_) return;
  restart_started_us_ = g_get_monotonic_time();
  next_leg_ = make_leg(session_id, options, /*controlling=*/true);
  wire::Envelope envelope;
  auto* open = envelope.mutable_open_session();
  open->set_session_id(session_id);
  open->set_target(target_name_);
  *open->mutable_ice() = next_leg_->local_params();
  open->set_resumes_session(leg_->session_id());
  hooks_.send_to_relay(envelope);
  next_leg_->start_gathering();
  restart_timer_ = add_timeout(kRestartTimeoutSeconds, &Tunnel::restart_timed_out);
}

void Tunnel::accept_restart(const wire::IncomingSession& incoming,
                            const IceSession::Options& options) {
  if (closed_ || !established_ || role_ != Role::kServing) return;
  if (next_leg_) {
    // A newer restart supersedes one still in progress (the other side gave up on it).
    send_close_session(next_leg_->session_id(), "superseded by a newer path restart");
    old_legs_.push_back(std::move(next_leg_));
    drop_old_legs_later();
  }
  restart_started_us_ = g_get_monotonic_time();
  next_leg_ = make_leg(incoming.session_id(), options, /*controlling=*/false);
  next_leg_->set_remote_params(incoming.ice());
  wire::Envelope envelope;
  auto* accept = envelope.mutable_accept_session();
  accept->set_session_id(incoming.session_id());
  *accept->mutable_ice() = next_leg_->local_params();
  hooks_.send_to_relay(envelope);
  next_leg_->start_gathering();
  restart_timer_ = add_timeout(kRestartTimeoutSeconds, &Tunnel::restart_timed_out);
  log::info("%s: restarting the path (%s)", remote_label_.c_str(),
            incoming.caller_address().c_str());
}

void Tunnel::restart_failed(const std::string& reason) {
  if (!next_leg_) return;
  send_close_session(next_leg_->session_id(), reason);
  old_legs_.push_back(std::move(next_leg_));
  drop_old_legs_later();
  restart_timer_.reset();
  log::warn("%s: path restart failed: %s", remote_label_.c_str(), reason.c_str());
  restart_failed_us_ = g_get_monotonic_time();
  ++restart_failures_;
  if (hooks_.on_restart_failed) hooks_.on_restart_failed(*this, reason);
}

void Tunnel::restart_timed_out() {
  restart_timer_.reset();
  restart_failed("no working pair after " + std::to_string(kRestartTimeoutSeconds) + " s");
}

void Tunnel::drop_old_legs_later() {
  if (!drop_old_idle_) drop_old_idle_ = add_idle(&Tunnel::drop_old_legs);
}

void Tunnel::drop_old_legs() {
  drop_old_idle_.reset();
  old_legs_.clear();
}

void Tunnel::send_close_session(uint64_t session_id, const std::string& detail) {
  wire::Envelope envelope;
  envelope.mutable_close_session()->set_session_id(session_id);
  envelope.mutable_close_session()->set_reason(wire::CloseSession::NORMAL);
  envelope.mutable_close_session()->set_detail(detail);
  hooks_.send_to_relay(envelope);
}

void Tunnel::forward(GSocketConnection* tcp, const HostPort& target,
                     OpenResultHandler on_result, std::string first_bytes,
                     std::shared_ptr<TrafficMeter> meter) {
  if (closed_ || pending_.size() + core_.waiting() >= kMaxPendingForwards) {
    log::warn("%s: too many connections waiting for the tunnel; refusing one",
              remote_label_.c_str());
    if (on_result) on_result(kOpenFailedLocally, "too many connections waiting for the tunnel");
    else reset_connection(tcp);
    return;
  }
  pending_.push_back({G_SOCKET_CONNECTION(g_object_ref(tcp)), target, std::move(on_result),
                      std::move(first_bytes), std::move(meter)});
  if (established_) forward_pending();
}

void Tunnel::forward_pending() {
  auto pending = std::move(pending_);
  pending_.clear();
  for (auto& forward : pending) {
    core_.forward(std::make_unique<StreamBridge>(forward.tcp, std::move(forward.first_bytes),
                                                 std::move(forward.meter)),
                  forward.target,
                  std::move(forward.on_result));
    g_object_unref(forward.tcp);
  }
}

void Tunnel::on_stream_finished() {
  if (retired_ && core_.open_streams() == 0 && core_.waiting() == 0 && pending_.empty())
    close(retire_reason_);
}

void Tunnel::retire(const std::string& why) {
  if (closed_ || retired_) return;
  retired_ = true;
  retire_reason_ = why;
  if (core_.open_streams() == 0 && core_.waiting() == 0 && pending_.empty()) close(why);
}

// ---- the core's events ---------------------------------------------------------------

void Tunnel::on_established() {
  established_ = true;
  established_us_ = g_get_monotonic_time();
  setup_timer_.reset();
  const double setup_ms = static_cast<double>(g_get_monotonic_time() - started_us_) / 1000.0;
  if (progress_ && leg_ && leg_->has_path()) {
    const SelectedPath& path = leg_->path();
    std::string how = path.relayed ? "relayed " + path.transport : "direct " + path.transport;
    if (path.relayed && !path.local_relay_server.empty() && hooks_.relay_label)
      how += " via " + hooks_.relay_label(path.local_relay_server);
    char ms[32];
    snprintf(ms, sizeof ms, "%.0f", setup_ms);
    progress(ConnectPhase::kConnected, how + " in " + ms + " ms");
  } else {
    log::info("%s: tunnel up in %.0f ms (key %s)", remote_label_.c_str(), setup_ms,
              key_id(expected_remote_key_).c_str());
  }
  print_path_line();
  if (role_ == Role::kServing) {
    // The relay can forget the session now. The server completes the handshake after
    // the client (RFC 9001 section 4.1.2), so the forwarded close cannot reach a client
    // that still needs the session.
    send_close_session(leg_->session_id(), "tunnel established");
  }
  if (hooks_.on_established) hooks_.on_established(*this);
  forward_pending();
  if (!closed_ && leg_ && leg_->has_path() && leg_->path().relayed) start_punch_probe();
}

void Tunnel::print_path_line() {
  if (!leg_ || !leg_->has_path() || !core_.started()) return;
  const auto stats = core_.connection()->stats();
  if (!stats.rtt_sampled) {
    // Right after a path restart: print once the new path has an RTT of its own.
    path_line_pending_ = true;
    return;
  }
  path_line_pending_ = false;
  const SelectedPath& path_ = leg_->path();
  const auto rtt_ms = stats.min_rtt / 1000000;
  std::string line = "path " + remote_label_ + ": ";
  if (punched_) {
    line += punched_path().describe();
  } else if (path_.relayed) {
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

void Tunnel::request_pairing(const std::string& secret, PairDone done) {
  core_.request_pairing(secret, std::move(done));
}

void Tunnel::on_closed(const std::string& reason) {
  closed_in_order_ = core_.connection() && core_.connection()->closed_in_order();
  if (established_) fail("tunnel closed: " + reason);
  else if (key_refused_) fail(ConnectProgress::key_mismatch(remote_label_));
  else fail("QUIC handshake failed: " + reason);
}

void Tunnel::progress(ConnectPhase phase, const std::string& detail) {
  if (!progress_) return;
  auto line = progress_->reach(phase, detail);
  if (!line) return;
  // The handshake usually takes one round trip: not worth a line of its own.
  if (phase == ConnectPhase::kQuicHandshake) log::debug("%s", line->c_str());
  else log::info("%s", line->c_str());
}

TunnelStatus Tunnel::status() const {
  TunnelStatus status;
  status.name = remote_label_;
  status.role = role_ == Role::kConnecting ? "connecting" : "serving";
  status.state = closed_ ? "closed" : established_ ? (next_leg_ ? "restarting path" : "up")
                                                  : "connecting";
  if (established_ || role_ == Role::kServing || (leg_ && leg_->has_remote_params()))
    status.key_id = key_id(expected_remote_key_);
  status.have_path = leg_ && leg_->has_path();
  if (status.have_path) status.path = punched_ ? punched_path() : leg_->path();
  if (status.have_path && status.path.relayed && !status.path.local_relay_server.empty())
    status.turn_server = hooks_.relay_label ? hooks_.relay_label(status.path.local_relay_server)
                                            : "turn " + status.path.local_relay_server;
  if (core_.started()) {
    const auto stats = core_.connection()->stats();
    status.smoothed_rtt_ms = static_cast<double>(stats.smoothed_rtt) / 1e6;
    status.min_rtt_ms = static_cast<double>(stats.min_rtt) / 1e6;
    status.stream_bytes_sent = stats.stream_bytes_sent;
    status.stream_bytes_received = stats.stream_bytes_received;
    status.udp_bytes_sent = stats.bytes_sent;
    status.udp_bytes_received = stats.bytes_received;
    status.open_streams = stats.open_streams;
    status.cwnd_bytes = stats.cwnd;
    status.bytes_in_flight = stats.bytes_in_flight;
    status.delivery_rate_bytes_per_s = stats.delivery_rate;
  }
  if (established_)
    status.uptime_s = static_cast<double>(g_get_monotonic_time() - established_us_) / 1e6;
  status.last_refusal = core_.last_refusal();
  return status;
}

// ---- hard-NAT punching ------------------------------------------------------------

void Tunnel::start_punch_probe() {
  if (punch_ || punch_done_ || closed_ || !ice_options_.punch) return;
  punch::PunchLeg::Callbacks callbacks;
  callbacks.on_probed = [this](punch::PunchLeg&) { punch_probed(); };
  callbacks.on_won = [this](punch::PunchLeg&) { punch_won(); };
  callbacks.on_failed = [this](punch::PunchLeg&, const std::string& why) { punch_failed(why); };
  callbacks.on_datagram = [this](std::span<const std::byte> datagram) { on_datagram(datagram); };
  punch_ = std::make_unique<punch::PunchLeg>(ice_options_.stun_server.ip,
                                             ice_options_.stun_server.port, punch::Limits(),
                                             std::move(callbacks));
  if (!punch_->probe()) {
    punch_.reset();
    punch_done_ = true;
    log::debug("%s: no punch: no IPv4 STUN server to probe the NAT against",
               remote_label_.c_str());
  }
}

void Tunnel::punch_probed() {
  if (closed_) return;
  if (role_ == Role::kServing) {
    punch_timer_ = add_timeout_ms(kPunchOfferWaitMs, &Tunnel::punch_not_offered);
    return;
  }
  // The attempt's session id and key: fresh, and seen only inside the tunnel.
  uint64_t session_id = 0;
  punch::PunchKey key{};
  if (RAND_bytes(reinterpret_cast<unsigned char*>(&session_id), sizeof session_id) != 1 ||
      RAND_bytes(key.data(), static_cast<int>(key.size())) != 1) {
    punch_failed("no random bytes for the punch key");
    return;
  }
  punch_offer_ = punch::make_offer(punch_->endpoint_dependent(), punch_->public_address(),
                                   session_id, &key);
  ask_punch();
}

void Tunnel::ask_punch() {
  punch_timer_.reset();
  if (closed_ || punch_done_ || !punch_offer_) return;
  ++punch_asks_;
  core_.request_punch(*punch_offer_, [this](const StreamDecision& answer) {
    punch_answered(answer);
  });
}

void Tunnel::punch_answered(const StreamDecision& answer) {
  if (closed_ || punch_done_) return;
  if (answer.status == static_cast<int>(wire::StreamStatus::kOk) && answer.punch) {
    begin_punch(*punch_offer_, *answer.punch, *punch_offer_);
    return;
  }
  if (answer.detail == punch::kPunchNotReady && punch_asks_ < kPunchAsks) {
    punch_timer_ = add_timeout_ms(kPunchAskIntervalMs, &Tunnel::ask_punch);
    return;
  }
  punch_failed(answer.detail.empty() ? "the other side does not punch" : answer.detail);
}

StreamDecision Tunnel::answer_punch(const wire::PunchOffer& offer) {
  auto refusal = [](std::string why) {
    return StreamDecision{static_cast<int>(wire::StreamStatus::kNotServed), std::move(why),
                          std::nullopt};
  };
  if (!ice_options_.punch) return refusal("punching is off here");
  // A new offer while we still use a punched path: the other side lost it (its
  // silence check, a network change) and searches again. We leave it from the loop,
  // not from inside the stream's callback (which runs within QUIC's packet
  // processing), and the other side asks again shortly.
  if (punched_) {
    punch_timer_ = add_timeout_ms(0, &Tunnel::leave_punched_for_new_offer);
    return refusal(std::string(punch::kPunchNotReady));
  }
  if (punch_done_) return refusal("no punch on this tunnel");
  start_punch_probe();
  if (!punch_ || punch_done_) return refusal("no punch on this tunnel");
  if (!punch_->probed()) return refusal(std::string(punch::kPunchNotReady));
  const wire::PunchOffer local = punch::make_offer(
      punch_->endpoint_dependent(), punch_->public_address(), offer.session_id(), nullptr);
  begin_punch(local, offer, offer);
  StreamDecision answer;
  answer.punch = local;
  return answer;
}

void Tunnel::begin_punch(const wire::PunchOffer& local, const wire::PunchOffer& remote,
                         const wire::PunchOffer& key_offer) {
  punch_done_ = true;
  punch_timer_.reset();
  const punch::PlanOutcome outcome = punch::plan_punch(local, remote, key_offer);
  if (!outcome.plan) {
    punch_failed(outcome.why_not);
    return;
  }
  log::info("%s: punching a direct path as the %s side toward %s", remote_label_.c_str(),
            std::string(punch::to_string(outcome.plan->role)).c_str(),
            outcome.plan->remote.to_string().c_str());
  punch_->start(*outcome.plan);
}

void Tunnel::punch_won() {
  if (closed_ || !core_.started()) return;
  punched_ = true;
  const auto* counters = punch_->counters();
  log::info("%s: punched a direct path %s <-> %s after %d socket(s), %d probe(s); moving the "
            "tunnel (%zu open connection(s)) onto it",
            remote_label_.c_str(), punch_->local_address().c_str(),
            punch_->remote_address().c_str(), counters ? counters->sockets_opened : 0,
            counters ? counters->probes_sent : 0, core_.open_streams());
  core_.move_to_new_path(CoreLoop::now());
  loop_.resume_write();
  print_path_line();
  punch_timer_ = add_timeout_ms(kPunchCheckMs, &Tunnel::check_punched_path);
}

void Tunnel::punch_failed(const std::string& why) {
  punch_done_ = true;
  log::info("%s: no punched path: %s", remote_label_.c_str(), why.c_str());
  // Its sockets go from a timer: this may be the leg's own callback.
  punch_timer_ = add_timeout_ms(0, &Tunnel::drop_punch);
}

void Tunnel::punch_not_offered() {
  punch_timer_.reset();
  if (!punch_done_) punch_failed("the other side offered no punch");
}

void Tunnel::drop_punch() {
  punch_timer_.reset();
  if (punched_) return;
  punch_.reset();
  // A birthday search can miss by chance (1024 probes at the hard side's 256 mappings
  // among ~64k ports miss about 1.7 % of the time), and a refusal or a plan that saw
  // no chance may not hold once either side's network changes: search again, backing
  // off as after a lost punched path.
  schedule_repunch();
}

void Tunnel::check_punched_path() {
  punch_timer_.reset();
  if (!punched_ || closed_) return;
  if (g_get_monotonic_time() - punch_->last_receive_us() > kPunchSilenceUs) {
    leave_punched_path("nothing came over it for " + std::to_string(kPunchSilenceUs / 1000000) +
                       " s");
    return;
  }
  punch_timer_ = add_timeout_ms(kPunchCheckMs, &Tunnel::check_punched_path);
}

void Tunnel::leave_punched_path(const std::string& why) {
  punched_ = false;
  log::warn("%s: punched path lost (%s); back to the ICE path", remote_label_.c_str(),
            why.c_str());
  core_.move_to_new_path(CoreLoop::now());
  loop_.resume_write();
  print_path_line();
  punch_.reset();  // from our own timer, not the leg's callback
  schedule_repunch();
}

void Tunnel::leave_punched_for_new_offer() {
  punch_timer_.reset();
  if (punched_ && !closed_) leave_punched_path("the other side punches again");
}

void Tunnel::schedule_repunch() {
  punch_done_ = false;
  punch_offer_.reset();
  punch_asks_ = 0;
  punch_timer_.reset();
  // The serving side answers the connecting side's next offer (answer_punch).
  if (role_ != Role::kConnecting || closed_ || !ice_options_.punch) return;
  if (repunch_delay_ms_ == 0) repunch_delay_ms_ = kRepunchFirstMs;
  log::info("%s: punching again in %u s if the tunnel is still relayed then",
            remote_label_.c_str(), repunch_delay_ms_ / 1000);
  punch_timer_ = add_timeout_ms(repunch_delay_ms_, &Tunnel::repunch);
  repunch_pending_ = true;
  repunch_delay_ms_ = std::min(repunch_delay_ms_ * 2, kRepunchMaxMs);
}

void Tunnel::repunch() {
  punch_timer_.reset();
  repunch_pending_ = false;
  if (closed_ || punched_ || punch_ || punch_done_) return;
  if (leg_ && leg_->has_path() && leg_->path().relayed) start_punch_probe();
}

SelectedPath Tunnel::punched_path() const {
  SelectedPath path;
  path.relayed = false;
  path.transport = "udp";
  path.local_type = path.remote_type = "punched";
  path.local_address = punch_->local_address();
  path.remote_address = punch_->remote_address();
  return path;
}

// ---- teardown ----------------------------------------------------------------------

void Tunnel::setup_timed_out() {
  setup_timer_.reset();
  const std::string after = " (gave up after " + std::to_string(kSetupTimeoutSeconds) + " s)";
  const IceLeg* leg = leg_.get();
  if (!leg || !leg->has_remote_params()) {
    fail("no answer from the peer through the relay" + after);
  } else if (!leg->has_path()) {
    fail(ConnectProgress::ice_failed(leg->local_relay_candidates(),
                                     leg->remote_relay_candidates(), ice_options_.force_relay) +
         after);
  } else {
    fail("QUIC handshake did not complete" + after);
  }
}

void Tunnel::close(const std::string& reason) {
  if (closed_) return;
  closed_in_order_ = true;
  // The CONNECTION_CLOSE goes out before this returns, so the other side learns at
  // once even though the tunnel is destroyed right after.
  if (core_.started()) {
    core_.close(reason);
    loop_.write_now();
  }
  fail(reason);
}

void Tunnel::fail(const std::string& cause) {
  if (closed_) return;
  closed_ = true;
  punch_timer_.reset();
  // The connecting side names the phase that failed: this sentence is what the user
  // sees (in the log, and from nc).
  const std::string reason =
      progress_ && !established_ ? progress_->failure(cause) : cause;
  setup_timer_.reset();
  core_.abort(reason);
  if (!established_ && !pending_.empty() && hooks_.rescue_pending &&
      hooks_.rescue_pending(*this, pending_)) {
    pending_.clear();
  }
  for (auto& pending : pending_) {
    if (pending.on_result) {
      pending.on_result(kOpenFailedLocally, reason);  // it tells its client why
      g_io_stream_close(G_IO_STREAM(pending.tcp), nullptr, nullptr);
    } else {
      // Reset, so the client does not take the close for a complete (empty) reply.
      reset_connection(pending.tcp);
    }
    g_object_unref(pending.tcp);
  }
  pending_.clear();
  // Sessions the relay still keeps: setup (the serving side closes it once the
  // handshake is done) and a path restart in progress.
  if (!established_) send_close_session(session_id(), reason);
  if (next_leg_) send_close_session(next_leg_->session_id(), reason);
  restart_timer_.reset();
  if (hooks_.on_closed) hooks_.on_closed(*this, reason);
}

}  // namespace natfwd
