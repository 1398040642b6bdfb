#include "ice/twin_socket.h"

#include <cerrno>
#include <cstring>

#include <unistd.h>

#include "net/socket_address.h"

namespace natfwd {
namespace {

int reuse_address_of(int fd) {
  int value = 0;
  socklen_t length = sizeof value;
  return getsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &value, &length) == 0 ? value : 0;
}

bool set_reuse_address(int fd, int value) {
  return setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &value, sizeof value) == 0;
}

}  // namespace

int open_twin_socket(int ice_fd, const sockaddr_storage& remote, std::string& why_not) {
  sockaddr_storage local{};
  socklen_t local_length = sizeof local;
  if (getsockname(ice_fd, reinterpret_cast<sockaddr*>(&local), &local_length) != 0) {
    why_not = std::string("getsockname: ") + std::strerror(errno);
    return -1;
  }
  if (local.ss_family != remote.ss_family || net::sockaddr_length(remote) == 0) {
    why_not = "the remote is of another address family";
    return -1;
  }
  const int ice_reuse = reuse_address_of(ice_fd);
  const int fd = socket(local.ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  const char* failed = nullptr;
  if (fd < 0) {
    failed = "socket";
  } else if (!set_reuse_address(ice_fd, 1) || !set_reuse_address(fd, 1)) {
    failed = "SO_REUSEADDR";
  } else if (bind(fd, reinterpret_cast<const sockaddr*>(&local), local_length) != 0) {
    failed = "bind";
  } else if (connect(fd, reinterpret_cast<const sockaddr*>(&remote),
                     net::sockaddr_length(remote)) != 0) {
    failed = "connect";
  }
  const int error = errno;
  set_reuse_address(ice_fd, ice_reuse);
  if (!failed) return fd;
  if (fd >= 0) close(fd);
  why_not = std::string(failed) + ": " + std::strerror(error);
  return -1;
}

}  // namespace natfwd
