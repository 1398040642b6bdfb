#include "nc/netcat_command.h"

#include <fcntl.h>
#include <unistd.h>

#include <csignal>

#include "log.h"
#include "peer_app.h"
#include "rendezvous.pb.h"

namespace natfwd {
namespace {

// After both directions finished, wait at most this long for the stream's last bytes
// to be acknowledged before closing the tunnel.
constexpr int kDrainSeconds = 5;

std::string refusal_text(int status, const std::string& detail) {
  std::string what;
  switch (status) {
    case wire::StreamOpenResult::NOT_SERVED: what = "not served there"; break;
    case wire::StreamOpenResult::NOT_AUTHORIZED: what = "not authorised"; break;
    case wire::StreamOpenResult::RESOLVE_FAILED: what = "the serving peer cannot resolve it"; break;
    case wire::StreamOpenResult::CONNECT_FAILED: what = "the serving peer cannot connect to it"; break;
    case kOpenFailedLocally: return detail;
    case kStreamBroken: what = "the connection broke"; break;
    default: what = "refused"; break;
  }
  return detail.empty() ? what : what + " (" + detail + ")";
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
             refusal_text(status, detail).c_str());
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
