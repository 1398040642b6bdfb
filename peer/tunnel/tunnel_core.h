// The tunnel without I/O: the QUIC connection to one remote peer, its streams with their
// stream-open negotiation, the pairing request, and the moves to a new path.
//
// Datagrams and `now` go in (receive, handle_expiry), datagrams come out through Io in
// write passes, and next_deadline() says when handle_expiry is due. Each stream's local
// end is a LocalEndpoint; the serving side reaches its targets through a
// LocalConnector. Which network path the datagrams take is the owner's business: after
// a switch it calls move_to_new_path(). Production: Tunnel (tunnel.h) drives a core
// from the GLib main loop over ICE; the unit test drives two cores over in-memory links
// on a fake clock (test/unit/test_tunnel_core.cpp).
//
// Re-entrancy: Io's event callbacks run inside the core's calls; from them the owner may
// call forward(), abort() and close(), not destroy the core.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "quic/quic_connection.h"
#include "tunnel/local_endpoint.h"
#include "tunnel/stream_opening.h"
#include "tunnel/tunnel_stream.h"

namespace natfwd {

class TunnelCore final : public quic::Connection::Observer {
 public:
  // A receiver's write pass (and so its ACK) comes at least this often. libnice reads a
  // readable socket until it is empty before its loop runs anything else, so a pass
  // "after the batch" came once per ~600 datagrams under load: one ACK per ~800 kB,
  // which made BBR's delivery-rate samples swing 2x and its queue grow (smoothed RTT
  // 60-70 ms on a 20 ms path, `scripts/bench publish` at 30 MB/s). RFC 9000 section
  // 13.2.2 asks for an ACK at least every second ack-eliciting packet; a pass per 16
  // is the stretch ACK Linux TCP sends here, and measured best (4 cost more CPU in
  // ACKs than it gave, 32 as 16).
  static constexpr unsigned kWriteEveryDatagrams = 16;

  enum class Role { kConnecting, kServing };

  // What the core needs from its surroundings.
  class Io {
   public:
    virtual ~Io() = default;
    // One datagram to the other side; false when the path would block (the datagram is
    // kept and goes first on the next write pass).
    virtual bool send_datagram(std::span<const std::byte> datagram) = 0;
    // After the datagrams of one write pass (to send them together).
    virtual void end_of_pass() {}
    // The core has something to send: call write() soon, once the current batch of
    // input is handled (one pass per batch, not one per datagram).
    virtual void wake() = 0;
    // Call write() now, before reading more: kWriteEveryDatagrams arrived since the
    // last pass (their ACK is due).
    virtual void write_due() { wake(); }
    // The QUIC handshake is done and the remote key accepted.
    virtual void on_established() = 0;
    // The QUIC connection is over (handshake failure, idle timeout, remote or own close).
    virtual void on_closed(const std::string& reason) = 0;
    // A stream finished (the count of open streams went down).
    virtual void on_stream_finished() {}
  };

  struct Options {
    Role role = Role::kConnecting;
    // Identity, remote key check and limits; is_server follows `role`.
    quic::Config quic;
    std::string log_label;          // e.g. the remote peer's name
    TargetPolicy target_policy;     // serving side
    PairHandler pair;               // serving side
    PunchHandler punch;             // serving side; empty: punch offers are refused
    LocalConnector* connector = nullptr;  // serving side; outlives the core
    // Connecting side: local connections held while no stream can be opened.
    size_t max_waiting = 256;
  };
  using PairDone = std::function<void(bool ok, const std::string& detail)>;

  TunnelCore(Options options, Io& io);
  ~TunnelCore() override;
  TunnelCore(const TunnelCore&) = delete;
  TunnelCore& operator=(const TunnelCore&) = delete;

  // Creates the QUIC connection: the client's Initial goes out on the next write().
  void start(quic::Timestamp now);
  bool started() const { return quic_ != nullptr; }
  // The serving peer's last refusal of a stream we opened ("TARGET: STATUS: DETAIL"),
  // for `peer status`; empty when none was refused.
  const std::string& last_refusal() const { return last_refusal_; }

  void receive(std::span<const std::byte> datagram, quic::Timestamp now);
  // One write pass: the datagrams that are due, then Io::end_of_pass().
  void write(quic::Timestamp now);
  // At next_deadline(); a write() follows.
  void handle_expiry(quic::Timestamp now);
  quic::Timestamp next_deadline() const;

  // The datagrams take a new path from now on (see Connection::move_to_new_path).
  void move_to_new_path(quic::Timestamp now);
  // CONNECTION_CLOSE (sent on the next write()); Io::on_closed follows.
  void close(const std::string& reason);

  // Connecting side: carry `endpoint` to `target` on the serving side, now or once a
  // stream can be opened. When max_waiting wait already: false, and the connection is
  // refused (on_result told, else the endpoint reset).
  bool forward(std::unique_ptr<LocalEndpoint> endpoint, const HostPort& target,
               OpenResultHandler on_result = {});
  // Connecting side, once established: ask the serving peer to redeem an invite secret.
  void request_pairing(const std::string& secret, PairDone done);
  // Connecting side, established: offer a hard-NAT punch (peer/punch/); `done` gets
  // the serving peer's answer (OK with its own offer), or kOpenFailedLocally.
  using ExchangeDone = std::function<void(const StreamDecision& answer)>;
  void request_punch(const wire::PunchOffer& offer, ExchangeDone done);
  // The tunnel is gone: reset every stream and waiting connection, fail the pairing.
  void abort(const std::string& reason);

  bool established() const { return established_; }
  size_t open_streams() const { return streams_.size(); }
  size_t waiting() const { return waiting_.size(); }
  // Null before start().
  const quic::Connection* connection() const { return quic_.get(); }

 private:
  // quic::Connection::Observer
  void on_handshake_complete(const PublicKey& remote_key) override;
  void on_remote_stream_opened(int64_t stream_id) override;
  void on_stream_data(int64_t stream_id, std::span<const std::byte> data, bool fin) override;
  void on_stream_reset(int64_t stream_id, uint64_t app_error) override;
  void on_stream_send_space(int64_t stream_id) override;
  void on_stream_closed(int64_t stream_id) override;
  void on_connection_closed(const std::string& reason) override;
  void on_streams_available() override;

  struct Waiting {
    std::unique_ptr<LocalEndpoint> endpoint;
    HostPort target;
    OpenResultHandler on_result;
  };
  TunnelStream::Context stream_context();
  void open_waiting_streams();
  void stream_done(int64_t stream_id);
  void reap_finished();
  // A request on a stream of its own whose answer goes to a callback (pairing,
  // punching): the stream carries nothing else.
  struct Exchange {
    std::unique_ptr<StreamOpening> opening;
    ExchangeDone done;
  };
  void start_exchange(StreamOpening opening, ExchangeDone done);
  void exchange_data(int64_t stream_id, std::span<const std::byte> data, bool fin);
  void exchange_over(int64_t stream_id, const std::string& why);
  void send_pairing_request();

  Options options_;
  Io& io_;
  std::unique_ptr<quic::Connection> quic_;
  unsigned received_since_write_ = 0;  // datagrams given to receive() since write()
  bool established_ = false;
  std::map<int64_t, std::unique_ptr<TunnelStream>> streams_;
  std::vector<std::unique_ptr<TunnelStream>> finished_;  // destroyed outside their calls
  std::string last_refusal_;
  std::vector<Waiting> waiting_;

  std::string pair_secret_;
  PairDone pair_done_;  // until the pairing request is sent
  std::map<int64_t, Exchange> exchanges_;
};

}  // namespace natfwd
