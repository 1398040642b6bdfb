// -L [BIND:]PORT:HOST:HOSTPORT: a listening socket whose every accepted connection is
// handed on, with the spec's target, to whoever carries it to the serving peer. The
// same accept shape as SocksListener (-D), without a handshake.
#pragma once

#include <functional>
#include <string>

#include <gio/gio.h>

#include "forward/forward_spec.h"
#include "glib_ptr.h"

namespace natfwd {

class LocalListener {
 public:
  // Gets a connection it does not own (take a reference to keep it).
  using Accept = std::function<void(GSocketConnection* tcp, const HostPort& target)>;

  // Takes ownership of the listening socket (see listen_tcp).
  LocalListener(GSocket* socket, std::string bound, LocalForwardSpec spec, std::string peer,
                Accept accept);
  ~LocalListener();  // closes the listening socket
  LocalListener(const LocalListener&) = delete;
  LocalListener& operator=(const LocalListener&) = delete;

  const std::string& bound() const { return bound_; }
  const LocalForwardSpec& spec() const { return spec_; }
  const std::string& peer() const { return peer_; }  // the serving peer, for status

 private:
  static gboolean on_accept(GSocket*, GIOCondition, gpointer self);
  void accept_all();

  std::string bound_;
  LocalForwardSpec spec_;
  std::string peer_;
  Accept accept_;
  GObjectPtr<GSocket> socket_;
  GSourcePtr source_;  // after socket_: its callback uses the socket, so it goes first
};

}  // namespace natfwd
