#include "serving/serving_lock.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>

namespace natfwd {
namespace {

// The pid the holder wrote, or "" when the file holds none (a holder still starting).
std::string holder_pid(int fd) {
  char text[32] = {};
  const ssize_t got = pread(fd, text, sizeof text - 1, 0);
  if (got <= 0) return "";
  std::string pid(text, static_cast<size_t>(got));
  while (!pid.empty() && (pid.back() == '\n' || pid.back() == ' ')) pid.pop_back();
  if (pid.empty() || pid.find_first_not_of("0123456789") != std::string::npos) return "";
  return pid;
}

}  // namespace

ServingLock::ServingLock(const std::string& state_dir) {
  const std::string path = state_dir + "/serving.lock";
  // O_NOFOLLOW: the state dir is checked to be ours, but a planted symlink must still
  // not make us truncate another file.
  fd_ = open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd_ < 0)
    throw std::runtime_error("cannot open " + path + ": " + std::strerror(errno));
  if (flock(fd_, LOCK_EX | LOCK_NB) != 0) {
    const int error = errno;
    const std::string pid = error == EWOULDBLOCK ? holder_pid(fd_) : "";
    close(fd_);
    fd_ = -1;
    if (error != EWOULDBLOCK)
      throw std::runtime_error("cannot lock " + path + ": " + std::strerror(error));
    throw std::runtime_error("another serving peer" + (pid.empty() ? "" : " (pid " + pid + ")") +
                             " already runs with state dir " + state_dir +
                             ": stop it first, or give this one its own --state-dir");
  }
  const std::string pid = std::to_string(getpid()) + "\n";
  if (ftruncate(fd_, 0) != 0 || pwrite(fd_, pid.data(), pid.size(), 0) < 0) {
    // The lock holds without the pid; a refused second peer just cannot name us.
  }
}

ServingLock::~ServingLock() {
  if (fd_ >= 0) close(fd_);
}

}  // namespace natfwd
