// The GLib side of the TURN server (turn/turn_server.h): relayed UDP sockets, TURN
// over TCP/TLS connections (STUN messages and padded ChannelData back to back on a
// common/byte_stream.h stream), sends to UDP clients through the relay's UDP socket,
// and one timer at the nearest deadline of the core and of the stream budget.
//
// A TURN-over-TCP/TLS connection holds a place in a ConnectionBudget (per source
// address and in total) from the moment it is handed over until it closes. Before it
// has an allocation it must deliver a complete STUN or ChannelData message at least
// every kStreamIdleTimeout, or it is closed; with an allocation it lives as long as
// the allocation does (RFC 8656 section 3.1 ties the allocation to the connection),
// and when the allocation goes the idle rule applies again.
//
// Lifetimes: a stream client is never destroyed inside one of its own callbacks;
// closed ones are reaped from an idle source.
//
// Sources attach to the thread-default main context: a data-plane shard
// (turn_shards.h) runs its TurnService on its own thread.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include <gio/gio.h>

#include "admission/connection_budget.h"
#include "byte_stream.h"
#include "net/datagram_batch.h"
#include "net/datagrams.h"
#include "server/deadline_timer.h"
#include "glib_ptr.h"
#include "binding/binding_responder.h"
#include "turn/turn_server.h"

namespace natfwd::relay {

struct TurnServiceConfig {
  turn::TurnConfig turn;
  // Relayed sockets of the --listen host's family bind to it (a wildcard means: the
  // address the kernel would use toward the client).
  std::string listen_ip = "0.0.0.0";
  // --relay-ports: 0/0 lets the kernel pick.
  uint16_t min_port = 0;
  uint16_t max_port = 0;
  // The IPv4 --relay-address: IPv4 relayed sockets bind to it, whatever listen_ip
  // says; "" for none.
  std::string ipv4_address;
  // IPv6 relayed sockets bind to this: the IPv6 --relay-address, else an IPv6
  // --listen host, else a global IPv6 address of this host ("" if none: no IPv6
  // allocations).
  std::string ipv6_address;
  // TURN over TCP/TLS connections in total.
  size_t max_stream_clients = 20000;
  // ... and from one source IP: each carries at most one allocation, so
  // --max-allocations-per-address caps them too.
  size_t max_stream_clients_per_address = 128;
  // The nonce key, shared by all shards' cores; nullopt: a random one of its own.
  std::optional<turn::NonceMint> nonces;
};

class TurnService : public turn::TurnIo {
 public:
  // `udp` is the relay's UDP socket (for answers to UDP clients); a reference is taken.
  TurnService(GSocket* udp, TurnServiceConfig config);
  ~TurnService() override;
  TurnService(const TurnService&) = delete;
  TurnService& operator=(const TurnService&) = delete;

  // A datagram from a UDP client on the relay's port (not Binding: the UDP service
  // answers those). Returns the core's verdict; the caller logs garbage.
  turn::TurnServer::Result on_udp_message(std::span<const std::byte> datagram,
                                          const turn::TransportAddress& from);
  // A TCP or TLS connection that speaks TURN from its first byte; `already_read` are
  // bytes the sniffer consumed. Binding requests on it are answered by `responder`.
  void adopt_stream(std::unique_ptr<ByteStream> stream, turn::Transport transport,
                    const turn::TransportAddress& remote, std::span<const std::byte> already_read);

  // While one of these lives, datagrams toward UDP clients and peers are queued per
  // socket and go out together (net/datagram_batch.h) when the outermost one ends, and
  // messages toward a TCP client gather in its output and are written once: a wakeup
  // that reads a burst sends its answers in a few system calls.
  class BatchedSends {
   public:
    explicit BatchedSends(TurnService& service) : service_(service) { ++service_.batch_depth_; }
    ~BatchedSends() {
      if (--service_.batch_depth_ == 0) service_.flush_sends();
    }
    BatchedSends(const BatchedSends&) = delete;
    BatchedSends& operator=(const BatchedSends&) = delete;

   private:
    TurnService& service_;
  };

