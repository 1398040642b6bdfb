// natfwd's one QUIC connection between two peers (RFC 9000), carried in ICE datagrams.
//
// `Connection` is a protocol core with no I/O: datagrams and `now` go in, datagrams and
// the next deadline come out. It wraps one ngtcp2_conn plus its TLS session
// (TlsSession) and keeps what ngtcp2 leaves to the application: per-stream send
// buffers until acknowledged, flow-control credit returned when the application has
// really delivered received bytes, and a fair write loop across streams. `Driver`
// (quic_driver.h) runs it from the GLib main loop; the unit test runs it on a fake clock.
//
// One bidirectional stream per forwarded TCP connection: FIN is half close, RESET_STREAM
// (+ STOP_SENDING) is reset.
//
// Errors (HACKING.md, "Error policy"): GnuTLS/ngtcp2 setup failures in the constructor
// throw std::runtime_error; everything that comes from the network (garbage, handshake
// failure, remote close, timeouts) ends in Observer::on_connection_closed.
//
// Re-entrancy: Observer callbacks run inside receive()/handle_expiry()/write(). From a
// callback the observer may call the stream methods and close() (deferred until ngtcp2
// has returned); write()/handle_expiry() from inside a callback are ignored (the caller's
// own pass follows). The observer must not destroy the Connection from a callback,
// except from on_connection_closed, which is always the last thing a call does.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <limits>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include <netinet/in.h>
#include <ngtcp2/ngtcp2.h>
#include <ngtcp2/ngtcp2_crypto.h>

#include "identity.h"
#include "send_buffer.h"

namespace natfwd::quic {

class TlsSession;

// Nanoseconds; CLOCK_MONOTONIC in production, fake in tests. Same unit as ngtcp2_tstamp.
using Timestamp = uint64_t;
inline constexpr Timestamp kNever = std::numeric_limits<Timestamp>::max();

inline constexpr Timestamp to_ns(std::chrono::nanoseconds d) {
  return static_cast<Timestamp>(d.count());
}

struct Config {
  bool is_server = false;              // the serving peer (callee) is the QUIC server
  const Identity* identity = nullptr;  // our Ed25519 key; our TLS cert is made from it
  // Called in the TLS handshake with the Ed25519 public key in the remote certificate;
  // return false to refuse the connection. The hook for pinning/authorisation.
  // Unset = refuse everyone (fail closed).
  std::function<bool(const PublicKey&)> verify_remote_key;
  // 1350 still fits a 1500-byte MTU after IPv6 (40), UDP (8) and the largest TURN
  // framing (a Send indication, 36). Larger datagrams mean fewer of them, and one
  // syscall per datagram is what bounds throughput (NOTES-transport.md).
  size_t max_udp_payload = 1350;
  uint64_t stream_window = 16 << 20;       // per-stream flow-control window (bytes)
  uint64_t connection_window = 64 << 20;   // connection-level flow-control window (bytes)
  uint64_t max_streams = 1024;             // concurrent bidi streams the remote may open
  // Bytes we buffer per stream before stream_write says "full": the bytes not yet sent.
  // Sent but unacknowledged bytes are kept as well (ngtcp2 retransmits from them) but
  // not counted here; the congestion and flow-control windows bound them.
  size_t stream_send_buffer = 1 << 20;
  // Nothing heard for this long: the tunnel is dead and its connections fail. Long
  // enough to ride out a Wi-Fi handover, short enough that nobody waits for a hang.
  Timestamp idle_timeout = to_ns(std::chrono::seconds(30));
  // PING when nothing was sent or received for this long. Linux NAT
  // mappings expire after 30 s idle; one PING a second also means a healthy tunnel
  // always hears from the other side within about a second, which is how the peer
  // notices a dead path within a few seconds (PeerApp's tunnel health check).
  Timestamp keepalive_interval = to_ns(std::chrono::seconds(1));
  // Give up a handshake that has not completed after this long.
  Timestamp handshake_timeout = to_ns(std::chrono::seconds(10));
  // BBR (v1), which does not take random loss for congestion: ssh's CUBIC falls to
  // ~1 MB/s at 20 ms RTT with 0.5 % loss. Not ngtcp2 0.12's BBRv2: on a real path with
  // loss and queueing jitter its congestion window shrank with every round that saw
  // loss and never grew back (450 KB to 3 KB over 30 s in `scripts/bench publish`,
  // each download over the tunnel slower than the one before), where BBR held steady.
  ngtcp2_cc_algo cc = NGTCP2_CC_ALGO_BBR;
};

// How long to wait when the connection's deadline is already past and a pass at it
// changed nothing: ngtcp2 keeps its pacing time in the past while the congestion
// window is full (e.g. right after a migration, with the old path's packets still
// counted in flight), which would otherwise spin the main loop until an ACK or the
// loss timer moves things on.
inline constexpr Timestamp kStaleTimerWaitNs = 1'000'000;

class Connection {
 public:
  class Observer {
   public:
    virtual ~Observer() = default;
    virtual void on_handshake_complete(const PublicKey& remote_key) = 0;
    virtual void on_remote_stream_opened(int64_t stream_id) = 0;  // peer opened a bidi stream
    // Data is valid only during the call: copy it. The observer later calls
    // stream_consumed() when it has really delivered the bytes (that is the
    // backpressure: flow-control credit is returned only then).
    virtual void on_stream_data(int64_t stream_id, std::span<const std::byte> data,
                                bool fin) = 0;
    // RESET_STREAM or STOP_SENDING from remote; reported once per stream.
    virtual void on_stream_reset(int64_t stream_id, uint64_t app_error) = 0;
    // stream_write accepts more: buffered data went out. Only after a stream_write that
    // did not take everything, once a quarter of the buffer is free again. Called at the
    // end of write(), so the observer's new data goes out on the next write().
    virtual void on_stream_send_space(int64_t stream_id) = 0;
    // Both directions finished; id now invalid. Connection-level credit of bytes never
    // consumed is returned here; stream_consumed() on the id is then a no-op.
    virtual void on_stream_closed(int64_t stream_id) = 0;
    // Handshake failure, idle timeout, remote close, fatal error, and also our own
    // close(): reported exactly once; afterwards closed() is true.
    virtual void on_connection_closed(const std::string& reason) = 0;
    // open_stream() may succeed again (the remote raised our stream limit).
    virtual void on_streams_available() {}
  };

