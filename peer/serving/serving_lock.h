// One serving peer per state dir: an exclusive flock(2) on STATE_DIR/serving.lock,
// held for the life of the process.
//
// Two serving peers on one state dir would register the same name with the same key:
// the relay keeps the newer, the older one stops getting sessions, and both fight
// over the control socket. The kernel drops the lock when the process ends, however
// it ends, so a crash leaves nothing stale; the file stays (removing it would race a
// starting peer) and holds the pid of the last holder, for the refusal message.
#pragma once

#include <string>

namespace natfwd {

class ServingLock {
 public:
  // Takes the lock or throws std::runtime_error with one line naming the holder's pid
  // (when the file says it) and what to do.
  explicit ServingLock(const std::string& state_dir);
  ~ServingLock();
  ServingLock(const ServingLock&) = delete;
  ServingLock& operator=(const ServingLock&) = delete;

 private:
  int fd_ = -1;
};

}  // namespace natfwd
