#include "tunnel/tunnel_core.h"

#include "log.h"

namespace natfwd {

TunnelCore::TunnelCore(Options options, Io& io) : options_(std::move(options)), io_(io) {
  options_.quic.is_server = options_.role == Role::kServing;
}

TunnelCore::~TunnelCore() {
  // Streams hold a reference to the connection: they go first.
  streams_.clear();
  finished_.clear();
  waiting_.clear();
  quic_.reset();
}

void TunnelCore::start(quic::Timestamp now) {
  if (quic_) return;
  quic_ = std::make_unique<quic::Connection>(options_.quic, *this, now);
  io_.wake();
}

void TunnelCore::receive(std::span<const std::byte> datagram, quic::Timestamp now) {
  if (!quic_) return;
  reap_finished();
  quic_->receive(datagram, now);
  if (++received_since_write_ >= kWriteEveryDatagrams)
    io_.write_due();
  else
    io_.wake();
}

void TunnelCore::write(quic::Timestamp now) {
  if (!quic_) return;
  reap_finished();
  received_since_write_ = 0;
  quic_->write(now, [this](std::span<const std::byte> datagram) {
    return io_.send_datagram(datagram);
  });
  io_.end_of_pass();
}

void TunnelCore::handle_expiry(quic::Timestamp now) {
  if (!quic_) return;
  reap_finished();
  quic_->handle_expiry(now);
}

quic::Timestamp TunnelCore::next_deadline() const {
  return quic_ ? quic_->expiry() : quic::kNever;
}

void TunnelCore::move_to_new_path(quic::Timestamp now) {
  if (!quic_) return;
  quic_->move_to_new_path(now);
  io_.wake();
}

void TunnelCore::close(const std::string& reason) {
  if (!quic_) return;
  quic_->close(0, reason);
  io_.wake();
}

void TunnelCore::reap_finished() { finished_.clear(); }

TunnelStream::Context TunnelCore::stream_context() {
  TunnelStream::Context context;
  context.quic = quic_.get();
  context.wake = [this] { io_.wake(); };
  context.done = [this](int64_t id) { stream_done(id); };
  context.refused = [this](const std::string& refusal) { last_refusal_ = refusal; };
  return context;
}

bool TunnelCore::forward(std::unique_ptr<LocalEndpoint> endpoint, const HostPort& target,
                         OpenResultHandler on_result) {
  if (waiting_.size() >= options_.max_waiting) {
    log::warn("%s: too many connections waiting for a stream; refusing one",
              options_.log_label.c_str());
    if (on_result) on_result(kOpenFailedLocally, "too many connections waiting for the tunnel");
    endpoint->close(/*reset=*/!on_result);
    return false;
  }
  waiting_.push_back({std::move(endpoint), target, std::move(on_result)});
  if (established_) open_waiting_streams();
  return true;
}

void TunnelCore::open_waiting_streams() {
  size_t opened = 0;
  for (; opened < waiting_.size(); ++opened) {
    auto stream_id = quic_->open_stream();
    if (!stream_id) break;  // the remote's stream limit; retried when streams close
    auto& waiting = waiting_[opened];
    streams_[*stream_id] = TunnelStream::connecting(
        stream_context(), *stream_id, std::move(waiting.endpoint), waiting.target,
        options_.log_label + " stream " + std::to_string(*stream_id),
        std::move(waiting.on_result));
  }
  waiting_.erase(waiting_.begin(), waiting_.begin() + static_cast<ptrdiff_t>(opened));
}

void TunnelCore::stream_done(int64_t stream_id) {
  auto it = streams_.find(stream_id);
  if (it == streams_.end()) return;
  // Not destroyed here: we are inside one of its own calls.
  finished_.push_back(std::move(it->second));
  streams_.erase(it);
  io_.on_stream_finished();
}

void TunnelCore::abort(const std::string& reason) {
  // abort() reports back through stream_done, which edits streams_: walk a copy.
  std::vector<TunnelStream*> open;
  for (auto& [id, stream] : streams_) open.push_back(stream.get());
  for (TunnelStream* stream : open) stream->abort(reason);
  auto waiting = std::move(waiting_);
  waiting_.clear();
  for (auto& w : waiting) {
    if (w.on_result) {
      w.on_result(kOpenFailedLocally, reason);  // it tells its client why
      w.endpoint->close(false);
    } else {
      // Reset, so the client does not take the close for a complete (empty) reply.
      w.endpoint->close(true);
    }
  }
  if (pair_done_) {
    auto done = std::move(pair_done_);
    pair_done_ = nullptr;
    done(false, reason);
  }
  std::vector<int64_t> requests;
  for (const auto& [id, exchange] : exchanges_) requests.push_back(id);
  for (int64_t id : requests) exchange_over(id, reason);
}

// ---- pairing and punching: one request stream each ------------------------------

void TunnelCore::request_pairing(const std::string& secret, PairDone done) {
  pair_secret_ = secret;
  pair_done_ = std::move(done);
  if (established_) send_pairing_request();
}

void TunnelCore::send_pairing_request() {
  auto done = std::move(pair_done_);
  pair_done_ = nullptr;
  start_exchange(StreamOpening::pairing(pair_secret_), [done](const StreamDecision& answer) {
    done(answer.status == static_cast<int>(wire::StreamStatus::kOk), answer.detail);
  });
}

void TunnelCore::request_punch(const wire::PunchOffer& offer, ExchangeDone done) {
  if (!established_) {
    done(StreamDecision{kOpenFailedLocally, "the tunnel is not up", std::nullopt});
    return;
  }
  start_exchange(StreamOpening::punching(offer), std::move(done));
}

void TunnelCore::start_exchange(StreamOpening opening, ExchangeDone done) {
  auto stream_id = quic_->open_stream();
  if (!stream_id) {
    done(StreamDecision{kOpenFailedLocally, "the serving peer accepts no stream", std::nullopt});
    return;
  }
  auto& exchange = exchanges_[*stream_id];
  exchange.opening = std::make_unique<StreamOpening>(std::move(opening));
  exchange.done = std::move(done);
  quic_->stream_write(*stream_id, exchange.opening->request());
  quic_->stream_shutdown_write(*stream_id);
  io_.wake();
}

void TunnelCore::exchange_data(int64_t stream_id, std::span<const std::byte> data, bool fin) {
  quic_->stream_consumed(stream_id, data.size());
  auto it = exchanges_.find(stream_id);
  if (it == exchanges_.end() || it->second.opening->decided()) return;
  switch (it->second.opening->receive(data, fin)) {
    case StreamOpening::Outcome::kWaiting:
      return;
    case StreamOpening::Outcome::kAnswered: {
      auto exchange = std::move(it->second);
      exchanges_.erase(it);
      exchange.done(exchange.opening->decision());
      return;
    }
    default:
      exchange_over(stream_id, "no valid answer from the serving peer");
      return;
  }
}

void TunnelCore::exchange_over(int64_t stream_id, const std::string& why) {
  auto it = exchanges_.find(stream_id);
  if (it == exchanges_.end()) return;
  auto exchange = std::move(it->second);
  exchanges_.erase(it);
  exchange.done(StreamDecision{kOpenFailedLocally, why, std::nullopt});
}

// ---- QUIC observer -----------------------------------------------------------------

void TunnelCore::on_handshake_complete(const PublicKey&) {
  established_ = true;
  io_.on_established();
  if (!quic_ || quic_->closed()) return;
  open_waiting_streams();
  if (pair_done_) send_pairing_request();
}

void TunnelCore::on_remote_stream_opened(int64_t stream_id) {
  if (options_.role != Role::kServing) {
    // Only the connecting side opens streams; anything else is a protocol error.
    quic_->stream_reset(stream_id, wire::kStreamErrorRefused);
    return;
  }
  streams_[stream_id] = TunnelStream::serving(
      stream_context(), stream_id, options_.target_policy, options_.pair, options_.punch,
      options_.connector,
      options_.log_label + " stream " + std::to_string(stream_id));
}

void TunnelCore::on_stream_data(int64_t stream_id, std::span<const std::byte> data, bool fin) {
  if (exchanges_.count(stream_id)) {
    exchange_data(stream_id, data, fin);
    return;
  }
  auto it = streams_.find(stream_id);
  if (it == streams_.end()) {
    // A stream we already finished: give the credit back so the connection-level
    // window does not shrink.
    quic_->stream_consumed(stream_id, data.size());
    return;
  }
  it->second->on_stream_data(data, fin);
}

void TunnelCore::on_stream_reset(int64_t stream_id, uint64_t app_error) {
  if (exchanges_.count(stream_id)) {
    exchange_over(stream_id, "the serving peer reset the request");
    return;
  }
  auto it = streams_.find(stream_id);
  if (it != streams_.end()) it->second->on_stream_reset(app_error);
}

void TunnelCore::on_stream_send_space(int64_t stream_id) {
  auto it = streams_.find(stream_id);
  if (it != streams_.end()) it->second->on_stream_send_space();
}

void TunnelCore::on_stream_closed(int64_t stream_id) {
  if (exchanges_.count(stream_id)) {
    exchange_over(stream_id, "no valid answer from the serving peer");
    return;
  }
  auto it = streams_.find(stream_id);
  if (it != streams_.end()) it->second->on_stream_closed();
}

void TunnelCore::on_streams_available() {
  if (established_ && !waiting_.empty()) open_waiting_streams();
}

void TunnelCore::on_connection_closed(const std::string& reason) { io_.on_closed(reason); }

}  // namespace natfwd