  size_t allocation_count() const { return core_.allocation_count(); }
  const turn::TurnServer& core() const { return core_; }

  // turn::TurnIo
  std::optional<turn::TransportAddress> open_relay(
      turn::AllocationId id, const turn::ClientKey& client,
      turn::TransportAddress::Family family, bool even_port) override;
  void close_relay(turn::AllocationId id) override;
  std::optional<RelayPair> open_relay_pair(turn::AllocationId id, const turn::ClientKey& client,
                                           turn::TransportAddress::Family family) override;
  std::optional<turn::TransportAddress> adopt_relay(
      turn::AllocationId id, const turn::ClientKey& client,
      std::unique_ptr<turn::ReservedRelay> reserved) override;
  void send_to_client(const turn::ClientKey& client, std::span<const std::byte> bytes) override;
  void send_gathered_to_client(const turn::ClientKey& client,
                               std::span<const std::span<const std::byte>> pieces) override;
  void send_to_peer(turn::AllocationId id, const turn::TransportAddress& peer,
                    std::span<const std::byte> bytes) override;

 private:
  struct RelaySocket {
    turn::AllocationId id;
    GObjectPtr<GSocket> socket;  // in relay_epoll_ while it lives
    uint64_t stream = 0;  // the client's StreamClient id; 0 for a UDP client
  };
  struct StreamClient {
    TurnService* service;
    uint64_t id;
    turn::ClientKey key;
    std::unique_ptr<ByteStream> stream;
    GSourcePtr read_source;
    GIOCondition read_condition = G_IO_IN;
    GSourcePtr write_source;
    GIOCondition write_condition = G_IO_OUT;
    // Set when a read burst stopped at its bound with bytes still inside TLS, which
    // the socket will not announce: reading resumes from the main loop.
    GSourcePtr resume_source;
    std::vector<std::byte> input;  // an incomplete message, the rest of the last read
    std::vector<std::byte> output;
    size_t output_offset = 0;
    bool closed = false;
    bool allocated = false;  // the core holds an allocation for it: no idle timeout
    bool flush_queued = false;  // in streams_to_flush_ until the batch ends
  };

  static gboolean on_relays_readable_trampoline(gint fd, GIOCondition, gpointer self);
  static gboolean on_stream_readable_trampoline(GSocket*, GIOCondition, gpointer client);
  static gboolean on_stream_writable_trampoline(GSocket*, GIOCondition, gpointer client);
  static gboolean on_stream_resume_trampoline(gpointer client);
  static gboolean on_reap_trampoline(gpointer self);

  void on_relays_readable();
  void on_relay_readable(RelaySocket& relay);
  void on_stream_readable(StreamClient& client);
  // Handles the whole messages in `bytes` (the new bytes in stream_read_area_), which
  // follow what client.input held, and keeps the incomplete rest in client.input;
  // false when it closed the client.
  bool deliver_stream_messages(StreamClient& client, std::span<std::byte> bytes);
  void flush(StreamClient& client);
  void watch(StreamClient& client, GSourcePtr& source, GIOCondition& current,
             GIOCondition condition, bool write);
  void close_stream(StreamClient& client, const std::string& reason);
  // One datagram from `socket` (non-blocking; a full queue drops it, as UDP may),
  // queued while a BatchedSends lives.
  void send_datagram(GSocket* socket, const turn::TransportAddress& to,
                     std::span<const std::byte> bytes, const char* what);
  // One datagram in pieces, joined in the batch's copy.
  void send_datagram(GSocket* socket, const turn::TransportAddress& to,
                     std::span<const std::span<const std::byte>> pieces, const char* what);
  GObjectPtr<GSocket> bind_relay_socket(turn::TransportAddress::Family family,
                                        const std::string& ip, bool even_port);
  // A UDP socket bound to ip:port (0: the kernel picks); null when the port is taken.
  static GObjectPtr<GSocket> bind_udp(turn::TransportAddress::Family family,
                                      const std::string& ip, uint16_t port);
  // An even port and the one above it (RFC 8656 section 7.2, EVEN-PORT R=1).
  std::optional<std::pair<GObjectPtr<GSocket>, GObjectPtr<GSocket>>> bind_relay_pair(
      turn::TransportAddress::Family family, const std::string& ip);
  // Makes `socket` the relayed socket of allocation `id` (buffers, epoll set).
  std::optional<turn::TransportAddress> install_relay(turn::AllocationId id,
                                                      const turn::ClientKey& client,
                                                      GObjectPtr<GSocket> socket);
  std::string relay_ip_for(const turn::ClientKey& client, turn::TransportAddress::Family family);
  void flush_sends() noexcept;
  void flush_batch(int fd, net::DatagramBatch& batch) noexcept;
  void arm_timer();
  void on_timer();
  void close_idle_streams(turn::TimePoint now);

