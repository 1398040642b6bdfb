// One stream of a tunnel as the tunnel core runs it: the stream-open negotiation
// (StreamOpening), then the bytes between the QUIC stream and the stream's
// LocalEndpoint, with their flow control, half close and reset. No I/O of its own.
//
//   local -> QUIC: the endpoint reads only while the stream accepts data, so a slow
//                  remote reader stops local reads (backpressure to the TCP sender).
//   QUIC -> local: bytes are handed back to QUIC as consumed only once the endpoint
//                  delivered them, so a slow local reader stops the remote sender
//                  through QUIC flow control.
//   local EOF -> FIN, FIN -> local write shut: half close works both ways.
//   local failure -> RESET_STREAM; RESET_STREAM -> local reset.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "quic/quic_connection.h"
#include "tunnel/local_endpoint.h"
#include "tunnel/stream_opening.h"

namespace natfwd {

class TunnelStream final : public LocalEndpoint::Stream {
 public:
  // What every stream of one tunnel shares.
  struct Context {
    quic::Connection* quic = nullptr;
    // Something was written to QUIC: a write pass is due.
    std::function<void()> wake;
    // The stream is finished (both ways done, or failed); called once. The owner
    // destroys the stream later, never inside the call.
    std::function<void(int64_t stream_id)> done;
    // Connecting side: the serving peer refused a stream; "TARGET: STATUS: DETAIL".
    std::function<void(const std::string& refusal)> refused;
  };

  // Connecting side: carries `endpoint` to `target`; the header goes out at once, and
  // the endpoint starts reading (its first bytes travel with the header).
  static std::unique_ptr<TunnelStream> connecting(const Context& context, int64_t stream_id,
                                                  std::unique_ptr<LocalEndpoint> endpoint,
                                                  const HostPort& target,
                                                  std::string log_prefix,
                                                  OpenResultHandler on_result);
  // Serving side: the other side opened `stream_id`; its header decides.
  static std::unique_ptr<TunnelStream> serving(const Context& context, int64_t stream_id,
                                               TargetPolicy policy, PairHandler pair,
                                               PunchHandler punch, LocalConnector* connector,
                                               std::string log_prefix);
  ~TunnelStream() override;
  TunnelStream(const TunnelStream&) = delete;
  TunnelStream& operator=(const TunnelStream&) = delete;

  // From the tunnel's QUIC observer.
  void on_stream_data(std::span<const std::byte> data, bool fin);
  void on_stream_reset(uint64_t app_error);
  void on_stream_send_space();
  void on_stream_closed() { stream_closed_ = true; }
  // The tunnel is gone: reset the local side.
  void abort(const std::string& reason);

  int64_t stream_id() const { return stream_id_; }

  // LocalEndpoint::Stream
  bool send(std::span<const std::byte> data) override;
  void send_end() override;
  void delivered(size_t bytes) override;
  void write_shut() override;
  void failed(const std::string& why) override;

 private:
  enum class Role { kConnecting, kServing };
  enum class Phase { kOpening, kConnectingTarget, kForwarding, kDone };
  TunnelStream(Role role, const Context& context, int64_t stream_id, StreamOpening opening,
               std::string log_prefix);

  void opening_decided(StreamOpening::Outcome outcome);
  void target_connected(LocalConnector::Result result);
  void start_forwarding(std::vector<std::byte> received);
  void send_result(int status, const std::string& detail);
  void refuse(const StreamDecision& decision);
  void write_to_stream(std::span<const std::byte> data);
  void drain_to_quic();
  void maybe_finish();
  void finish(bool reset_local);
  void report_open_result(int status, const std::string& detail);

  Role role_;
  Phase phase_ = Phase::kOpening;
  Context context_;
  quic::Connection& quic_;
  int64_t stream_id_;
  StreamOpening opening_;
  std::string log_prefix_;
  LocalConnector* connector_ = nullptr;
  std::unique_ptr<LocalConnector::Attempt> attempt_;
  std::unique_ptr<LocalEndpoint> endpoint_;
  OpenResultHandler on_result_;
  bool has_result_handler_ = false;
  bool open_result_reported_ = false;
  std::string abort_reason_;

  std::vector<std::byte> held_;      // serving: data received while the target connects
  std::vector<std::byte> to_quic_;   // from the endpoint, not yet accepted by QUIC
  bool local_eof_ = false;           // the local side stopped sending
  bool fin_sent_ = false;
  bool quic_fin_received_ = false;
  bool write_shut_ = false;
  bool stream_closed_ = false;
  // Cleared by the destructor: a connect result that arrives later is dropped.
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

}  // namespace natfwd
