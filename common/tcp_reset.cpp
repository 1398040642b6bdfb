#include "tcp_reset.h"

#include <sys/socket.h>

namespace natfwd {

void reset_socket(GSocket* socket) {
  struct linger no_linger {1, 0};
  setsockopt(g_socket_get_fd(socket), SOL_SOCKET, SO_LINGER, &no_linger, sizeof no_linger);
}

void reset_connection(GSocketConnection* connection) {
  reset_socket(g_socket_connection_get_socket(connection));
  g_io_stream_close(G_IO_STREAM(connection), nullptr, nullptr);
}

}  // namespace natfwd
