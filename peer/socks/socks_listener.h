// -D [BIND:]PORT: a SOCKS5/SOCKS4a proxy whose every CONNECT becomes a stream to the
// serving peer. The client gets its SOCKS reply only once the serving peer answered
// the stream open, so "not allowed by ruleset" (a target it does not serve) and
// "connection refused" reach the client as SOCKS errors, not as a dead connection.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <gio/gio.h>

#include "address.h"
#include "glib_ptr.h"
#include "socks/socks_handshake.h"
#include "tunnel/stream_opening.h"

namespace natfwd {

class SocksListener {
 public:
  // Hands a connection whose handshake is done to the tunnel (PeerApp).
  using Forward =
      std::function<void(GSocketConnection* tcp, const HostPort& target, OpenResultHandler)>;

  // Takes ownership of the listening socket.
  SocksListener(GSocket* socket, std::string bound, Forward forward);
  ~SocksListener();
  SocksListener(const SocksListener&) = delete;
  SocksListener& operator=(const SocksListener&) = delete;

  const std::string& bound() const { return bound_; }

 private:
  struct Client {
    SocksListener* owner = nullptr;
    GObjectPtr<GSocketConnection> tcp;
    GSocket* socket = nullptr;  // tcp's own
    SocksHandshake handshake;
    // Declared last, destroyed first: no callback reaches a half-gone client.
    GSourcePtr source;
    SourceId timeout;
  };
  static gboolean on_accept(GSocket*, GIOCondition, gpointer self);
  static gboolean on_client_readable(GSocket*, GIOCondition, gpointer client);
  static gboolean on_client_timeout(gpointer client);
  void read_handshake(Client& client);
  void hand_over(Client& client);
  void drop(Client& client);

  GObjectPtr<GSocket> socket_;
  std::string bound_;
  Forward forward_;
  std::vector<std::unique_ptr<Client>> clients_;  // still in the handshake
  GSourcePtr source_;
};

}  // namespace natfwd
