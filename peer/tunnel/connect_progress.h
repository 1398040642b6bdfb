// The phases of one connection attempt as a person follows them on stderr (the
// connecting side of -L, -D and nc):
//
//   home: relay reached, asking for the peer
//   home: peer found (key ...)
//   home: gathering candidates
//   home: connectivity checks
//   home: connected direct udp in 84 ms
//
// each printed once, and on failure one sentence naming the phase and the likely
// cause. Pure: the tunnel reports events and prints what comes back.
#pragma once

#include <optional>
#include <string>

namespace natfwd {

enum class ConnectPhase {
  kRelay,           // the relay has the request; waiting for the peer's answer
  kPeerFound,       // the serving peer answered through the relay
  kGathering,       // our candidates are being gathered and trickled
  kChecks,          // ICE connectivity checks are running
  kQuicHandshake,   // a pair works; QUIC + TLS 1.3 handshake with the peer's key
  kConnected,
};

class ConnectProgress {
 public:
  explicit ConnectProgress(std::string peer_name) : peer_(std::move(peer_name)) {}

  // The line to print when `phase` is reached the first time (nullopt otherwise, or for
  // a phase before the current one). `detail` goes after the phase's words.
  std::optional<std::string> reach(ConnectPhase phase, const std::string& detail = "");
  ConnectPhase phase() const { return phase_; }

  // "connecting to home failed during the connectivity checks: <cause>"
  std::string failure(const std::string& cause) const;

  // Likely causes, worded for a person.
  static std::string no_such_peer(const std::string& peer);
  static std::string refused(const std::string& peer, const std::string& detail);
  static std::string ice_failed(bool local_relay_candidates, bool remote_relay_candidates,
                                bool force_relay = false);
  static std::string key_mismatch(const std::string& peer);

 private:
  std::string peer_;
  ConnectPhase phase_ = ConnectPhase::kRelay;
  bool started_ = false;
};

}  // namespace natfwd