  // The client sends its Initial on the first write(). The server waits for one.
  Connection(const Config& config, Observer& observer, Timestamp now);
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  void receive(std::span<const std::byte> datagram, Timestamp now);
  // Emits the datagrams that are due; `send` returns false when the path would block:
  // stop, the refused datagram is kept and goes first on the next write().
  void write(Timestamp now, const std::function<bool(std::span<const std::byte>)>& send);
  Timestamp expiry() const;  // next deadline (kNever if none)
  void handle_expiry(Timestamp now);

  // The datagrams now take another path (ICE found a new one, e.g. after a network
  // change, while the old one may have been dead for seconds). Each side calls this
  // when it switches: QUIC starts afresh on the path as after a migration (RFC 9000
  // section 9.4): a new congestion controller and RTT estimate, and no probe timeout
  // left backed off by the outage, so the data waiting goes out at once. The client
  // migrates to a new (fake) local address with a fresh connection id; the server
  // sees the client's packets come from a new (fake) address and validates it.
  void move_to_new_path(Timestamp now);

  // nullopt when the remote's stream limit is reached (or not yet handshaken / closing).
  std::optional<int64_t> open_stream();
  // Copies; returns bytes accepted (0 when full, unknown, or after shutdown/reset).
  size_t stream_write(int64_t id, std::span<const std::byte> data);
  void stream_shutdown_write(int64_t id);             // FIN after the buffered bytes
  void stream_reset(int64_t id, uint64_t app_error);  // RESET_STREAM + STOP_SENDING
  void stream_consumed(int64_t id, size_t bytes);     // return flow-control credit
  // CONNECTION_CLOSE with an application error (RFC 9000 section 10.2), sent on the
  // next write() three times, because it is never acknowledged.
  void close(uint64_t app_error, const std::string& reason);

  bool handshake_complete() const { return handshake_reported_; }
  bool closed() const { return state_ == State::kClosing || state_ == State::kClosed; }
  // Closed on purpose rather than by a failure: close() with application error 0 here,
  // or the remote's CONNECTION_CLOSE with no error (RFC 9000 section 20). Such a close
  // is news, not something an operator must act on.
  bool closed_in_order() const { return closed_in_order_; }

  struct Stats {
    Timestamp smoothed_rtt;
    // Smallest RTT sample. Right after the handshake the first sample still holds the
    // time the controlled ICE side queued the Initial, so this is the honest figure.
    Timestamp min_rtt;
    // False until an RTT sample was taken (and again after move_to_new_path): the
    // figures above are then only the initial guess.
    bool rtt_sampled;
    uint64_t bytes_sent, bytes_received;  // UDP payload bytes, all packets
    // Application bytes: taken by stream_write, delivered to on_stream_data.
    uint64_t stream_bytes_sent, stream_bytes_received;
    size_t open_streams;
    // Congestion control's view (RFC 9002 section 7): what limits a sender that has
    // data and flow-control credit.
    uint64_t cwnd, bytes_in_flight;
    uint64_t delivery_rate;  // bytes per second, the estimate BBR paces by
  };
  Stats stats() const;

 private:
  enum class State {
    kHandshaking,  // (server: maybe still waiting for the first Initial)
    kOpen,
    kClosing,      // CONNECTION_CLOSE built, copies still to send
    kClosed,       // nothing more will be sent or received
  };

