// raise_socket_buffers: a tunnel's UDP socket gets the buffers it asks for with
// CAP_NET_ADMIN, and the kernel's maximum (not an error) without it. prefer_bbr: BBR
// where the kernel allows it, else the socket is left as it was.
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include <algorithm>
#include <fstream>
#include <string>

#include "socket_buffers.h"

namespace {

int read_sysctl(const char* path) {
  int value = -1;
  std::ifstream(path) >> value;
  return value;
}

// CAP_NET_ADMIN (bit 12) in this process's effective set: /proc/self/status CapEff.
bool has_net_admin() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("CapEff:", 0) == 0) return (std::stoull(line.substr(7), nullptr, 16) >> 12) & 1;
  }
  return false;
}

int receive_buffer(int fd) {
  int size = 0;
  socklen_t length = sizeof size;
  getsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, &length);
  return size / 2;
}

}  // namespace

TEST_CASE("socket buffers: a UDP socket gets the asked size, or the system maximum") {
  const int fd = socket(AF_INET, SOCK_DGRAM, 0);
  REQUIRE(fd >= 0);
  const int before = receive_buffer(fd);
  const int asked = 4 << 20;
  REQUIRE(asked > before);
  const int granted = natfwd::raise_socket_buffers(fd, asked);
  CHECK(granted == receive_buffer(fd));
  const int rmem_max = read_sysctl("/proc/sys/net/core/rmem_max");
  if (has_net_admin()) {  // SO_RCVBUFFORCE
    CHECK(granted == asked);
  } else {
    CHECK(granted == std::min(asked, std::max(rmem_max, before)));
  }
  close(fd);
}

TEST_CASE("socket buffers: a bad descriptor reports -1") {
  CHECK(natfwd::raise_socket_buffers(-1, 1 << 20) == -1);
}

TEST_CASE("socket buffers: prefer_bbr switches a TCP socket to BBR, or leaves it alone") {
  auto congestion_control = [](int fd) {
    char name[16] = {};
    socklen_t length = sizeof name;
    getsockopt(fd, IPPROTO_TCP, TCP_CONGESTION, name, &length);
    return std::string(name);
  };
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  REQUIRE(fd >= 0);
  const std::string before = congestion_control(fd);
  REQUIRE_FALSE(before.empty());
  if (natfwd::prefer_bbr(fd)) {
    CHECK(congestion_control(fd) == "bbr");
  } else {
    CHECK(congestion_control(fd) == before);
  }
  close(fd);
  const int udp = socket(AF_INET, SOCK_DGRAM, 0);
  CHECK_FALSE(natfwd::prefer_bbr(udp));  // not a TCP socket: an error, nothing changed
  close(udp);
}
