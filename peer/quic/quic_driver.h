// Production glue: runs one quic::Connection from the GLib main loop (the thread-default
// main context at construction time, normally the global default one).
//
// Time is CLOCK_MONOTONIC in nanoseconds (g_get_monotonic_time() * 1000), the same clock
// GLib's sources use. Two sources:
// - the timer: one GSource whose ready time is the connection's expiry. GLib timeouts
//   round to whole milliseconds while ngtcp2 paces in sub-millisecond steps, so an
//   expiry less than 1 ms away fires at once (measured +23-48 % at 20 ms RTT);
// - the write pass: after a batch of received datagrams (or any flush()), one idle
//   source at default priority writes once, instead of once per datagram.
#pragma once

#include <functional>
#include <memory>
#include <span>
#include <string>

#include <glib.h>

#include "glib_ptr.h"
#include "quic_connection.h"

namespace natfwd::quic {

// The observer's callbacks run from the Driver's sources. on_connection_closed may
// destroy the Driver; the other callbacks must not (defer that to an idle source).
class Driver {
 public:
  using SendDatagram = std::function<bool(std::span<const std::byte>)>;  // false = would block

  // `end_of_pass`, if given, runs after each write pass: `send` may only queue the
  // datagrams of a pass, to send them together (IceSession::flush_sends).
  Driver(const Config& config, Connection::Observer& observer, SendDatagram send,
         std::function<void()> end_of_pass = {});
  ~Driver();
  Driver(const Driver&) = delete;
  Driver& operator=(const Driver&) = delete;

  Connection& connection() { return connection_; }
  // A datagram from ICE; schedules ONE write pass after the batch.
  void receive(std::span<const std::byte> datagram);
  // The path became writable again (after `send` returned false).
  void resume_write();
  // Call after stream_write/open_stream/stream_consumed/close etc.: schedules a write pass.
  void flush();
  // The datagrams now take a new path: see Connection::move_to_new_path.
  void move_to_new_path();
  // Connection::close() plus an immediate write pass, so the CONNECTION_CLOSE copies are
  // on the wire (if the path is writable) before this returns and the Driver may be
  // destroyed right after. Inside an observer callback it cannot write at once: the
  // close goes out on the write pass that follows the callback.
  void close(uint64_t app_error, const std::string& reason);

  static Timestamp now();  // CLOCK_MONOTONIC, ns

 private:
  static gboolean on_timer(gpointer self);
  static gboolean on_write(gpointer self);
  void write_pass();
  void arm_timer();

  GMainContextPtr context_;
  Connection connection_;
  SendDatagram send_;
  std::function<void()> end_of_pass_;
  bool blocked_ = false;  // `send` said "would block"; wait for resume_write()
  Timestamp last_past_expiry_ = kNever;  // a deadline already past when last armed
  // Cleared by the destructor: lets a pass notice that on_connection_closed destroyed us.
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
  GSourcePtr timer_;       // ready time = connection expiry
  GSourcePtr write_idle_;  // set while a write pass is scheduled
};

}  // namespace natfwd::quic
