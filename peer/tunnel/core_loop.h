// Runs a TunnelCore from the GLib main loop (the thread-default context at construction,
// normally the global default one).
//
// Time is CLOCK_MONOTONIC in nanoseconds (g_get_monotonic_time() * 1000), the same clock
// GLib's sources use. Two sources:
// - the timer: one GSource whose ready time is the core's next deadline. GLib timeouts
//   round to whole milliseconds while ngtcp2 paces in sub-millisecond steps, so a
//   deadline less than 1 ms away fires at once (measured +23-48 % at 20 ms RTT,
//   NOTES-transport.md);
// - the write pass: after a batch of received datagrams (or any wake()), one idle
//   source at default priority writes once, instead of once per datagram.
#pragma once

#include <glib.h>

#include "quic/quic_connection.h"
#include "glib_ptr.h"

namespace natfwd {

class TunnelCore;

class CoreLoop {
 public:
  explicit CoreLoop(TunnelCore& core);
  ~CoreLoop();
  CoreLoop(const CoreLoop&) = delete;
  CoreLoop& operator=(const CoreLoop&) = delete;

  static quic::Timestamp now();  // CLOCK_MONOTONIC, ns

  // A write pass is due: one runs after the sources ready now.
  void wake();
  // A write pass now (e.g. so CONNECTION_CLOSE is on the wire before the tunnel goes).
  void write_now();
  // The path refused a datagram: no write pass until resume_write().
  void blocked() { blocked_ = true; }
  void resume_write();
  // After the core was given input or time outside a pass: re-arm the timer.
  void arm_timer();

 private:
  static gboolean on_timer(gpointer self);
  static gboolean on_write(gpointer self);
  void write_pass();

  TunnelCore& core_;
  GMainContextPtr context_;
  bool blocked_ = false;
  quic::Timestamp last_past_expiry_ = quic::kNever;  // a deadline already past when last armed
  GSourcePtr timer_;       // ready time = the core's deadline
  GSourcePtr write_idle_;  // set while a write pass is scheduled
};

}  // namespace natfwd
