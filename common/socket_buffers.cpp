#include "socket_buffers.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <initializer_list>

namespace natfwd {

int raise_socket_buffers(int fd, int bytes) {
  for (int option : {SO_RCVBUF, SO_SNDBUF}) {
    const int force = option == SO_RCVBUF ? SO_RCVBUFFORCE : SO_SNDBUFFORCE;
    if (setsockopt(fd, SOL_SOCKET, force, &bytes, sizeof bytes) != 0)
      setsockopt(fd, SOL_SOCKET, option, &bytes, sizeof bytes);
  }
  int granted = 0;
  socklen_t length = sizeof granted;
  if (getsockopt(fd, SOL_SOCKET, SO_RCVBUF, &granted, &length) != 0) return -1;
  return granted / 2;
}

}  // namespace natfwd

namespace natfwd {

bool prefer_bbr(int fd) {
  static const char kBbr[] = "bbr";
  return setsockopt(fd, IPPROTO_TCP, TCP_CONGESTION, kBbr, sizeof kBbr - 1) == 0;
}

}  // namespace natfwd
