// The relay process's network side: one port number, bound on UDP (STUN, later TURN)
// and TCP (rendezvous, later STUN/TURN over TCP and TLS), and the services on them.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "address.h"
#include "rendezvous/rendezvous_core.h"
#include "server/glib_ptr.h"

namespace natfwd::relay {

class StunUdpService;
class RendezvousService;

struct RelayServerConfig {
  HostPort listen{"0.0.0.0", 3478};  // IP literal; port 0 picks a free port
  RendezvousConfig rendezvous;        // stun_port is filled in from the bound port
  std::string software;               // SOFTWARE attribute, "natfwd-relay 0.1.0"
};

class RelayServer {
 public:
  // Binds and starts serving on the thread-default main context. Throws
  // std::runtime_error with a one-line message when the sockets cannot be bound.
  explicit RelayServer(RelayServerConfig config);
  ~RelayServer();
  RelayServer(const RelayServer&) = delete;
  RelayServer& operator=(const RelayServer&) = delete;

  // The bound address: same IP as asked for, the real port.
  const HostPort& local_address() const { return local_address_; }

 private:
  // With port 0 the kernel picks a free TCP port, which may be taken on UDP; try
  // again with another one this many times.
  static constexpr int kBindAttempts = 10;

  void bind_sockets(const HostPort& listen);

  GObjectPtr<GSocket> tcp_;
  GObjectPtr<GSocket> udp_;
  HostPort local_address_;
  std::unique_ptr<StunUdpService> stun_;
  std::unique_ptr<RendezvousService> rendezvous_;
};

}  // namespace natfwd::relay
