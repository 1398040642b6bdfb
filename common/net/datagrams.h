// Draining a non-blocking UDP socket with plain recvfrom: the per-datagram paths (STUN,
// TURN relaying) skip GSocketAddress, see socket_address.h.
#pragma once

#include <sys/socket.h>

#include <cerrno>
#include <cstddef>
#include <cstring>
#include <span>

#include "log.h"

namespace natfwd::net {

// Reads up to `max_datagrams` datagrams (a bound per wakeup, so that one busy socket
// cannot monopolise the main loop) into `buffer` and hands each to
// `on_datagram(bytes, from, from_length)`, which returns false to stop early. Errors
// other than "nothing more" are ICMP reports on earlier sends (ECONNREFUSED): not ours
// to fix, so they end the batch with a debug line under `what`.
template <typename OnDatagram>
void receive_datagrams(int fd, std::span<std::byte> buffer, int max_datagrams,
                       const char* what, OnDatagram&& on_datagram) {
  for (int i = 0; i < max_datagrams; ++i) {
    sockaddr_storage from{};
    socklen_t from_length = sizeof from;
    const ssize_t n = recvfrom(fd, buffer.data(), buffer.size(), MSG_DONTWAIT,
                               reinterpret_cast<sockaddr*>(&from), &from_length);
    if (n < 0) {
      if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
        log::debug("%s: receive: %s", what, std::strerror(errno));
      return;
    }
    if (!on_datagram(buffer.first(static_cast<size_t>(n)), from, from_length)) return;
  }
}

}  // namespace natfwd::net
