// A loopback TCP port that libnice uses as a plain TURN-over-TCP server, carried to
// the real TURN server over a connection natfwd makes itself: TLS (OpenSSL) and/or
// through an HTTP CONNECT proxy.
//
// Why: libnice's own NICE_RELAY_TYPE_TURN_TLS is a canned pseudo-SSL handshake for an
// old Google relay, not TLS, and its proxy support cannot add real TLS on top. Each
// TCP connection libnice opens to the bridge becomes one upstream connection; bytes
// are copied both ways with backpressure (neither side buffers more than a chunk).
#pragma once

#include <memory>
#include <set>
#include <string>

#include <gio/gio.h>

#include "glib_ptr.h"
#include "transport/connector.h"

namespace natfwd {

class TurnBridge {
 public:
  // Binds 127.0.0.1:0; throws std::runtime_error if that fails.
  TurnBridge(ConnectOptions upstream, std::string label);
  ~TurnBridge();
  TurnBridge(const TurnBridge&) = delete;
  TurnBridge& operator=(const TurnBridge&) = delete;

  uint16_t port() const { return port_; }
  // "turn-tls 203.0.113.10:443": what the path line says for pairs through here.
  const std::string& label() const { return label_; }
  const ConnectOptions& upstream() const { return upstream_; }

  class Link;

 private:
  static gboolean on_accept(GSocket* socket, GIOCondition, gpointer self);
  void link_done(Link* link);

  ConnectOptions upstream_;
  std::string label_;
  GObjectPtr<GSocket> listener_;
  GSourcePtr accept_source_;
  uint16_t port_ = 0;
  std::set<std::unique_ptr<Link>> links_;
};

}  // namespace natfwd
