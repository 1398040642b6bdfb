// raise_socket_buffers: a tunnel's UDP socket gets the buffers it asks for with
// CAP_NET_ADMIN, and the kernel's maximum (not an error) without it.
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