  struct Stream {
    explicit Stream(size_t send_capacity) : send(send_capacity) {}
    SendBuffer send;
    bool fin_requested = false;   // stream_shutdown_write() called
    bool fin_sent = false;        // FIN handed to ngtcp2
    bool write_closed = false;    // reset locally or by STOP_SENDING: send nothing more
    bool send_space_owed = false; // a stream_write came back short
    bool reset_reported = false;  // on_stream_reset already called
    bool queued = false;          // in ready_
    uint64_t unconsumed = 0;      // delivered to the observer, credit not yet returned
    bool has_pending() const {
      return !write_closed && (send.unsent() > 0 || (fin_requested && !fin_sent));
    }
  };

  struct ConnDeleter {
    void operator()(ngtcp2_conn* c) const { ngtcp2_conn_del(c); }
  };
  using ConnPtr = std::unique_ptr<ngtcp2_conn, ConnDeleter>;

  // Setup.
  void create_client(Timestamp now);
  bool create_server(std::span<const std::byte> first_datagram, Timestamp now);
  ngtcp2_callbacks callbacks() const;
  ngtcp2_settings settings(Timestamp now) const;
  ngtcp2_transport_params transport_params() const;

  // Write path.
  bool flush_held_datagrams(const std::function<bool(std::span<const std::byte>)>& send);
  void write_streams(Timestamp now, const std::function<bool(std::span<const std::byte>)>& send);
  void enqueue(int64_t id, Stream& stream);

  // Errors and closing.
  void fail(int liberr, Timestamp now);         // local fatal error: close with a transport error
  void start_closing(const ngtcp2_connection_close_error& error, const std::string& reason,
                     Timestamp now);
  void finish(const std::string& reason);       // -> kClosed, report once
  std::string remote_close_reason() const;
  bool remote_closed_without_error() const;
  void after_callbacks(Timestamp now);          // deferred work once ngtcp2 returned

  Stream* find(int64_t id);

  // ngtcp2 callbacks (static trampolines -> members). They must not throw.
  static ngtcp2_conn* get_conn(ngtcp2_crypto_conn_ref* ref);
  static int on_handshake_completed_cb(ngtcp2_conn*, void* user_data);
  static int on_recv_stream_data_cb(ngtcp2_conn*, uint32_t flags, int64_t id, uint64_t offset,
                                    const uint8_t* data, size_t len, void* user_data, void*);
  static int on_acked_stream_data_cb(ngtcp2_conn*, int64_t id, uint64_t offset, uint64_t len,
                                     void* user_data, void*);
  static int on_stream_open_cb(ngtcp2_conn*, int64_t id, void* user_data);
  static int on_stream_close_cb(ngtcp2_conn*, uint32_t flags, int64_t id, uint64_t app_error,
                                void* user_data, void*);
  static int on_stream_reset_cb(ngtcp2_conn*, int64_t id, uint64_t final_size,
                                uint64_t app_error, void* user_data, void*);
  static int on_stream_stop_sending_cb(ngtcp2_conn*, int64_t id, uint64_t app_error,
                                       void* user_data, void*);
  static int on_extend_max_local_streams_cb(ngtcp2_conn*, uint64_t max_streams,
                                            void* user_data);
  static int on_extend_max_stream_data_cb(ngtcp2_conn*, int64_t id, uint64_t max_data,
                                          void* user_data, void*);
  static void rand_cb(uint8_t* dest, size_t len, const ngtcp2_rand_ctx*);
  static int get_new_connection_id_cb(ngtcp2_conn*, ngtcp2_cid* cid, uint8_t* token,
                                      size_t cidlen, void* user_data);

  void handle_remote_reset(int64_t id, uint64_t app_error, bool stop_sending);

  Config config_;
  Observer& observer_;
  State state_ = State::kHandshaking;

  // The path is a fixed label: libnice routes the datagrams, and ngtcp2 must see the
  // same path on every packet or it would treat it as a migration (RFC 9000 section 9).
  sockaddr_in local_addr_{};
  uint32_t path_generation_ = 0;  // move_to_new_path() calls so far
  sockaddr_in remote_addr_{};
  ngtcp2_path path_{};

  std::unique_ptr<TlsSession> tls_;
  ConnPtr conn_;  // declared after tls_: destroyed first, it may still reach the session
  std::unordered_map<int64_t, Stream> streams_;
  std::deque<int64_t> ready_;  // streams with something to send, round robin

  std::vector<std::byte> scratch_;  // one packet being built (max_udp_payload)
  // Packets ngtcp2 built that `send` refused, or CONNECTION_CLOSE copies, sent first.
  std::deque<std::vector<std::byte>> held_;
  std::string closing_reason_;
  bool closed_in_order_ = false;

  // Deferred: things noticed inside ngtcp2 callbacks, acted on after ngtcp2 returns.
  int callback_depth_ = 0;
  bool handshake_just_completed_ = false;
  bool handshake_reported_ = false;
  bool streams_available_ = false;
  std::optional<std::pair<uint64_t, std::string>> pending_close_;
  Timestamp now_ = 0;  // the `now` of the call in progress, for callbacks

  uint64_t bytes_sent_ = 0;
  uint64_t bytes_received_ = 0;
  uint64_t stream_bytes_sent_ = 0;
  uint64_t stream_bytes_received_ = 0;
};

}  // namespace natfwd::quic
