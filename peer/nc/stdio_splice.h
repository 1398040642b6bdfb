// `peer nc`'s two file descriptors (stdin, stdout) as one connection a tunnel can
// carry: one end of a Unix socket pair goes to the tunnel like an accepted -L
// connection, and this class copies between the other end and the descriptors.
//
// EOF on input half-closes (shutdown SHUT_WR, which becomes a QUIC FIN); EOF from the
// tunnel closes the output (shutting down its writing side first when it is a socket). Done when both directions are finished, or on an error.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include <gio/gio.h>

#include "glib_ptr.h"

namespace natfwd {

class StdioSplice {
 public:
  using Done = std::function<void(bool ok, const std::string& error)>;

  // Does not take ownership of in_fd; takes out_fd (closed at EOF from the tunnel).
  StdioSplice(int in_fd, int out_fd, Done done);
  // The same, copying to and from `connection_fd` (a stream socket a running peer
  // carries, see control_server.h) instead of a new socket pair; takes it.
  StdioSplice(int in_fd, int out_fd, int connection_fd, Done done);
  ~StdioSplice();
  StdioSplice(const StdioSplice&) = delete;
  StdioSplice& operator=(const StdioSplice&) = delete;

  // The tunnel's end (a new reference each call).
  GObjectPtr<GSocketConnection> take_connection();

 private:
  // One direction: read `from`, buffer, write `to`.
  struct Pipe {
    int from = -1, to = -1;
    SourceId read_watch, write_watch;
    std::vector<char> buffer;
    size_t offset = 0;
    bool eof = false, done = false;
  };
  static gboolean on_readable(gint fd, GIOCondition, gpointer self);
  static gboolean on_writable(gint fd, GIOCondition, gpointer self);
  Pipe& pipe_for(int fd, bool reading);
  void pump(Pipe& pipe);
  void finish_direction(Pipe& pipe);
  void fail(const std::string& error);
  void stop_watches(Pipe& pipe);
  void start_pipes();

  int in_fd_, out_fd_;
  int in_flags_ = -1;
  int ours_ = -1;               // our end of the socket pair, or the carried connection
  GObjectPtr<GSocketConnection> theirs_;
  Pipe up_;    // stdin -> tunnel
  Pipe down_;  // tunnel -> stdout
  Done done_;
  bool finished_ = false;
};

}  // namespace natfwd
