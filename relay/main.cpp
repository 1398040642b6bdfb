// relay: the public rendezvous and STUN server of natfwd (see DESIGN.md).
//
//   relay [--listen ADDR:PORT] [--state-dir DIR] [-v] [--max-peers-per-address N]
//
// Exit status: 0 after SIGINT/SIGTERM, 1 when it cannot start (e.g. port in use),
// 2 on a usage error.
#include <glib-unix.h>
#include <glib.h>
#include <glib/gstdio.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <exception>

#include <google/protobuf/stubs/common.h>

#include "log.h"
#include "relay_options.h"
#include "server/relay_server.h"

#ifndef NATFWD_VERSION
#define NATFWD_VERSION "0"
#endif

namespace {

constexpr int kExitFailure = 1;
constexpr int kExitUsage = 2;

gboolean on_stop_signal(gpointer loop) {
  natfwd::log::info("stopping");
  g_main_loop_quit(static_cast<GMainLoop*>(loop));
  return G_SOURCE_CONTINUE;
}

int run(const natfwd::relay::RelayOptions& options) {
  using namespace natfwd;
  if (g_mkdir_with_parents(options.state_dir.c_str(), 0700) != 0) {
    fprintf(stderr, "relay: --state-dir: cannot create '%s': %s\n", options.state_dir.c_str(),
            g_strerror(errno));
    return kExitFailure;
  }

  relay::RelayServerConfig config;
  config.listen = options.listen;
  config.rendezvous.max_connections_per_address = options.max_peers_per_address;
  config.software = "natfwd-relay " NATFWD_VERSION;

  GMainLoop* loop = g_main_loop_new(nullptr, FALSE);
  int status = 0;
  try {
    relay::RelayServer server(config);
    log::ready("relay listening on %s (stun/udp, rendezvous/tcp)",
               server.local_address().to_string().c_str());
    const guint sigint = g_unix_signal_add(SIGINT, on_stop_signal, loop);
    const guint sigterm = g_unix_signal_add(SIGTERM, on_stop_signal, loop);
    g_main_loop_run(loop);
    g_source_remove(sigint);
    g_source_remove(sigterm);
  } catch (const std::exception& e) {
    fprintf(stderr, "relay: %s\n", e.what());
    status = kExitFailure;
  }
  g_main_loop_unref(loop);
  return status;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace natfwd;
  relay::RelayOptions options;
  std::string error;
  if (!relay::parse_relay_options(argc, argv, options, error)) {
    fprintf(stderr, "relay: %s\n", error.c_str());
    return kExitUsage;
  }
  log::init("relay", options.verbose ? log::Level::kDebug : log::Level::kInfo);
  const int status = run(options);
  google::protobuf::ShutdownProtobufLibrary();
  return status;
}
