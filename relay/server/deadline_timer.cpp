#include "server/deadline_timer.h"

#include <algorithm>

namespace natfwd::relay {

void DeadlineTimer::arm(std::optional<TimePoint> deadline) {
  if (!deadline) {
    source_.reset();
    deadline_.reset();
    return;
  }
  if (source_ && deadline_ && *deadline_ <= *deadline) return;
  const auto wait = std::chrono::ceil<std::chrono::milliseconds>(
      *deadline - std::chrono::steady_clock::now());
  source_.reset(g_timeout_source_new(static_cast<guint>(std::max<int64_t>(wait.count(), 0))));
  g_source_set_callback(source_.get(), on_timeout, this, nullptr);
  g_source_attach(source_.get(), g_main_context_get_thread_default());
  deadline_ = deadline;
}

gboolean DeadlineTimer::on_timeout(gpointer self) {
  auto* timer = static_cast<DeadlineTimer*>(self);
  timer->source_.reset();  // safe inside its own callback: GLib holds a reference
  timer->deadline_.reset();
  timer->on_fire_();
  return G_SOURCE_REMOVE;
}

}  // namespace natfwd::relay
