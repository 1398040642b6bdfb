#include "tunnel/connect_progress.h"

namespace natfwd {
namespace {

const char* phase_words(ConnectPhase phase) {
  switch (phase) {
    case ConnectPhase::kRelay: return "relay reached, asking for the peer";
    case ConnectPhase::kPeerFound: return "peer found";
    case ConnectPhase::kGathering: return "gathering candidates";
    case ConnectPhase::kChecks: return "connectivity checks";
    case ConnectPhase::kQuicHandshake: return "QUIC handshake";
    case ConnectPhase::kConnected: return "connected";
  }
  return "";
}

const char* failed_during(ConnectPhase phase) {
  switch (phase) {
    case ConnectPhase::kRelay: return "while looking for the peer at the relay";
    case ConnectPhase::kPeerFound:
    case ConnectPhase::kGathering: return "while gathering candidates";
    case ConnectPhase::kChecks: return "during the connectivity checks";
    case ConnectPhase::kQuicHandshake: return "during the QUIC handshake";
    case ConnectPhase::kConnected: return "after connecting";
  }
  return "";
}

}  // namespace

std::optional<std::string> ConnectProgress::reach(ConnectPhase phase, const std::string& detail) {
  if (started_ && phase <= phase_) return std::nullopt;
  started_ = true;
  phase_ = phase;
  std::string line = peer_ + ": " + phase_words(phase);
  if (!detail.empty()) line += " " + detail;
  return line;
}

std::string ConnectProgress::failure(const std::string& cause) const {
  return "connecting to " + peer_ + " failed " + failed_during(phase_) + ": " + cause;
}

std::string ConnectProgress::no_such_peer(const std::string& peer) {
  return "peer " + peer + " is not registered at the relay (is `peer --name " + peer +
         " --serve ...` running there, with the same relay?)";
}

std::string ConnectProgress::refused(const std::string& peer, const std::string& detail) {
  return peer + " refused this peer" + (detail.empty() ? "" : ": " + detail) +
         " (on " + peer + ": `peer invite`, then `peer pair CODE` here; or --allow this key id there)";
}

std::string ConnectProgress::ice_failed(bool local_relay_candidates, bool remote_relay_candidates,
                                        bool force_relay) {
  if (force_relay && !local_relay_candidates)
    return "ICE checks failed: --force-relay allows only TURN, and this peer got no TURN "
           "allocation (the relay offers no TURN, or none is reachable from here)";
  if (!local_relay_candidates && !remote_relay_candidates)
    return "ICE checks failed: no direct path (NATs that map per destination, such as "
           "symmetric ones, or UDP blocked) and TURN unavailable on both sides";
  if (local_relay_candidates && remote_relay_candidates)
    return "ICE checks failed even through TURN: the relay's TURN server did not carry the "
           "checks (a firewall between it and one side?)";
  return std::string("ICE checks failed: no direct path, and TURN worked only on ") +
         (local_relay_candidates ? "this" : "the other") + " side";
}

std::string ConnectProgress::key_mismatch(const std::string& peer) {
  return "QUIC handshake failed: key mismatch (" + peer +
         " presented a key that is not the one pinned for it or announced by the relay)";
}

}  // namespace natfwd
