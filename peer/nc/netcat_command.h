// `peer nc NAME HOST:PORT`: stdin/stdout carried to HOST:PORT as the peer NAME sees
// it, for `ssh -o ProxyCommand='peer nc home %h:%p'`.
//
// stdout carries only the connection's bytes: the peer's own stdout lines (the path
// line) go to stderr with -v, else nowhere. Exit 0 when both directions finished cleanly;
// 1 with one line on stderr when the stream could not be opened (not served, no such
// peer, not authorised, no relay) or broke.
#pragma once

#include <memory>
#include <optional>
#include <string>

#include <glib.h>

#include "address.h"
#include "glib_ptr.h"
#include "nc/stdio_splice.h"

namespace natfwd {

class PeerApp;

class NetcatCommand {
 public:
  // When a peer with a tunnel to `peer` runs with `state_dir` (a laptop's daemon), has
  // it carry stdin/stdout through that tunnel (control_server.h, `connect`): no new
  // tunnel, no setup time. Returns the exit code, or nullopt when no such peer runs
  // (then the caller sets up its own tunnel). `peer` is NAME or NAME@KEYID.
  static std::optional<int> through_running_peer(const std::string& state_dir,
                                                 const std::string& peer,
                                                 const HostPort& target);

  // Call before anything else prints: moves the data stdout out of the way.
  NetcatCommand(std::string peer_name, HostPort target, GMainLoop* loop);
  ~NetcatCommand();
  // Hands the connection to the app (whose start() succeeded).
  void start(PeerApp& app);
  int exit_code() const { return exit_code_; }
  // The main loop ended for another reason than us (SIGHUP from ssh at the end of its
  // session, SIGINT, SIGTERM): what the shutdown does to the stream is no failure.
  void stopped_by_signal();

 private:
  void open_result(int status, const std::string& detail);
  void splice_done(bool ok, const std::string& error);
  void quit(int code);
  static gboolean on_drain_check(gpointer self);

  std::string peer_name_;
  HostPort target_;
  GMainLoop* loop_;
  PeerApp* app_ = nullptr;
  std::unique_ptr<StdioSplice> splice_;
  int exit_code_ = 0;
  bool quitting_ = false;
  SourceId drain_timer_;
  gint64 drain_deadline_us_ = 0;
};

}  // namespace natfwd
