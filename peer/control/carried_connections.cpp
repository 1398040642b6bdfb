#include "control/carried_connections.h"

#include <fcntl.h>
#include <glib-unix.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "control/control_server.h"
#include "log.h"
#include "nc/stdio_splice.h"
#include "rendezvous.pb.h"
#include "tcp_reset.h"

namespace natfwd {

struct CarriedConnections::Carried {
  CarriedConnections* owner = nullptr;
  GObjectPtr<GSocketConnection> tcp;
  HostPort target;
  OpenResultHandler on_result;
  int control_fd = -1;  // until the splice takes it
  std::string answer;
  std::unique_ptr<StdioSplice> splice;
  // After the state they use: destroyed first.
  SourceId answer_watch;
  SourceId answer_timeout;

  ~Carried() {
    answer_watch.reset();
    answer_timeout.reset();
    splice.reset();
    if (control_fd >= 0) close(control_fd);
  }
};

std::unique_ptr<CarriedConnections> CarriedConnections::through_running_peer(
    const std::string& state_dir, const std::string& peer) {
  std::string error;
  const std::optional<std::string> answer = query_control(state_dir, "carries " + peer, error);
  if (!answer || *answer != "yes\n") {
    log::debug("no running peer carries connections to %s: %s", peer.c_str(),
               answer ? answer->c_str() : error.c_str());
    return nullptr;
  }
  return std::unique_ptr<CarriedConnections>(new CarriedConnections(state_dir, peer));
}

CarriedConnections::CarriedConnections(std::string state_dir, std::string peer)
    : state_dir_(std::move(state_dir)),
      peer_(std::move(peer)),
      control_path_(state_dir_ + "/" + kControlSocketName) {}

CarriedConnections::~CarriedConnections() = default;

void CarriedConnections::forward(GSocketConnection* tcp, const HostPort& target,
                                 OpenResultHandler on_result) {
  auto carried = std::make_unique<Carried>();
  carried->owner = this;
  carried->tcp.reset(G_SOCKET_CONNECTION(g_object_ref(tcp)));
  carried->target = target;
  carried->on_result = std::move(on_result);
  Carried& c = *carried;
  carried_.push_back(std::move(carried));
  std::string error;
  // A local Unix socket: connecting and writing one line do not wait on the network.
  c.control_fd = connect_control(state_dir_, "connect " + peer_ + " " + target.to_string() + " status",
                                 error);
  if (c.control_fd < 0) return fail(c, kOpenFailedLocally, "the running peer went away: " + error);
  fcntl(c.control_fd, F_SETFL, fcntl(c.control_fd, F_GETFL) | O_NONBLOCK);
  c.answer_watch.reset(g_unix_fd_add(c.control_fd, G_IO_IN, on_answer_readable, &c));
  c.answer_timeout.reset(
      g_timeout_add_seconds(kControlConnectAnswerSeconds, on_answer_timeout, &c));
}

gboolean CarriedConnections::on_answer_readable(gint, GIOCondition, gpointer data) {
  auto* carried = static_cast<Carried*>(data);
  const gboolean keep =
      guard_callback("carried connection: answer", G_SOURCE_REMOVE, [carried]() -> gboolean {
        carried->owner->read_answer(*carried);
        // read_answer released the watch once the line (or the end) came.
        return carried->answer_watch ? G_SOURCE_CONTINUE : G_SOURCE_REMOVE;
      });
  if (keep == G_SOURCE_REMOVE) carried->answer_watch.release();
  return keep;
}

gboolean CarriedConnections::on_answer_timeout(gpointer data) {
  auto* carried = static_cast<Carried*>(data);
  carried->answer_timeout.release();
  guard_callback("carried connection: timeout", [carried] {
    carried->owner->fail(*carried, kOpenFailedLocally,
                         "the running peer did not answer within " +
                             std::to_string(kControlConnectAnswerSeconds) + " s");
  });
  return G_SOURCE_REMOVE;
}

void CarriedConnections::read_answer(Carried& carried) {
  // A byte at a time: nothing of the stream after the line may be taken.
  for (;;) {
    char c = 0;
    const ssize_t n = recv(carried.control_fd, &c, 1, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) return;
    if (n <= 0) {
      carried.answer_watch.release();
      return fail(carried, kOpenFailedLocally, "the running peer closed the connection");
    }
    if (c == '\n') {
      carried.answer_watch.release();
      return answered(carried, carried.answer);
    }
    carried.answer += c;
    if (carried.answer.size() > 4096) {
      carried.answer_watch.release();
      return fail(carried, kOpenFailedLocally, "the running peer's answer is too long");
    }
  }
}

void CarriedConnections::answered(Carried& carried, const std::string& line) {
  carried.answer_timeout.reset();
  if (line != "ok") {
    // "error N: why" (N the stream-open status), else a line this version does not
    // expect from a peer that said it carries: a local failure.
    int status = kOpenFailedLocally;
    std::string why = line;
    if (line.rfind("error ", 0) == 0) {
      char* end = nullptr;
      const long parsed = strtol(line.c_str() + 6, &end, 10);
      if (end != line.c_str() + 6 && *end == ':') {
        status = static_cast<int>(parsed);
        why = std::string(end + 1 + (end[1] == ' ' ? 1 : 0));
      }
    }
    return fail(carried, status, why);
  }
  if (carried.on_result) carried.on_result(wire::StreamOpenResult::OK, "");
  const int tcp_fd = g_socket_get_fd(g_socket_connection_get_socket(carried.tcp.get()));
  Carried* c = &carried;
  carried.splice = std::make_unique<StdioSplice>(
      tcp_fd, dup(tcp_fd), carried.control_fd, [this, c](bool ok, const std::string& error) {
        if (!ok) {
          log::debug("%s via %s (the running peer's tunnel): %s", c->target.to_string().c_str(),
                     peer_.c_str(), error.c_str());
          if (c->on_result) c->on_result(kStreamBroken, error);
          reset_connection(c->tcp.get());
        }
        finish(*c);
      });
  carried.control_fd = -1;  // the splice's now
}

void CarriedConnections::fail(Carried& carried, int status, const std::string& why) {
  carried.answer_watch.reset();  // a callback's own source was released already
  carried.answer_timeout.reset();
  if (carried.on_result) {
    carried.on_result(status, why);
  } else {
    // A -L connection: its client learns nothing but the reset, so the log says why.
    log::warn("%s via %s (the running peer's tunnel): %s", carried.target.to_string().c_str(),
              peer_.c_str(), open_result_text(status, why).c_str());
    reset_connection(carried.tcp.get());
  }
  finish(carried);
}

void CarriedConnections::finish(Carried& carried) {
  for (auto it = carried_.begin(); it != carried_.end(); ++it) {
    if (it->get() != &carried) continue;
    // We may be inside one of its callbacks (the splice's, an answer watch's).
    delete_later(std::move(*it));
    carried_.erase(it);
    return;
  }
}

}  // namespace natfwd
