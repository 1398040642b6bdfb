// The TCP side of a tunnel stream: a LocalEndpoint (local_endpoint.h) that pumps one
// GSocketConnection from the GLib main loop, and the serving side's LocalConnector that
// makes such connections to the targets streams ask for.
//
//   TCP -> stream: read only while the stream accepts data, so a slow remote reader
//                  stops our TCP reads (backpressure to the TCP sender).
//   stream -> TCP: bytes are reported delivered only once the TCP socket took them.
//                  The bytes of one batch of datagrams go to TCP in one write.
//   EOF -> send_end, receive_end -> shutdown(SHUT_WR): half close works both ways.
//   TCP error -> failed; close(reset) -> TCP reset (SO_LINGER 0).
//   A TrafficMeter (optional) paces both directions: a direction with no allowance
//                  stops until the meter's retry time (the stream's flow control then
//                  holds the sender back, as for a slow reader).
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include <gio/gio.h>

#include "byte_queue.h"
#include "glib_ptr.h"
#include "tunnel/local_endpoint.h"
#include "tunnel/stream_opening.h"
#include "tunnel/traffic_meter.h"

namespace natfwd {

class StreamBridge final : public LocalEndpoint {
 public:
  // Takes a reference to `tcp`. `first_bytes`: already read from it by whoever
  // accepted it; they go to the stream before anything read from the socket.
  // `meter` (optional) limits and counts the bytes both ways.
  explicit StreamBridge(GSocketConnection* tcp, std::string first_bytes = {},
                        std::shared_ptr<TrafficMeter> meter = {});
  ~StreamBridge() override;
  StreamBridge(const StreamBridge&) = delete;
  StreamBridge& operator=(const StreamBridge&) = delete;

  // LocalEndpoint
  void start(Stream& stream) override;
  void receive(std::span<const std::byte> data) override;
  void receive_end() override;
  void on_send_space() override;
  void close(bool reset) override;

 private:
  static gboolean on_tcp_readable(GSocket*, GIOCondition, gpointer self);
  static gboolean on_tcp_writable(GSocket*, GIOCondition, gpointer self);
  static gboolean on_pump_idle(gpointer self);
  static gboolean on_first_bytes_idle(gpointer self);
  static gboolean on_throttle_timer(gpointer self);
  void pump_tcp_to_stream();
  void pump_stream_to_tcp();
  void update_read_interest();
  // How many of `wanted` bytes may go in `direction` now; with none, starts the timer
  // that pumps again once the meter allows more.
  size_t metered(TrafficMeter::Direction direction, size_t wanted);

  GObjectPtr<GSocketConnection> tcp_;
  GSocket* socket_ = nullptr;  // owned by tcp_
  Stream* stream_ = nullptr;
  bool closed_ = false;
  bool stream_accepts_ = true;   // the last send() took everything
  bool read_eof_ = false;        // the TCP peer stopped sending
  bool end_received_ = false;    // receive_end(): shut down once to_tcp_ is written
  bool write_shut_ = false;
  GSourcePtr read_source_;
  GSourcePtr write_source_;
  GSourcePtr pump_idle_;  // stream -> TCP write deferred to the batch's end
  std::string first_bytes_;  // to the stream before the socket's bytes
  GSourcePtr first_bytes_idle_;  // sends them after start() returned
  ByteQueue to_tcp_;  // from the stream, not yet written to TCP
  std::shared_ptr<TrafficMeter> meter_;
  bool read_throttled_ = false;   // the meter allows no TCP reads until the timer
  bool write_throttled_ = false;  // nor TCP writes
  GSourcePtr throttle_timer_;
};

// Serving side: connects targets with GSocketClient, never through a proxy.
class TcpConnector final : public LocalConnector {
 public:
  std::unique_ptr<Attempt> connect(const HostPort& target, Done done) override;
};

}  // namespace natfwd
