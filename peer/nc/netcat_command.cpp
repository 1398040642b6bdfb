#include "nc/netcat_command.h"

#include <fcntl.h>
#include <glib-unix.h>
#include <sys/socket.h>
#include <unistd.h>

#include <csignal>

#include "control/control_server.h"
#include "log.h"
#include "peer_app.h"
#include "rendezvous.pb.h"

namespace natfwd {
namespace {

// After both directions finished, wait at most this long for the stream's last bytes
// to be acknowledged before closing the tunnel.
constexpr int kDrainSeconds = 5;

// One line from `fd`, read a byte at a time so that none of the stream after it is
// taken; nullopt when the peer closed or did not answer in time.
std::optional<std::string> read_line(int fd) {
  timeval tv{kControlConnectAnswerSeconds, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  std::string line;
  while (line.size() < 4096) {
    char c = 0;
    const ssize_t n = recv(fd, &c, 1, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return std::nullopt;
    if (c == '\n') return line;
    line += c;
  }
  return std::nullopt;
}

gboolean quit_loop(gpointer loop) {
  g_main_loop_quit(static_cast<GMainLoop*>(loop));
  return G_SOURCE_CONTINUE;
}

}  // namespace

NetcatCommand::NetcatCommand(std::string peer_name, HostPort target, GMainLoop* loop)
    : peer_name_(std::move(peer_name)), target_(std::move(target)), loop_(loop) {
  // A reader that goes away must not kill us with SIGPIPE: write() reports EPIPE.
  signal(SIGPIPE, SIG_IGN);
  const int data_out = dup(STDOUT_FILENO);
  // The path line and the like: to stderr with -v, else nowhere (ssh shows our stderr
  // on every connection).
  const int lines = log::enabled(log::Level::kDebug) ? dup(STDERR_FILENO)
                                                     : open("/dev/null", O_WRONLY | O_CLOEXEC);
  dup2(lines, STDOUT_FILENO);
  close(lines);
  splice_ = std::make_unique<StdioSplice>(STDIN_FILENO, data_out,
                                          [this](bool ok, const std::string& error) {
                                            splice_done(ok, error);
                                          });
}

NetcatCommand::~NetcatCommand() = default;

std::optional<int> NetcatCommand::through_running_peer(const std::string& state_dir,
                                                       const std::string& peer,
                                                       const HostPort& target) {
  std::string error;
  const int fd = connect_control(state_dir, "connect " + peer + " " + target.to_string(), error);
  if (fd < 0) return std::nullopt;  // none runs here: set up our own tunnel
  const std::optional<std::string> answer = read_line(fd);
  const std::string where = target.to_string() + " via " + peer;
  if (!answer) {
    close(fd);
    log::error("nc: %s: the running peer (%s) did not answer within %d s", where.c_str(),
               state_dir.c_str(), kControlConnectAnswerSeconds);
    return 1;
  }
  if (answer->rfind("error: ", 0) == 0 && answer->find("unknown control command") == std::string::npos) {
    close(fd);
    log::error("nc: %s: %s", where.c_str(), answer->substr(7).c_str());
    return 1;
  }
  if (*answer != "ok") {
    // "no-tunnel: ..." (it keeps none to this peer) or an older peer that does not know
    // `connect`: our own tunnel then.
    close(fd);
    log::debug("nc: the running peer does not carry this: %s", answer->c_str());
    return std::nullopt;
  }
  log::debug("nc: %s carried by the running peer (%s)", where.c_str(), state_dir.c_str());
  signal(SIGPIPE, SIG_IGN);
  GMainLoopPtr owned_loop(g_main_loop_new(nullptr, FALSE));
  GMainLoop* loop = owned_loop.get();
  int exit_code = 0;
  StdioSplice splice(STDIN_FILENO, dup(STDOUT_FILENO), fd,
                     [&](bool ok, const std::string& failure) {
                       if (!ok) {
                         log::error("nc: %s: %s", where.c_str(), failure.c_str());
                         exit_code = 1;
                       }
                       g_main_loop_quit(loop);
                     });
  // ssh's SIGHUP at the end of its session, and SIGINT/SIGTERM: the daemon's tunnel
  // stays; only this connection ends (it sees EOF when we close our end).
  SourceId hup(g_unix_signal_add(SIGHUP, quit_loop, loop));
  SourceId interrupt(g_unix_signal_add(SIGINT, quit_loop, loop));
  SourceId term(g_unix_signal_add(SIGTERM, quit_loop, loop));
  g_main_loop_run(loop);
  return exit_code;
}

void NetcatCommand::start(PeerApp& app) {
  app_ = &app;
  GObjectPtr<GSocketConnection> connection = splice_->take_connection();
  app.forward_connection(connection.get(), target_,
                         [this](int status, const std::string& detail) {
                           open_result(status, detail);
                         });
}

void NetcatCommand::open_result(int status, const std::string& detail) {
  if (quitting_) return;
  if (status == wire::StreamOpenResult::OK) {
    log::debug("nc: connected to %s via %s", target_.to_string().c_str(), peer_name_.c_str());
    return;
  }
  log::error("nc: %s via %s: %s", target_.to_string().c_str(), peer_name_.c_str(),
             open_result_text(status, detail).c_str());
  quit(1);
}

void NetcatCommand::splice_done(bool ok, const std::string& error) {
  if (quitting_) return;  // the failure was reported already
  if (!ok) {
    log::error("nc: %s via %s: %s", target_.to_string().c_str(), peer_name_.c_str(),
               error.c_str());
    quit(1);
    return;
  }
  // Both directions are done; the tunnel may still hold our last bytes unacknowledged.
  drain_deadline_us_ = g_get_monotonic_time() + kDrainSeconds * G_USEC_PER_SEC;
  if (on_drain_check(this) == G_SOURCE_CONTINUE)
    drain_timer_.reset(g_timeout_add(20, on_drain_check, this));
}

gboolean NetcatCommand::on_drain_check(gpointer self) {
  auto* command = static_cast<NetcatCommand*>(self);
  const gboolean keep = guard_callback("nc: drain", G_SOURCE_REMOVE, [command]() -> gboolean {
    if (command->quitting_) return G_SOURCE_REMOVE;
    uint64_t open = 0;
    for (const auto& tunnel : command->app_->status().tunnels) open += tunnel.open_streams;
    if (open == 0 || g_get_monotonic_time() > command->drain_deadline_us_) {
      command->quit(0);
      return G_SOURCE_REMOVE;
    }
    return G_SOURCE_CONTINUE;
  });
  if (keep == G_SOURCE_REMOVE) command->drain_timer_.release();
  return keep;
}

void NetcatCommand::stopped_by_signal() {
  if (quitting_) return;
  quitting_ = true;
  exit_code_ = 0;
}

void NetcatCommand::quit(int code) {
  if (quitting_) return;
  quitting_ = true;
  exit_code_ = code;
  g_main_loop_quit(loop_);
}

}  // namespace natfwd
