#include "tunnel/core_loop.h"

#include <algorithm>

#include "log.h"
#include "tunnel/tunnel_core.h"

namespace natfwd {
namespace {

// Deadlines closer than this fire at once: GLib cannot wait less than a millisecond
// reliably, and waiting a whole one costs throughput (NOTES-transport.md).
constexpr quic::Timestamp kFireAtOnceNs = 1'000'000;
// While the path is blocked, timers are not allowed to spin faster than this.
constexpr quic::Timestamp kBlockedTimerFloorNs = 5'000'000;

// A GSource with only a ready time: it dispatches when that time is reached.
gboolean dispatch_ready_time(GSource*, GSourceFunc callback, gpointer user_data) {
  return callback ? callback(user_data) : G_SOURCE_REMOVE;
}
GSourceFuncs kReadyTimeFuncs = {nullptr, nullptr, dispatch_ready_time, nullptr, nullptr, nullptr};

}  // namespace

quic::Timestamp CoreLoop::now() {
  return static_cast<quic::Timestamp>(g_get_monotonic_time()) * 1000;
}

CoreLoop::CoreLoop(TunnelCore& core)
    : core_(core), context_(g_main_context_ref_thread_default()) {
  timer_.reset(g_source_new(&kReadyTimeFuncs, sizeof(GSource)));
  g_source_set_callback(timer_.get(), &CoreLoop::on_timer, this, nullptr);
  g_source_set_name(timer_.get(), "tunnel timer");
  g_source_set_ready_time(timer_.get(), -1);
  g_source_attach(timer_.get(), context_.get());
}

CoreLoop::~CoreLoop() {
  // Sources first: no callback may run on a half-destroyed loop.
  timer_.reset();
  write_idle_.reset();
}

void CoreLoop::wake() {
  if (write_idle_) return;  // one pass already scheduled for this batch
  write_idle_.reset(g_idle_source_new());
  // Default priority, not idle priority: under load (sockets always readable) an
  // idle-priority source would starve; at equal priority it runs right after the
  // dispatches of this main-loop iteration, i.e. after the batch.
  g_source_set_priority(write_idle_.get(), G_PRIORITY_DEFAULT);
  g_source_set_callback(write_idle_.get(), &CoreLoop::on_write, this, nullptr);
  g_source_set_name(write_idle_.get(), "tunnel write");
  g_source_attach(write_idle_.get(), context_.get());
}

void CoreLoop::write_now() { write_pass(); }

void CoreLoop::resume_write() {
  blocked_ = false;
  wake();
}

gboolean CoreLoop::on_write(gpointer data) {
  auto* self = static_cast<CoreLoop*>(data);
  guard_callback("tunnel write pass", [self] {
    self->write_idle_.reset();  // destroying a source from its own dispatch is allowed
    self->write_pass();
  });
  return G_SOURCE_REMOVE;
}

gboolean CoreLoop::on_timer(gpointer data) {
  auto* self = static_cast<CoreLoop*>(data);
  guard_callback("tunnel timer", [self] {
    self->core_.handle_expiry(now());
    self->write_pass();
  });
  return G_SOURCE_CONTINUE;  // re-armed (or disarmed) by write_pass
}

void CoreLoop::write_pass() {
  if (!blocked_) core_.write(now());
  arm_timer();
}

void CoreLoop::arm_timer() {
  quic::Timestamp expiry = core_.next_deadline();
  if (expiry == quic::kNever) {
    if (g_source_get_ready_time(timer_.get()) != -1) g_source_set_ready_time(timer_.get(), -1);
    return;
  }
  const quic::Timestamp t = now();
  if (blocked_) expiry = std::max(expiry, t + kBlockedTimerFloorNs);
  if (expiry <= t) {
    // Past already: fire at once, unless it is the same past deadline as last time,
    // i.e. a pass at it changed nothing (see quic::kStaleTimerWaitNs).
    const bool stale = expiry == last_past_expiry_;
    last_past_expiry_ = expiry;
    if (stale) expiry = t + quic::kStaleTimerWaitNs;
  } else {
    last_past_expiry_ = quic::kNever;
  }
  // Ready time 0 = dispatch in the next main-loop iteration.
  const gint64 ready_us =
      expiry <= t + kFireAtOnceNs ? 0 : static_cast<gint64>(expiry / 1000);
  // Setting a ready time wakes the context up (an eventfd write): skip when unchanged.
  if (g_source_get_ready_time(timer_.get()) != ready_us)
    g_source_set_ready_time(timer_.get(), ready_us);
}

}  // namespace natfwd
