// The tunnels one owner (a remote peer, or the serving side) holds, by tunnel id. A
// tunnel reports its end from inside one of its own calls, so it is destroyed later,
// from an idle callback.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "tunnel/tunnel.h"

namespace natfwd {

class TunnelSet {
 public:
  TunnelSet() = default;
  TunnelSet(const TunnelSet&) = delete;
  TunnelSet& operator=(const TunnelSet&) = delete;

  Tunnel& add(std::unique_ptr<Tunnel> tunnel) {
    Tunnel& added = *tunnel;
    tunnels_[added.tunnel_id()] = std::move(tunnel);
    return added;
  }
  // Takes the tunnel out and frees it once the current callback has returned.
  void destroy_later(Tunnel& tunnel) {
    auto it = tunnels_.find(tunnel.tunnel_id());
    if (it == tunnels_.end()) return;
    Tunnel* doomed = it->second.release();
    tunnels_.erase(it);
    g_idle_add_full(G_PRIORITY_DEFAULT, [](gpointer p) -> gboolean {
      delete static_cast<Tunnel*>(p);
      return G_SOURCE_REMOVE;
    }, doomed, nullptr);
  }
  Tunnel* find(uint64_t tunnel_id) const {
    auto it = tunnels_.find(tunnel_id);
    return it == tunnels_.end() ? nullptr : it->second.get();
  }
  // A snapshot: closing a tunnel edits the set.
  std::vector<Tunnel*> list() const {
    std::vector<Tunnel*> out;
    for (const auto& [id, tunnel] : tunnels_) out.push_back(tunnel.get());
    return out;
  }
  void close_all(const std::string& reason) {
    for (Tunnel* tunnel : list()) tunnel->close(reason);
  }
  void clear() { tunnels_.clear(); }

 private:
  std::map<uint64_t, std::unique_ptr<Tunnel>> tunnels_;
};

}  // namespace natfwd
