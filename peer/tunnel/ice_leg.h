// One ICE session and its signalling through the relay under one session id: the
// credentials and the candidates trickled each way (RFC 8838), with our relay
// candidates held back a moment (see kRelayCandidateHoldMs in ice_leg.cpp).
//
// A tunnel runs on one leg. A path restart (after a network change) sets up a second
// leg under a new session id, possibly through another relay; it carries the same
// QUIC connection once it has a working pair, so open streams survive the move.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include <glib.h>

#include "ice/ice_session.h"
#include "rendezvous.pb.h"
#include "glib_ptr.h"

namespace natfwd {

class IceLeg {
 public:
  struct Callbacks {
    std::function<void(const wire::Envelope&)> send_to_relay;
    std::function<void(std::span<const std::byte>)> on_datagram;
    std::function<void(IceLeg&)> on_selected_pair;   // path() tells which
    std::function<void(IceLeg&)> on_writable;
    std::function<void(IceLeg&, const std::string& reason)> on_failed;
    // A remote candidate went to libnice: connectivity checks are running.
    std::function<void(IceLeg&)> on_checking;
  };

  IceLeg(uint64_t session_id, const IceSession::Options& options, Callbacks callbacks);
  ~IceLeg();
  IceLeg(const IceLeg&) = delete;
  IceLeg& operator=(const IceLeg&) = delete;

  uint64_t session_id() const { return session_id_; }
  IceSession& ice() { return *ice_; }
  wire::IceParams local_params() const;
  void start_gathering() { ice_->start_gathering(); }
  // The other side's ufrag/pwd; candidates that came before them are applied now.
  void set_remote_params(const wire::IceParams& params);
  bool has_remote_params() const { return remote_params_set_; }
  // A Candidate message of this leg's session.
  void on_candidate(const wire::Candidate& candidate);
  bool has_path() const { return have_path_; }
  // Whether relayed candidates were offered, each way (for failure sentences).
  bool local_relay_candidates() const { return local_relay_candidates_; }
  bool remote_relay_candidates() const { return remote_relay_candidates_; }
  const SelectedPath& path() const { return path_; }

 private:
  static gboolean on_relay_hold_over(gpointer self);
  void release_held_candidates();
  void send_candidate(const std::string& sdp, bool end_of_candidates);
  void apply_remote_candidate(const std::string& sdp);

  uint64_t session_id_;
  Callbacks callbacks_;
  std::unique_ptr<IceSession> ice_;
  bool remote_params_set_ = false;
  std::vector<std::string> early_candidates_;  // arrived before the credentials
  bool relay_hold_over_ = false;
  GSourcePtr relay_hold_timer_;
  std::vector<std::string> held_local_;
  bool held_local_done_ = false;
  bool have_path_ = false;
  SelectedPath path_;
  bool local_relay_candidates_ = false, remote_relay_candidates_ = false;
};

}  // namespace natfwd