  // Datagrams read from one relayed socket per wakeup.
  static constexpr int kMaxDatagramsPerWakeup = 64;
  // Each relayed socket's kernel buffers (socket_buffers.h).
  static constexpr int kRelaySocketBufferBytes = 4 << 20;
  // A TURN-over-TCP client that does not read: relayed data beyond this is dropped
  // (UDP semantics); it is not a reason to close.
  static constexpr size_t kMaxStreamOutputBytes = 1 << 20;
  // Largest message accepted on a stream: a STUN header plus 64 KiB (ChannelData with
  // its padding is shorter). What a client's reads leave incomplete is less.
  static constexpr size_t kMaxStreamMessageBytes = stun::kMaxMessageSize;
  // One read from a TCP or TLS client.
  static constexpr size_t kStreamReadBytes = 64 * 1024;
  // A connection without an allocation that delivers no complete message for this
  // long is closed. A client sends Allocate as soon as it is connected (RFC 8656
  // section 7.1) and waits one round trip for the 401; 10 s also covers three TCP
  // retransmissions from the initial 1 s timeout (RFC 6298: 1 + 2 + 4 s) on a lossy link.
  static constexpr std::chrono::seconds kStreamIdleTimeout{10};

  TurnServiceConfig config_;
  GObjectPtr<GSocket> udp_;
  turn::TurnServer core_;
  stun::BindingResponder responder_;
  std::unordered_map<turn::AllocationId, std::unique_ptr<RelaySocket>> relays_;
  // The relayed sockets, watched through one epoll set and one GLib source: GLib polls
  // every source's descriptor on each loop iteration, which with 10,000 allocations
  // costs more than the datagrams a wakeup carries.
  // Declared before its source: the source is destroyed first.
  UniqueFd relay_epoll_;
  GSourcePtr relay_epoll_source_;
  std::unordered_map<uint64_t, std::unique_ptr<StreamClient>> streams_;
  ConnectionBudget stream_budget_;
  uint64_t next_stream_id_ = 1;
  uint32_t next_port_offset_ = 0;
  std::set<uint64_t> to_reap_;
  GSourcePtr reap_source_;
  DeadlineTimer timer_{[this] { on_timer(); }};
  // Sockets with queued datagrams in this wakeup: [0, active_batches_) of batches_,
  // whose buffers are kept for the next wakeup.
  struct PendingBatch {
    int fd = -1;
    net::DatagramBatch batch;
  };
  net::UdpIoMode io_mode_ = net::udp_io_mode_from_environment();
  std::vector<PendingBatch> batches_;
  size_t active_batches_ = 0;
  int batch_depth_ = 0;
  // TCP/TLS clients with output written at the end of the batch.
  std::vector<uint64_t> streams_to_flush_;
  net::DatagramReader reader_{io_mode_};
  // Where TCP and TLS clients' reads land: kMaxStreamMessageBytes of room for the
  // incomplete message a client's last read left, then kStreamReadBytes for this
  // read, so that whole messages are handled where they were read (no copy into a
  // per-client buffer) and the reads are large. Shared: one client is read at a time.
  std::unique_ptr<std::byte[]> stream_read_area_ =
      std::make_unique_for_overwrite<std::byte[]>(kMaxStreamMessageBytes + kStreamReadBytes);
};

}  // namespace natfwd::relay
