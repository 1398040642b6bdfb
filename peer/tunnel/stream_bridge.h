// One forwarded TCP connection carried on one bidirectional QUIC stream.
//
// The connecting side (-L) writes a StreamOpen frame first and waits for the serving
// side's StreamOpenResult before it delivers anything to its TCP client; the serving
// side reads StreamOpen, checks the target against its --serve list, connects, and
// answers. After that the stream carries the raw bytes both ways:
//
//   TCP -> QUIC: read only while the stream accepts data (stream_write), so a slow
//                remote reader stops our TCP reads (backpressure to the TCP sender).
//   QUIC -> TCP: bytes are handed back to QUIC as consumed only once the TCP socket
//                took them, so a slow local reader stops the remote sender through
//                QUIC flow control. Neither side buffers more than one window. The
//                bytes of one batch of datagrams go to TCP in one write.
//   EOF -> FIN, FIN -> shutdown(SHUT_WR): half-close works both ways.
//   TCP reset -> RESET_STREAM; RESET_STREAM -> TCP reset (SO_LINGER 0).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include <gio/gio.h>

#include "address.h"
#include "quic/quic_connection.h"

namespace natfwd {

// The serving side's answer to a stream's first frame: status 0 (StreamOpenResult::OK)
// to go ahead, else a StreamOpenResult status and why.
struct StreamDecision {
  int status = 0;
  std::string detail;
};
// May the serving side connect this target (the --serve allowlist, authorisation)?
using TargetPolicy = std::function<StreamDecision(const HostPort& target)>;
// A pairing request (StreamOpen.pair_secret) from the other side.
using PairHandler = std::function<StreamDecision(const std::string& secret)>;
// Connecting side: the serving peer's answer to a stream open (a StreamOpenResult
// status, OK = 0), or kOpenFailedLocally when the stream ended before any answer (the
// tunnel failed, the relay link was down). Called once. With such a handler the local
// connection is closed, not reset, on failure: the handler has told its client why
// (a SOCKS reply, `peer nc`'s one line).
// After an OK, the handler is called once more with kStreamBroken if the stream then
// ends in a reset rather than a clean close both ways (`peer nc` exits non-zero).
inline constexpr int kOpenFailedLocally = -1;
inline constexpr int kStreamBroken = -2;
using OpenResultHandler = std::function<void(int status, const std::string& detail)>;

class StreamBridge {
 public:
  enum class Role { kConnecting, kServing };
  // Called once when the bridge is finished (both directions done, or failed); the
  // owner destroys the bridge later (never inside the call).
  using DoneHandler = std::function<void(int64_t stream_id)>;

  // Connecting side: `tcp` is the accepted client connection; `target` is sent first.
  static std::unique_ptr<StreamBridge> connecting(quic::Connection& quic, int64_t stream_id,
                                                  GSocketConnection* tcp, const HostPort& target,
                                                  std::string log_prefix, DoneHandler done,
                                                  std::function<void()> flush,
                                                  OpenResultHandler on_result = {});
  // Serving side: the remote opened `stream_id`; the header decides what to connect.
  static std::unique_ptr<StreamBridge> serving(quic::Connection& quic, int64_t stream_id,
                                               TargetPolicy policy, PairHandler pair,
                                               std::string log_prefix, DoneHandler done,
                                               std::function<void()> flush);
  ~StreamBridge();
  StreamBridge(const StreamBridge&) = delete;
  StreamBridge& operator=(const StreamBridge&) = delete;

  // From the tunnel's QUIC observer.
  void on_stream_data(std::span<const std::byte> data, bool fin);
  void on_stream_reset(uint64_t app_error);
  void on_stream_send_space();
  void on_stream_closed();
  // The tunnel is gone: reset the TCP side.
  void abort(const std::string& reason);

  int64_t stream_id() const { return stream_id_; }

 private:
  enum class Phase { kOpening, kConnectingTarget, kForwarding, kDone };
  StreamBridge(Role role, quic::Connection& quic, int64_t stream_id, std::string log_prefix,
               DoneHandler done, std::function<void()> flush);

  void attach_tcp(GSocketConnection* tcp);
  void handle_header_bytes();
  void handle_stream_open(const HostPort& target);
  static void on_target_connected(GObject* client, GAsyncResult* result, gpointer self);
  void target_connected(GSocketConnection* tcp, const std::string& error, bool unresolved);
  void send_result(int status, const std::string& detail);
  void refuse(int status, const std::string& detail);

  static gboolean on_tcp_readable(GSocket*, GIOCondition, gpointer self);
  static gboolean on_tcp_writable(GSocket*, GIOCondition, gpointer self);
  static gboolean on_pump_idle(gpointer self);
  void pump_tcp_to_quic();
  void pump_quic_to_tcp();
  void update_tcp_read_interest();
  void maybe_finish();
  void finish(bool reset_tcp);
  void write_to_stream(std::span<const std::byte> data);
  void report_open_result(int status, const std::string& detail);

  Role role_;
  Phase phase_ = Phase::kOpening;
  quic::Connection& quic_;
  int64_t stream_id_;
  std::string log_prefix_;
  DoneHandler done_;
  std::function<void()> flush_;
  TargetPolicy policy_;
  PairHandler pair_;
  HostPort target_;
  OpenResultHandler on_result_;
  bool has_result_handler_ = false;
  bool open_result_reported_ = false;
  std::string abort_reason_;

  GSocketConnection* tcp_ = nullptr;
  GSocket* socket_ = nullptr;
  GSource* read_source_ = nullptr;
  GSource* write_source_ = nullptr;
  GSource* pump_idle_ = nullptr;        // QUIC -> TCP write deferred to the batch's end
  GCancellable* connect_cancellable_ = nullptr;

  std::vector<std::byte> header_;       // stream bytes until the header frame is whole
  std::vector<std::byte> to_tcp_;       // from QUIC, not yet written to TCP
  size_t to_tcp_offset_ = 0;
  std::vector<std::byte> to_quic_;      // from TCP, not yet accepted by QUIC
  bool tcp_read_eof_ = false;           // the TCP peer stopped sending
  bool fin_sent_ = false;
  bool quic_fin_received_ = false;
  bool tcp_write_shut_ = false;
  bool stream_closed_ = false;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

}  // namespace natfwd
