// A tunnel to one remote peer: the ICE session that found the path, the QUIC
// connection that runs over it, and one StreamBridge per forwarded TCP connection.
//
// The connecting side (-L) is ICE-controlling and the QUIC client; the serving side is
// ICE-controlled and the QUIC server. The relay only carries the setup messages
// (OpenSession/IncomingSession, AcceptSession, Candidate); once QUIC is up the tunnel
// no longer needs it.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include <gio/gio.h>

#include "identity.h"
#include "ice/ice_session.h"
#include "quic/quic_driver.h"
#include "rendezvous.pb.h"
#include "tunnel/stream_bridge.h"

namespace natfwd {

class Tunnel : public quic::Connection::Observer {
 public:
  enum class Role { kConnecting, kServing };
  struct Hooks {
    std::function<void(const wire::Envelope&)> send_to_relay;
    std::function<void(Tunnel&)> on_established;  // QUIC handshake done, key verified
    // The tunnel is dead; the owner destroys it later (never inside the call).
    std::function<void(Tunnel&, const std::string& reason)> on_closed;
    // Extra check of the remote key beyond "the key the relay announced" (the hook for
    // pinning and authorisation). Empty: no extra check.
    std::function<bool(const PublicKey&)> authorize_key;
    // "turn-tls 203.0.113.10:443" for the TURN server address libnice used.
    std::function<std::string(const std::string& server)> relay_label;
    // Serving side: a pairing request arrived on a stream (see trust/authorization.h).
    PairHandler pair;
  };

  Tunnel(Role role, uint64_t session_id, std::string remote_label, const Identity& identity,
         const IceSession::Options& ice_options, TargetPolicy target_policy, Hooks hooks);
  ~Tunnel() override;
  Tunnel(const Tunnel&) = delete;
  Tunnel& operator=(const Tunnel&) = delete;

  // Connecting side: ask the relay for `target_name`.
  void start_outgoing(const std::string& target_name);
  // Serving side: answer an IncomingSession.
  void start_incoming(const wire::IncomingSession& incoming);
  // AcceptSession, Candidate or CloseSession for this session.
  void on_relay_message(const wire::Envelope& envelope);
  // The relay link dropped: a session still waiting for the other side's answer can
  // never get it (a new link does not know the session), so it fails now instead of
  // at the setup timeout. Sessions past the answer carry on (ICE needs no relay).
  void relay_link_lost();
  // Connecting side: carry one accepted TCP connection to `target` on the remote side.
  // Held until the tunnel is up.
  void forward(GSocketConnection* tcp, const HostPort& target);
  // Connecting side: once the tunnel is up, ask the serving peer to redeem an invite
  // secret; `done` gets its answer (or a failure of the tunnel).
  using PairDone = std::function<void(bool ok, const std::string& detail)>;
  void request_pairing(const std::string& secret, PairDone done);
  // Sends CONNECTION_CLOSE and resets every forwarded connection.
  void close(const std::string& reason);

  uint64_t session_id() const { return session_id_; }
  bool established() const { return established_; }
  bool closed() const { return closed_; }
  const std::string& remote_label() const { return remote_label_; }
  // The key the other side proved in the QUIC handshake (valid once established).
  const PublicKey& remote_key() const { return expected_remote_key_; }

 private:
  // quic::Connection::Observer
  void on_handshake_complete(const PublicKey& remote_key) override;
  void on_remote_stream_opened(int64_t stream_id) override;
  void on_stream_data(int64_t stream_id, std::span<const std::byte> data, bool fin) override;
  void on_stream_reset(int64_t stream_id, uint64_t app_error) override;
  void on_stream_send_space(int64_t stream_id) override;
  void on_stream_closed(int64_t stream_id) override;
  void on_connection_closed(const std::string& reason) override;
  void on_streams_available() override;

  void create_ice(bool controlling);
  void create_quic();
  void send_candidate(const std::string& sdp, bool end_of_candidates);
  void open_pending_streams();
  void fail(const std::string& reason);
  void bridge_done(int64_t stream_id);
  void print_path_line();
  static gboolean on_setup_timeout(gpointer self);
  static gboolean on_reap_bridges(gpointer self);

  Role role_;
  uint64_t session_id_;
  std::string remote_label_;
  const Identity& identity_;
  IceSession::Options ice_options_;
  TargetPolicy target_policy_;
  Hooks hooks_;

  std::unique_ptr<IceSession> ice_;
  std::unique_ptr<quic::Driver> quic_;
  PublicKey expected_remote_key_{};
  bool remote_credentials_set_ = false;
  std::vector<std::string> early_candidates_;  // arrived before the credentials
  // Our relay candidates wait kRelayCandidateHoldMs before they are trickled; see
  // tunnel.cpp for why.
  static gboolean on_relay_hold_over(gpointer self);
  void apply_remote_candidate(const std::string& sdp);
  bool relay_hold_over_ = false;
  guint relay_hold_timer_ = 0;
  std::vector<std::string> held_local_;
  bool held_local_done_ = false;
  bool established_ = false;
  bool closed_ = false;
  bool have_path_ = false;
  SelectedPath path_;
  std::string last_path_line_;
  guint setup_timer_ = 0;
  guint reap_idle_ = 0;
  gint64 started_us_ = 0;

  struct PendingForward {
    GSocketConnection* tcp;
    HostPort target;
  };
  std::vector<PendingForward> pending_;
  std::map<int64_t, std::unique_ptr<StreamBridge>> bridges_;
  std::vector<std::unique_ptr<StreamBridge>> finished_bridges_;  // destroyed from idle
  void send_pairing_request();
  void pairing_answer(std::span<const std::byte> data, bool fin);
  std::string pair_secret_;
  PairDone pair_done_;
  int64_t pair_stream_ = -1;
  std::vector<std::byte> pair_answer_;
};

}  // namespace natfwd
