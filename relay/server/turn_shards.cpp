#include "server/turn_shards.h"

#include <stdexcept>

#include "log.h"

namespace natfwd::relay {

TurnShards::TurnShards(const std::vector<GSocket*>& sockets, const TurnServiceConfig& config,
                       const std::string& software,
                       const std::optional<DiscoverySockets>& discovery, RelayStats* stats) {
  try {
    for (size_t i = 0; i < sockets.size(); ++i) {
      auto shard = std::make_unique<Shard>();
      shard->context.reset(g_main_context_new());
      shard->loop.reset(g_main_loop_new(shard->context.get(), FALSE));
      std::promise<void> ready;
      auto started = ready.get_future();
      Shard& ref = *shard;
      shards_.push_back(std::move(shard));
      ref.thread = std::thread([&ref, socket = sockets[i], &config, &software, &discovery, stats,
                                &ready] { run(ref, socket, config, software, discovery, stats,
                                              ready); });
      started.get();  // rethrows the shard's setup failure
    }
  } catch (...) {
    stop();
    throw;
  }
}

TurnShards::~TurnShards() { stop(); }

void TurnShards::run(Shard& shard, GSocket* socket, const TurnServiceConfig& config,
                     const std::string& software, const std::optional<DiscoverySockets>& discovery,
                     RelayStats* stats, std::promise<void>& ready) {
  g_main_context_push_thread_default(shard.context.get());
  try {
    shard.turn = std::make_unique<TurnService>(socket, config);
    std::optional<DiscoverySockets> own = discovery;
    if (own) own->by_ip_port[0][0] = socket;
    shard.stun = std::make_unique<StunUdpService>(socket, software, shard.turn.get(), own,
                                                  StunUdpService::Reads::kMain);
    shard.stun->set_stats(stats);
  } catch (...) {
    shard.stun.reset();
    shard.turn.reset();
    g_main_context_pop_thread_default(shard.context.get());
    ready.set_exception(std::current_exception());
    return;
  }
  ready.set_value();
  g_main_loop_run(shard.loop.get());
  shard.stun.reset();
  shard.turn.reset();
  g_main_context_pop_thread_default(shard.context.get());
}

// A quit posted into the shard's own context: race free whether or not its loop
// has started running.
void TurnShards::stop() noexcept {
  for (auto& shard : shards_) {
    if (!shard->thread.joinable()) continue;
    GSource* quit = g_idle_source_new();
    g_source_set_callback(
        quit,
        [](gpointer loop) -> gboolean {
          g_main_loop_quit(static_cast<GMainLoop*>(loop));
          return G_SOURCE_REMOVE;
        },
        shard->loop.get(), nullptr);
    g_source_attach(quit, shard->context.get());
    g_source_unref(quit);  // the context holds it until it has run
    shard->thread.join();
  }
  shards_.clear();
}

size_t TurnShards::permission_count() const {
  size_t n = 0;
  for (const auto& shard : shards_) n += shard->turn->core().permission_count();
  return n;
}

size_t TurnShards::channel_count() const {
  size_t n = 0;
  for (const auto& shard : shards_) n += shard->turn->core().channel_count();
  return n;
}

}  // namespace natfwd::relay
