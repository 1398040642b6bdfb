// One ICE session with one remote peer: a non-reliable libnice agent with one stream
// of one component, trickling candidates through the relay (RFC 8445, RFC 8838).
//
// Pitfalls handled here (NOTES-transport.md): upnp/ice-udp/ice-tcp set explicitly; the
// receive callback attached before gathering; datagrams queued until a pair is
// selected; ICE-TCP send back-pressure through send_messages_nonblocking and
// "reliable-transport-writable".
#pragma once

#include <cstddef>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include <sys/socket.h>

#include <agent.h>

#include "glib_ptr.h"
#include "ice/connected_receiver.h"
#include "ice/send_indication.h"
#include "ice/turn_udp_bridge.h"
#include "portmap/port_mapper.h"

namespace natfwd {

struct IceServerAddress {
  std::string ip;  // libnice needs an IP literal, not a name
  uint16_t port = 0;
};

struct TurnServerInfo {
  std::string ip;  // IP literal: libnice does not resolve names
  uint16_t port = 0;
  std::string username, password;
  bool tcp = false;  // TURN over TCP (also used for the TLS/proxy bridges on loopback)
};

// What the selected pair looks like, for the path line and for logs.
struct SelectedPath {
  std::string local_relay_server;  // the TURN server of a local relay candidate, "ip:port"
  bool relayed = false;
  std::string transport;  // "udp" or "tcp"
  std::string local_type, remote_type;  // host, srflx, prflx, relay
  std::string local_address, remote_address;
  // "direct udp host 1.2.3.4:5 <-> srflx 6.7.8.9:10"; a side whose address is a port
  // mapping at its gateway shows as "mapped EXTERNAL" ("<-> mapped 198.51.100.2:41000").
  // A hard-NAT punched path (local_type "punched") reads "direct udp punched LOCAL <->
  // REMOTE": this side's socket and the other side's public address.
  std::string describe() const;
  // "ipv6" or "ipv4": the candidate pair's family (ICE pairs only candidates of one
  // family, RFC 8445 section 6.1.2.2); for a relayed path the relayed addresses',
  // whatever family reaches the TURN server.
  std::string family() const;
};

class IceSession {
 public:
  struct Callbacks {
    std::function<void(const std::string& sdp)> on_local_candidate;
    std::function<void()> on_gathering_done;
    std::function<void(std::span<const std::byte>)> on_datagram;
    std::function<void(const SelectedPath&)> on_selected_pair;
    std::function<void()> on_writable;  // a would-block send may be retried
    std::function<void(const std::string& reason)> on_failed;
  };
  struct Options {
    bool controlling = false;
    IceServerAddress stun_server;      // the relay's STUN port
    std::vector<std::string> local_addresses;  // empty: every interface but IPv6 link-local
    bool udp = true;
    bool tcp = true;
    std::vector<TurnServerInfo> turn_servers;
    bool force_relay = false;  // offer and accept relayed candidates only
    // Asks the gateway to map our host candidate's UDP port and offers the mapping
    // as a candidate; nullptr: no port mapping. Borrowed: RelayLinks owns it.
    portmap::PortMapper* port_mapper = nullptr;
    // Not libnice's: a tunnel that starts relayed tries a hard-NAT punch for a direct
    // UDP path (peer/punch/; Tunnel does it). --no-punch turns it off.
    bool punch = false;
  };

  IceSession(const Options& options, Callbacks callbacks);
  ~IceSession();
  IceSession(const IceSession&) = delete;
  IceSession& operator=(const IceSession&) = delete;

  // ICE ufrag and password of this side, for the offer or answer.
  std::pair<std::string, std::string> local_credentials() const;
  void start_gathering();
  void set_remote_credentials(const std::string& ufrag, const std::string& pwd);
  // Returns false for a candidate line libnice cannot parse (the caller logs it).
  bool add_remote_candidate(const std::string& sdp);
  void remote_gathering_done();

  // Sends one datagram. Before a pair is selected it is queued (bounded; the oldest
  // are dropped, QUIC retransmits). Returns false when the path would block: retry
  // after on_writable. On a UDP pair (see use_own_sends) the datagram is only queued
  // until flush_sends(), which sends the queue in as few system calls as it can.
  bool send(std::span<const std::byte> datagram);
  // Sends what send() queued: on a UDP pair, runs of equal-sized datagrams go out as
  // one sendmsg with UDP generic segmentation offload (UDP_SEGMENT; the kernel splits
  // them), where libnice makes one sendmsg per datagram: measured here, one sender
  // core moves 390 MB/s of 1350-byte datagrams one by one, 1740 MB/s batched.
  void flush_sends();
  bool has_selected_pair() const { return selected_; }

