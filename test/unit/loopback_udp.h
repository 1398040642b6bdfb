// Loopback UDP sockets and a bounded main-loop run, for the tests of the peer's own
// receive paths (test_connected_receive.cpp, test_turn_udp_bridge.cpp).
#pragma once

#include <catch2/catch.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <glib.h>

namespace natfwd::test {

// A non-blocking UDP socket on 127.0.0.1 and a free port; `reuse` is its SO_REUSEADDR
// (GLib binds libnice's sockets with it off).
inline int loopback_udp_socket(int reuse = 0) {
  const int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  REQUIRE(fd >= 0);
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &reuse, sizeof reuse);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0);
  return fd;
}

inline sockaddr_storage address_of(int fd) {
  sockaddr_storage out{};
  socklen_t length = sizeof out;
  getsockname(fd, reinterpret_cast<sockaddr*>(&out), &length);
  return out;
}

// Runs the main loop until `done`, at most a few seconds (a failure, not a wait).
template <typename Done>
bool run_until(Done&& done) {
  const gint64 deadline = g_get_monotonic_time() + 5 * G_USEC_PER_SEC;
  while (!done() && g_get_monotonic_time() < deadline) g_main_context_iteration(nullptr, FALSE);
  return done();
}

}  // namespace natfwd::test
