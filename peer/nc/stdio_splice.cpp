#include "nc/stdio_splice.h"

#include <fcntl.h>
#include <glib-unix.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>

namespace natfwd {
namespace {

constexpr size_t kChunk = 64 * 1024;

void set_nonblocking(int fd) { fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK); }

}  // namespace

StdioSplice::StdioSplice(int in_fd, int out_fd, Done done)
    : in_fd_(in_fd), out_fd_(out_fd), done_(std::move(done)) {
  int pair[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) != 0)
    throw std::runtime_error(std::string("socketpair: ") + strerror(errno));
  ours_ = pair[0];
  GError* raw_error = nullptr;
  GObjectPtr<GSocket> socket(g_socket_new_from_fd(pair[1], &raw_error));
  GErrorPtr error(raw_error);
  if (!socket) throw std::runtime_error(std::string("socket pair: ") + error->message);
  theirs_.reset(g_socket_connection_factory_create_connection(socket.get()));
  start_pipes();
}

StdioSplice::StdioSplice(int in_fd, int out_fd, int connection_fd, Done done)
    : in_fd_(in_fd), out_fd_(out_fd), ours_(connection_fd), done_(std::move(done)) {
  start_pipes();
}

void StdioSplice::start_pipes() {
  // Restored at the end: stdin may be a terminal shared with the shell.
  in_flags_ = fcntl(in_fd_, F_GETFL);
  set_nonblocking(in_fd_);
  set_nonblocking(out_fd_);
  set_nonblocking(ours_);
  up_.from = in_fd_;
  up_.to = ours_;
  down_.from = ours_;
  down_.to = out_fd_;
  up_.read_watch.reset(g_unix_fd_add(up_.from, G_IO_IN, on_readable, this));
  down_.read_watch.reset(g_unix_fd_add(down_.from, G_IO_IN, on_readable, this));
}

StdioSplice::~StdioSplice() {
  stop_watches(up_);
  stop_watches(down_);
  if (in_flags_ >= 0) fcntl(in_fd_, F_SETFL, in_flags_);
  if (ours_ >= 0) close(ours_);
  if (!down_.done && out_fd_ >= 0) close(out_fd_);
}

GObjectPtr<GSocketConnection> StdioSplice::take_connection() {
  if (!theirs_) throw std::logic_error("this splice carries a connection of its own");
  return ref_object(theirs_.get());
}

void StdioSplice::stop_watches(Pipe& pipe) {
  pipe.read_watch.reset();
  pipe.write_watch.reset();
}

StdioSplice::Pipe& StdioSplice::pipe_for(int fd, bool reading) {
  // up_ reads stdin and writes ours_; down_ reads ours_ and writes stdout.
  if (reading) return fd == up_.from ? up_ : down_;
  return fd == up_.to ? up_ : down_;
}

gboolean StdioSplice::on_readable(gint fd, GIOCondition, gpointer self) {
  auto* splice = static_cast<StdioSplice*>(self);
  Pipe& pipe = splice->pipe_for(fd, true);
  pipe.read_watch.release();  // pump() adds it again when it wants more
  guard_callback("nc: read", [&] { splice->pump(pipe); });
  return G_SOURCE_REMOVE;
}

gboolean StdioSplice::on_writable(gint fd, GIOCondition, gpointer self) {
  auto* splice = static_cast<StdioSplice*>(self);
  Pipe& pipe = splice->pipe_for(fd, false);
  pipe.write_watch.release();
  guard_callback("nc: write", [&] { splice->pump(pipe); });
  return G_SOURCE_REMOVE;
}

void StdioSplice::pump(Pipe& pipe) {
  for (;;) {
    if (finished_ || pipe.done) return;
    // Write what is buffered first.
    while (pipe.offset < pipe.buffer.size()) {
      ssize_t n = write(pipe.to, pipe.buffer.data() + pipe.offset, pipe.buffer.size() - pipe.offset);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && errno == EAGAIN) {
        if (!pipe.write_watch)
          pipe.write_watch.reset(g_unix_fd_add(pipe.to, G_IO_OUT, on_writable, this));
        return;
      }
      if (n < 0) {
        fail(std::string(&pipe == &up_ ? "writing to the tunnel: " : "writing to stdout: ") +
             strerror(errno));
        return;
      }
      pipe.offset += static_cast<size_t>(n);
    }
    pipe.buffer.clear();
    pipe.offset = 0;
    if (pipe.eof) {
      finish_direction(pipe);
      return;
    }
    pipe.buffer.resize(kChunk);
    ssize_t n = read(pipe.from, pipe.buffer.data(), pipe.buffer.size());
    if (n < 0 && errno == EINTR) n = read(pipe.from, pipe.buffer.data(), pipe.buffer.size());
    if (n < 0 && errno == EAGAIN) {
      pipe.buffer.clear();
      if (!pipe.read_watch)
        pipe.read_watch.reset(g_unix_fd_add(pipe.from, G_IO_IN, on_readable, this));
      return;
    }
    if (n < 0) {
      pipe.buffer.clear();
      if (&pipe == &down_ && errno == ECONNRESET) {
        fail("the connection was reset");
      } else {
        fail(std::string(&pipe == &up_ ? "reading stdin: " : "reading from the tunnel: ") +
             strerror(errno));
      }
      return;
    }
    pipe.buffer.resize(static_cast<size_t>(n));
    if (n == 0) pipe.eof = true;
  }
}

void StdioSplice::finish_direction(Pipe& pipe) {
  pipe.done = true;
  stop_watches(pipe);
  if (&pipe == &up_) {
    shutdown(ours_, SHUT_WR);  // -> QUIC FIN: the far side reads EOF
  } else {
    // Whoever reads our stdout sees EOF; a socket there (a carried TCP connection,
    // whose reading side stays open through another descriptor) gets its FIN.
    shutdown(out_fd_, SHUT_WR);
    close(out_fd_);
  }
  if (up_.done && down_.done && !finished_) {
    finished_ = true;
    done_(true, "");
  }
}

void StdioSplice::fail(const std::string& error) {
  if (finished_) return;
  finished_ = true;
  stop_watches(up_);
  stop_watches(down_);
  done_(false, error);
}

}  // namespace natfwd