 private:
  static void on_recv_trampoline(NiceAgent*, guint stream, guint component, guint length,
                                 gchar* data, gpointer self);
  static void on_new_candidate_trampoline(NiceAgent*, NiceCandidate*, gpointer self);
  static void on_gathering_done_trampoline(NiceAgent*, guint stream, gpointer self);
  static void on_state_changed_trampoline(NiceAgent*, guint stream, guint component,
                                          guint state, gpointer self);
  static void on_selected_pair_trampoline(NiceAgent*, guint stream, guint component,
                                          NiceCandidate* local, NiceCandidate* remote,
                                          gpointer self);
  static void on_writable_trampoline(NiceAgent*, guint stream, guint component, gpointer self);

  void handle_selected_pair(NiceCandidate* local, NiceCandidate* remote);
  void request_port_mapping();
  void on_port_mapped(const std::string& external_ip, uint16_t external_port);
  void port_mapping_settled();  // mapped, failed or waited long enough
  static gboolean on_mapping_wait_over(gpointer self);
  // Sends on the selected UDP pair ourselves: to the remote candidate from the
  // pair's socket, or, when our candidate is relayed over UDP, as Send indications to
  // its TURN server from the relayed candidate's base socket. `live` says the
  // candidates are the agent's own (a relayed copy has lost its TURN server).
  void use_own_sends(NiceCandidate* local, NiceCandidate* remote, bool live);
  void drop_own_sends();
  // Reads a direct UDP pair's datagrams on a connected socket of our own; any other
  // pair (relayed, TCP) or a step the kernel refuses leaves them to libnice.
  void use_connected_receive(NiceCandidate* local, NiceCandidate* remote);
  // The TURN server of our relayed candidate, which libnice knows as `libnice_server`
  // (relay_server_of), when it is one of ours over UDP; nullopt for TURN over TCP,
  // where libnice's framing on the stream must stay whole.
  std::optional<sockaddr_storage> udp_turn_server_of(const sockaddr_storage& libnice_server) const;
  // The bridge libnice knows as the server at `address`, or nullptr.
  const TurnUdpBridge* bridge_at(const sockaddr_storage& address) const;
  static gboolean on_send_writable(gint fd, GIOCondition, gpointer self);
  // Our relayed candidate over TURN-over-TCP: the queue goes to libnice in one call
  // with the connection corked, so that its one write per datagram fills segments.
  void flush_corked();
  void tune_socket_buffers(const NiceCandidate* local);
  bool send_now(std::span<const std::byte> datagram);

  Options options_;
  Callbacks callbacks_;
  GObjectPtr<NiceAgent> agent_;
  guint stream_id_ = 0;
  bool selected_ = false;
  bool failed_ = false;
  std::deque<std::vector<std::byte>> pending_;  // datagrams waiting for a selected pair
  std::vector<gulong> signal_handlers_;

  // The port mapping of our host candidate (see request_port_mapping): while it is
  // being asked for, the end of our candidates waits (at most kMappingWaitMs).
  std::unique_ptr<portmap::PortMapping> mapping_;
  bool mapping_pending_ = false;
  bool gathering_done_held_ = false;
  bool mapped_candidate_sent_ = false;
  std::string mapped_internal_, mapped_external_;  // "ip:port"
  SourceId mapping_wait_;
  // The other side's mapped candidates ("ip:port"), told by their foundation.
  std::vector<std::string> remote_mapped_;

  // A UDP pair we send on ourselves (see use_own_sends): a duplicate of its socket's
  // descriptor (valid whatever libnice does with its own), where the datagrams go, the
  // Send indication framing on a relayed pair, and the datagrams queued for the next
  // flush_sends().
  std::optional<UniqueFd> send_fd_;
  sockaddr_storage send_to_{};
  socklen_t send_to_length_ = 0;
  std::optional<SendIndicationFramer> framer_;
  // TURN over TCP (see flush_corked): libnice's connections to the TURN server (its
  // descriptors, checked before each use), and whether libnice said it would block
  // (then reliable-transport-writable resumes).
  std::vector<int> cork_fds_;
  sockaddr_storage cork_peer_{};
  bool corked_blocked_ = false;
  bool gso_works_ = true;  // cleared if the kernel refuses UDP_SEGMENT
  std::vector<std::byte> queued_;
  std::vector<uint16_t> queued_sizes_;
  // flush_corked()'s scratch, reused from batch to batch.
  std::vector<GOutputVector> cork_vectors_;
  std::vector<NiceOutputMessage> cork_messages_;
  std::vector<int> corked_fds_;
  size_t queued_next_ = 0;          // first datagram not sent yet
  size_t queued_next_offset_ = 0;   // its offset in queued_
  GSourcePtr writable_source_;  // set while the socket is full
  // Set while the selected direct UDP pair's datagrams come through our own connected
  // socket (connected_receiver.h) rather than through libnice.
  std::unique_ptr<ConnectedReceiver> receiver_;
  // One per TURN server over UDP (turn_udp_bridge.h) when we gather on one address of
  // its family, unless NATFWD_TURN_UDP_BRIDGE=off or its socket could not be made. They outlive us until libnice has closed
  // its allocations through them (~IceSession).
  std::vector<std::unique_ptr<TurnUdpBridge>> udp_bridges_;
};

}  // namespace natfwd
