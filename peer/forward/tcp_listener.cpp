#include "forward/tcp_listener.h"

#include "net/socket_address.h"

namespace natfwd {
namespace {

constexpr int kListenBacklog = 512;  // the kernel caps it at net.core.somaxconn

}  // namespace

TcpListenResult listen_tcp(const HostPort& listen) {
  TcpListenResult result;
  GInetAddress* address = g_inet_address_new_from_string(
      listen.host == "localhost" ? "127.0.0.1" : listen.host.c_str());
  if (!address) {
    result.error = "bind address must be an IP address";
    result.bad_address = true;
    return result;
  }
  GError* error = nullptr;
  GSocket* socket = g_socket_new(g_inet_address_get_family(address), G_SOCKET_TYPE_STREAM,
                                 G_SOCKET_PROTOCOL_TCP, &error);
  GSocketAddress* socket_address = g_inet_socket_address_new(address, listen.port);
  g_object_unref(address);
  // GLib's default backlog is 10: a burst of connections (a browser through -D, 64 at
  // once in test_concurrent.py) on a busy machine overflowed it, and the kernel then
  // reset connections the client already thought were open.
  if (socket) g_socket_set_listen_backlog(socket, kListenBacklog);
  bool ok = socket && g_socket_bind(socket, socket_address, TRUE, &error) &&
            g_socket_listen(socket, &error);
  g_object_unref(socket_address);
  if (!ok) {
    result.error = "cannot listen on " + listen.to_string() + ": " +
                   (error ? error->message : "unknown error");
    if (error) g_error_free(error);
    if (socket) g_object_unref(socket);
    return result;
  }
  g_socket_set_blocking(socket, FALSE);
  GSocketAddress* local = g_socket_get_local_address(socket, nullptr);
  result.bound = net::to_string(local);
  g_object_unref(local);
  result.socket = socket;
  return result;
}

}  // namespace natfwd
