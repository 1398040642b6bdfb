#include "tunnel/tunnel_stream.h"

#include "log.h"

namespace natfwd {
namespace {

constexpr int kStatusOk = static_cast<int>(wire::StreamStatus::kOk);

}  // namespace

TunnelStream::TunnelStream(Role role, const Context& context, int64_t stream_id,
                           StreamOpening opening, std::string log_prefix)
    : role_(role),
      context_(context),
      quic_(*context.quic),
      stream_id_(stream_id),
      opening_(std::move(opening)),
      log_prefix_(std::move(log_prefix)) {}

TunnelStream::~TunnelStream() { *alive_ = false; }

std::unique_ptr<TunnelStream> TunnelStream::connecting(const Context& context, int64_t stream_id,
                                                       std::unique_ptr<LocalEndpoint> endpoint,
                                                       const HostPort& target,
                                                       std::string log_prefix,
                                                       OpenResultHandler on_result) {
  std::unique_ptr<TunnelStream> stream(new TunnelStream(
      Role::kConnecting, context, stream_id, StreamOpening::connecting(target),
      std::move(log_prefix)));
  stream->has_result_handler_ = static_cast<bool>(on_result);
  stream->on_result_ = std::move(on_result);
  stream->write_to_stream(stream->opening_.request());
  // Read the client's first bytes at once (optimistic): they travel with the header
  // and the serving side holds them until the target is connected.
  stream->endpoint_ = std::move(endpoint);
  stream->endpoint_->start(*stream);
  stream->context_.wake();
  return stream;
}

std::unique_ptr<TunnelStream> TunnelStream::serving(const Context& context, int64_t stream_id,
                                                    TargetPolicy policy, PairHandler pair,
                                                    PunchHandler punch,
                                                    LocalConnector* connector,
                                                    std::string log_prefix) {
  std::unique_ptr<TunnelStream> stream(new TunnelStream(
      Role::kServing, context, stream_id,
      StreamOpening::serving(std::move(policy), std::move(pair), std::move(punch)),
      std::move(log_prefix)));
  stream->connector_ = connector;
  return stream;
}

void TunnelStream::write_to_stream(std::span<const std::byte> data) {
  if (!to_quic_.empty()) {
    to_quic_.insert(to_quic_.end(), data.begin(), data.end());
    return;
  }
  const size_t accepted = quic_.stream_write(stream_id_, data);
  to_quic_.insert(to_quic_.end(), data.begin() + static_cast<ptrdiff_t>(accepted), data.end());
}

// ---- QUIC -> this stream ---------------------------------------------------------

void TunnelStream::on_stream_data(std::span<const std::byte> data, bool fin) {
  if (phase_ == Phase::kDone) {
    quic_.stream_consumed(stream_id_, data.size());
    return;
  }
  if (fin) quic_fin_received_ = true;
  switch (phase_) {
    case Phase::kOpening:
      opening_decided(opening_.receive(data, fin));
      return;
    case Phase::kConnectingTarget:
      held_.insert(held_.end(), data.begin(), data.end());
      return;
    case Phase::kForwarding:
      if (!data.empty()) endpoint_->receive(data);
      if (fin && phase_ == Phase::kForwarding) endpoint_->receive_end();
      return;
    case Phase::kDone:
      return;
  }
}

void TunnelStream::opening_decided(StreamOpening::Outcome outcome) {
  using Outcome = StreamOpening::Outcome;
  if (outcome == Outcome::kWaiting) return;
  const StreamDecision& decision = opening_.decision();
  quic_.stream_consumed(stream_id_, opening_.header_size());
  switch (outcome) {
    case Outcome::kWaiting:
      return;
    case Outcome::kRefuse:
      if (opening_.bad_header()) {
        log::warn_limited("bad stream header", "%s: bad stream header: %s", log_prefix_.c_str(),
                          decision.detail.c_str());
      } else if (!opening_.target().host.empty()) {
        log::warn("%s: refused %s: %s (%s)", log_prefix_.c_str(),
                  opening_.target().to_string().c_str(), wire::stream_status_text(decision.status),
                  decision.detail.c_str());
      }
      refuse(decision);
      return;
    case Outcome::kConnect: {
      held_ = opening_.take_rest();
      phase_ = Phase::kConnectingTarget;
      if (!connector_) {
        refuse(StreamOpening::connect_failed(false, "no connector"));
        return;
      }
      std::weak_ptr<bool> alive = alive_;
      attempt_ = connector_->connect(opening_.target(), [this, alive](LocalConnector::Result result) {
        auto still = alive.lock();
        if (still && *still) target_connected(std::move(result));
      });
      return;
    }
    case Outcome::kAnswered:
      report_open_result(decision.status, decision.detail);
      if (phase_ == Phase::kDone) return;  // the handler gave up on the connection
      if (decision.status != kStatusOk) {
        const std::string refusal =
            opening_.target().to_string() + ": " + wire::stream_status_text(decision.status) +
            (decision.detail.empty() ? "" : ": " + decision.detail);
        log::warn("%s: %s refused: %s%s%s", log_prefix_.c_str(),
                  opening_.target().to_string().c_str(), wire::stream_status_text(decision.status),
                  decision.detail.empty() ? "" : ": ", decision.detail.c_str());
        if (context_.refused) context_.refused(refusal);
        finish(true);
        return;
      }
      log::debug("%s: connected to %s", log_prefix_.c_str(),
                 opening_.target().to_string().c_str());
      start_forwarding(opening_.take_rest());
      return;
    case Outcome::kBroken:
      log::warn("%s: %s", log_prefix_.c_str(), decision.detail.c_str());
      abort_reason_ = decision.detail;
      finish(true);
      return;
  }
}

void TunnelStream::target_connected(LocalConnector::Result result) {
  if (phase_ != Phase::kConnectingTarget) return;
  if (!result.endpoint) {
    log::warn("%s: cannot connect %s: %s", log_prefix_.c_str(),
              opening_.target().to_string().c_str(), result.error.c_str());
    refuse(StreamOpening::connect_failed(result.unresolved, result.error));
    return;
  }
  log::debug("%s: connected %s", log_prefix_.c_str(), opening_.target().to_string().c_str());
  send_result(kStatusOk, "");
  endpoint_ = std::move(result.endpoint);
  endpoint_->start(*this);
  start_forwarding(std::move(held_));
  context_.wake();
}

void TunnelStream::start_forwarding(std::vector<std::byte> received) {
  phase_ = Phase::kForwarding;
  if (!received.empty()) endpoint_->receive(received);
  if (quic_fin_received_ && phase_ == Phase::kForwarding) endpoint_->receive_end();
}

void TunnelStream::send_result(int status, const std::string& detail) {
  write_to_stream(wire::encode_stream_open_result(status, detail));
}

// Serving side: tells the connecting side why (or answers a pairing request), ends our
// direction and ignores what the other side still sends.
void TunnelStream::refuse(const StreamDecision& decision) {
  write_to_stream(wire::encode_stream_open_result(
      decision.status, decision.detail, decision.punch ? &*decision.punch : nullptr));
  if (to_quic_.empty()) {
    quic_.stream_shutdown_write(stream_id_);
    fin_sent_ = true;
  }
  context_.wake();
  finish(false);
}

void TunnelStream::on_stream_reset(uint64_t app_error) {
  if (phase_ == Phase::kDone) return;
  log::info("%s: reset by the other side (code %llu)", log_prefix_.c_str(),
            static_cast<unsigned long long>(app_error));
  finish(true);
}

void TunnelStream::drain_to_quic() {
  if (!to_quic_.empty()) {
    const size_t accepted = quic_.stream_write(stream_id_, to_quic_);
    to_quic_.erase(to_quic_.begin(), to_quic_.begin() + static_cast<ptrdiff_t>(accepted));
  }
  if (to_quic_.empty() && (local_eof_ || phase_ == Phase::kDone) && !fin_sent_) {
    quic_.stream_shutdown_write(stream_id_);
    fin_sent_ = true;
  }
}

void TunnelStream::on_stream_send_space() {
  if (phase_ == Phase::kDone) {
    // A refusal's answer that did not fit at once.
    if (role_ == Role::kServing && !to_quic_.empty()) drain_to_quic();
    return;
  }
  drain_to_quic();
  if (to_quic_.empty() && endpoint_ && !local_eof_) endpoint_->on_send_space();
  maybe_finish();
}

void TunnelStream::abort(const std::string& reason) {
  if (phase_ == Phase::kDone) return;
  abort_reason_ = reason;
  log::debug("%s: aborted: %s", log_prefix_.c_str(), reason.c_str());
  finish(true);
}

// ---- the endpoint -> this stream ---------------------------------------------------

bool TunnelStream::send(std::span<const std::byte> data) {
  if (phase_ == Phase::kDone || local_eof_) return false;
  write_to_stream(data);
  context_.wake();
  return to_quic_.empty();
}

void TunnelStream::send_end() {
  if (phase_ == Phase::kDone || local_eof_) return;
  local_eof_ = true;
  drain_to_quic();
  context_.wake();
  maybe_finish();
}

void TunnelStream::delivered(size_t bytes) {
  quic_.stream_consumed(stream_id_, bytes);
  context_.wake();
}

void TunnelStream::write_shut() {
  write_shut_ = true;
  maybe_finish();
}

void TunnelStream::failed(const std::string& why) {
  if (phase_ == Phase::kDone) return;
  log::info("%s: connection reset (%s)", log_prefix_.c_str(), why.c_str());
  quic_.stream_reset(stream_id_, wire::kStreamErrorTcpReset);
  context_.wake();
  finish(true);
}

// ---- the end -------------------------------------------------------------------------

void TunnelStream::maybe_finish() {
  if (phase_ == Phase::kForwarding && fin_sent_ && write_shut_) finish(false);
}

void TunnelStream::report_open_result(int status, const std::string& detail) {
  if (!on_result_ || open_result_reported_) return;
  open_result_reported_ = true;
  on_result_(status, detail);
  if (status != kStatusOk) on_result_ = nullptr;
}

void TunnelStream::finish(bool reset_local) {
  if (phase_ == Phase::kDone) return;
  // A handler has told the client why a stream never got going; a reset could
  // destroy that answer before the client reads it.
  const bool told_client = has_result_handler_ && phase_ != Phase::kForwarding;
  const bool was_forwarding = phase_ == Phase::kForwarding;
  phase_ = Phase::kDone;
  attempt_.reset();
  report_open_result(kOpenFailedLocally,
                     abort_reason_.empty() ? "the stream ended before the serving peer answered"
                                           : abort_reason_);
  if (was_forwarding && reset_local && on_result_) {
    auto handler = std::move(on_result_);
    on_result_ = nullptr;
    handler(kStreamBroken, abort_reason_.empty() ? "the stream was reset" : abort_reason_);
  }
  if (endpoint_) endpoint_->close(reset_local && !told_client);
  if (reset_local && !stream_closed_ && !(fin_sent_ && role_ == Role::kServing)) {
    quic_.stream_reset(stream_id_, role_ == Role::kConnecting ? wire::kStreamErrorRefused
                                                              : wire::kStreamErrorTcpReset);
    context_.wake();
  }
  if (context_.done) context_.done(stream_id_);
}

}  // namespace natfwd
