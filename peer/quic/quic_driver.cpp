#include "quic_driver.h"

#include <algorithm>

#include "log.h"

namespace natfwd::quic {
namespace {

// Expiries closer than this fire at once: GLib cannot wait less than a millisecond
// reliably, and waiting a whole one costs throughput (NOTES-transport.md).
constexpr Timestamp kFireAtOnce = 1'000'000;  // 1 ms
// While the path is blocked, timers are not allowed to spin faster than this.
constexpr Timestamp kBlockedTimerFloor = 5'000'000;  // 5 ms

// A GSource with only a ready time: it dispatches when that time is reached.
gboolean dispatch_ready_time(GSource*, GSourceFunc callback, gpointer user_data) {
  return callback ? callback(user_data) : G_SOURCE_REMOVE;
}
GSourceFuncs kReadyTimeFuncs = {nullptr, nullptr, dispatch_ready_time, nullptr, nullptr, nullptr};

}  // namespace

Timestamp Driver::now() { return static_cast<Timestamp>(g_get_monotonic_time()) * 1000; }

Driver::Driver(const Config& config, Connection::Observer& observer, SendDatagram send,
               std::function<void()> end_of_pass)
    : context_(g_main_context_ref_thread_default()),
      connection_(config, observer, now()),
      send_(std::move(send)),
      end_of_pass_(std::move(end_of_pass)) {
  timer_.reset(g_source_new(&kReadyTimeFuncs, sizeof(GSource)));
  g_source_set_callback(timer_.get(), &Driver::on_timer, this, nullptr);
  g_source_set_name(timer_.get(), "quic timer");
  g_source_set_ready_time(timer_.get(), -1);
  g_source_attach(timer_.get(), context_.get());
  flush();  // the client's Initial
}

Driver::~Driver() {
  *alive_ = false;
  // Destroy the sources first: no callback may run on a half-destroyed Driver.
  timer_.reset();
  write_idle_.reset();
}

void Driver::receive(std::span<const std::byte> datagram) {
  auto alive = alive_;
  connection_.receive(datagram, now());
  if (*alive) flush();
}

void Driver::close(uint64_t app_error, const std::string& reason) {
  auto alive = alive_;
  connection_.close(app_error, reason);
  if (!*alive) return;
  flush();  // in case we are inside a callback and the close was deferred
  write_pass();
}

void Driver::resume_write() {
  blocked_ = false;
  flush();
}

void Driver::flush() {
  if (write_idle_) return;  // one pass already scheduled for this batch
  write_idle_.reset(g_idle_source_new());
  // Default priority, not idle priority: under load (sockets always readable) an
  // idle-priority source would starve; at equal priority it runs right after the
  // dispatches of this main-loop iteration, i.e. after the batch.
  g_source_set_priority(write_idle_.get(), G_PRIORITY_DEFAULT);
  g_source_set_callback(write_idle_.get(), &Driver::on_write, this, nullptr);
  g_source_set_name(write_idle_.get(), "quic write");
  g_source_attach(write_idle_.get(), context_.get());
}

gboolean Driver::on_write(gpointer data) {
  auto* self = static_cast<Driver*>(data);
  self->write_idle_.reset();  // destroying a source from its own dispatch is allowed
  guard_callback("quic: write", [self] { self->write_pass(); });
  return G_SOURCE_REMOVE;
}

gboolean Driver::on_timer(gpointer data) {
  auto* self = static_cast<Driver*>(data);
  guard_callback("quic: timer", [self] {
    auto alive = self->alive_;
    self->connection_.handle_expiry(now());
    if (*alive) self->write_pass();
  });
  return G_SOURCE_CONTINUE;  // re-armed (or disarmed) by write_pass
}

void Driver::move_to_new_path() {
  connection_.move_to_new_path(now());
  flush();
}

void Driver::write_pass() {
  auto alive = alive_;
  if (!blocked_) {
    connection_.write(now(), [this](std::span<const std::byte> datagram) {
      if (send_(datagram)) return true;
      blocked_ = true;
      return false;
    });
    if (!*alive) return;  // on_connection_closed destroyed us
    if (end_of_pass_) end_of_pass_();
  }
  arm_timer();
}

void Driver::arm_timer() {
  Timestamp expiry = connection_.expiry();
  if (expiry == kNever) {
    if (g_source_get_ready_time(timer_.get()) != -1) g_source_set_ready_time(timer_.get(), -1);
    return;
  }
  Timestamp t = now();
  if (blocked_) expiry = std::max(expiry, t + kBlockedTimerFloor);
  if (expiry <= t) {
    // Past already: fire at once, unless it is the same past deadline as last time,
    // i.e. a pass at it changed nothing (see kStaleTimerWaitNs).
    const bool stale = expiry == last_past_expiry_;
    last_past_expiry_ = expiry;
    if (stale) expiry = t + kStaleTimerWaitNs;
  } else {
    last_past_expiry_ = kNever;
  }
  // Ready time 0 = dispatch in the next main-loop iteration.
  gint64 ready_us = expiry <= t + kFireAtOnce ? 0 : static_cast<gint64>(expiry / 1000);
  // Setting a ready time wakes the context up (an eventfd write): skip when unchanged.
  if (g_source_get_ready_time(timer_.get()) != ready_us)
    g_source_set_ready_time(timer_.get(), ready_us);
}

}  // namespace natfwd::quic
