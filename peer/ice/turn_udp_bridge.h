// libnice's TURN-over-UDP server (and STUN server, when that is the same relay), a
// socket of ours on this host, carried to the real server on sockets of ours, so that
// a relayed tunnel's incoming datagrams skip libnice.
//
// Why: libnice reads one datagram per recvmsg under its agent lock, and on a relayed
// pair over UDP that was the receiving peer's largest cost. The connected receiver of
// direct pairs (connected_receiver.h) cannot take a relayed pair over: everything comes
// from the TURN server, libnice needs that server's answers (Allocate, Refresh,
// CreatePermission, ChannelBind) and the remote's connectivity checks relayed inside
// them, and libnice cannot be handed a datagram that was read elsewhere.
//
// So libnice is told that the server is a socket of ours on libnice's host address:
// not on loopback, since libnice 0.1.21 pins each host socket to its interface
// (IP_UNICAST_IF), and a datagram to 127.0.0.1 pinned to eth0 is "host unreachable";
// to an address of that same interface it is delivered locally. Hence one host
// address of the server's family, or no bridge (IceSession). Each libnice socket that
// sends here gets an upstream socket, its twin (twin_socket.h) connected to the real
// server: the server, the NATs on the way and the XOR-MAPPED-ADDRESS it reports see the
// very address and port libnice would have used, and the TURN allocation is libnice's
// as before. What libnice sends is sent on; what the server sends comes back to libnice
// from here, except the tunnel's data (tunnel_data_from_turn_server), which goes
// straight to the tunnel, read with recvmmsg in bounded batches.
#pragma once

#include <sys/socket.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include <glib.h>

#include "glib_ptr.h"
#include "net/datagrams.h"
#include "stun/stun_message.h"

namespace natfwd {

class TurnUdpBridge {
 public:
  using OnTunnelDatagram = std::function<void(std::span<const std::byte>)>;
  // The fd of libnice's UDP socket bound to exactly this address, or -1.
  using FindIceSocket = std::function<int(const sockaddr_storage&)>;

  // Binds `host` (libnice's host address, of the family of `server`) on a port the
  // kernel picks; nullptr (with one debug line) when it cannot, and then libnice talks
  // to the server itself.
  static std::unique_ptr<TurnUdpBridge> open(const sockaddr_storage& server,
                                             const sockaddr_storage& host,
                                             FindIceSocket find_ice_socket);
  ~TurnUdpBridge();
  TurnUdpBridge(const TurnUdpBridge&) = delete;
  TurnUdpBridge& operator=(const TurnUdpBridge&) = delete;

  const sockaddr_storage& server() const { return server_; }
  // What libnice is told the server is.
  const sockaddr_storage& address() const { return address_; }
  std::string address_ip() const;
  uint16_t address_port() const;

  // Where the tunnel's data goes; unset, everything goes to libnice.
  void set_on_tunnel_datagram(OnTunnelDatagram on_datagram) {
    on_tunnel_datagram_ = std::move(on_datagram);
  }
  // The upstream socket carrying what libnice's socket bound to `base` sends, or -1:
  // the server knows that socket's TURN allocation by this one's address and port.
  int upstream_fd_for(const sockaddr_storage& base) const;
  uint64_t tunnel_datagrams() const { return tunnel_datagrams_; }

 private:
  struct Upstream {
    sockaddr_storage ice_address{};  // libnice's socket, where answers go back to
    UniqueFd fd;
    GSourcePtr watch;
    TurnUdpBridge* bridge = nullptr;
    explicit Upstream(int owned) : fd(owned) {}
  };

  TurnUdpBridge(int fd, const sockaddr_storage& server, const sockaddr_storage& address,
                FindIceSocket find_ice_socket);
  static gboolean on_libnice_readable(gint fd, GIOCondition, gpointer self);
  static gboolean on_upstream_readable(gint fd, GIOCondition, gpointer upstream);
  void from_libnice();
  void from_server(Upstream& upstream);
  Upstream* upstream_for(const sockaddr_storage& ice_address);

  UniqueFd fd_;  // the socket libnice talks to
  sockaddr_storage server_{};
  sockaddr_storage address_{};
  std::array<uint8_t, 16> own_ip_{};  // of address_, as stun::TransportAddress holds it
  FindIceSocket find_ice_socket_;
  OnTunnelDatagram on_tunnel_datagram_;
  net::DatagramReader reader_;
  std::vector<std::unique_ptr<Upstream>> upstreams_;
  uint64_t tunnel_datagrams_ = 0;
  // Set while reading: the tunnel may destroy us from on_tunnel_datagram_.
  bool* destroyed_ = nullptr;
  GSourcePtr watch_;  // last: its callback reaches the members above
};

}  // namespace natfwd
