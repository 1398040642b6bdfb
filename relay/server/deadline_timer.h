// One GLib timeout armed at a protocol core's next deadline (the cores take time as
// an argument and report when they next need to run).
#pragma once

#include <chrono>
#include <functional>
#include <optional>

#include "glib_ptr.h"

namespace natfwd::relay {

class DeadlineTimer {
 public:
  using TimePoint = std::chrono::steady_clock::time_point;

  // `on_fire` runs from the main loop; the timer is disarmed before it is called, so
  // it may arm() again.
  explicit DeadlineTimer(std::function<void()> on_fire) : on_fire_(std::move(on_fire)) {}

  // Arms for `deadline`, or disarms with nullopt. An armed timer that fires no later
  // than needed stays (when it fires early the core does nothing and we re-arm):
  // saves a new timeout source per message.
  void arm(std::optional<TimePoint> deadline);

 private:
  static gboolean on_timeout(gpointer self);
  std::function<void()> on_fire_;
  GSourcePtr source_;
  std::optional<TimePoint> deadline_;
};

}  // namespace natfwd::relay
