// A tunnel to one remote peer: the ICE legs that find the path, and the TunnelCore
// (tunnel_core.h: the QUIC connection, its streams and their negotiation) that runs
// over it, driven from the GLib main loop (CoreLoop) with one StreamBridge per
// forwarded TCP connection as the streams' local ends. This class is the glue: the
// relay signalling, the ICE legs and path restarts, the setup and restart timers, and
// the progress and path lines a person reads.
//
// A tunnel that comes up on a relayed path tries a hard-NAT punch (peer/punch/): both
// sides learn their NAT's mapping behaviour against the relay, agree roles, addresses
// and a key on a stream of the QUIC connection, and when the search wins, QUIC's
// datagrams take the punched UDP path instead of the ICE leg (which stays up, and
// takes them back when the punched path goes silent).
//
// The connecting side (-L) is ICE-controlling and the QUIC client; the serving side is
// ICE-controlled and the QUIC server. The relay only carries the setup messages
// (OpenSession/IncomingSession, AcceptSession, Candidate); once QUIC is up the tunnel
// no longer needs it.
#pragma once

#include <map>
#include <optional>
#include <memory>
#include <string>
#include <vector>

#include <gio/gio.h>

#include "control/peer_status.h"
#include "identity.h"
#include "ice/ice_session.h"
#include "punch/punch_leg.h"
#include "rendezvous.pb.h"
#include "glib_ptr.h"
#include "tunnel/connect_progress.h"
#include "tunnel/core_loop.h"
#include "tunnel/ice_leg.h"
#include "tunnel/stream_bridge.h"
#include "tunnel/tunnel_core.h"

namespace natfwd {

class Tunnel : private TunnelCore::Io {
 public:
  enum class Role { kConnecting, kServing };
  // A local TCP connection waiting for the tunnel (we hold one reference).
  struct PendingForward {
    GSocketConnection* tcp;
    HostPort target;
    OpenResultHandler on_result;
    std::string first_bytes;  // already read from tcp: the stream sends them first
    std::shared_ptr<TrafficMeter> meter;  // optional: limits and counts its bytes
  };
  struct Hooks {
    // Through the relay that the envelope's session runs through (the owner knows).
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
    // Connecting side, setup failed: may take the waiting connections (and their
    // references) to try them another way, e.g. through another relay; returns
    // false to let them be reset.
    std::function<bool(Tunnel&, std::vector<PendingForward>&)> rescue_pending;
    // A path restart did not work out (the owner may set up a fresh tunnel).
    std::function<void(Tunnel&, const std::string& reason)> on_restart_failed;
    // The session a path restart used is now the tunnel's; the old one is over.
    std::function<void(Tunnel&, uint64_t old_session_id)> on_session_moved;
    // Serving side: reaches the targets instead of a plain TcpConnector (a relay's
    // front door: the publish connector, which may put basic auth in front). Must
    // outlive the tunnel; null: TcpConnector.
    LocalConnector* connector = nullptr;
  };

  Tunnel(Role role, uint64_t session_id, std::string remote_label, const Identity& identity,
         const IceSession::Options& ice_options, TargetPolicy target_policy, Hooks hooks);
  ~Tunnel() override;
  Tunnel(const Tunnel&) = delete;
  Tunnel& operator=(const Tunnel&) = delete;

  // Connecting side: ask the relay for `target_name`.
  // `pairing_proof`: see OpenSession.pairing_proof; empty unless pairing.
  void start_outgoing(const std::string& target_name, const std::string& pairing_proof = {});
  // Serving side: answer an IncomingSession.
  void start_incoming(const wire::IncomingSession& incoming);
  // AcceptSession, Candidate or CloseSession for this tunnel's session, or for the
  // session of a path restart in progress.
  void on_relay_message(const wire::Envelope& envelope);
  // Connecting side, established: find a new path for this QUIC connection, e.g.
  // after a network change, through a new session `session_id` (see ice_leg.h). Open
  // streams carry on once the new path works. `options`: the ICE servers of the relay
  // the new session goes through.
  void restart_path(uint64_t session_id, const IceSession::Options& options);
  // Serving side: the other side asks to restart the path (IncomingSession with
  // resumes_session = this tunnel's session); the caller checked that the key is the
  // one this tunnel's QUIC handshake proved.
  void accept_restart(const wire::IncomingSession& incoming, const IceSession::Options& options);
  bool restarting() const { return next_leg_ != nullptr; }
  Role role() const { return role_; }
  // When the last path restart failed (0: none has), and how many failed in a row.
  gint64 restart_failed_us() const { return restart_failed_us_; }
  int restart_failures() const { return restart_failures_; }
  uint64_t restart_session_id() const { return next_leg_ ? next_leg_->session_id() : 0; }
  // Connecting side, before the other side answered through the relay: the setup
  // depends on the relay link (a new link does not know the session).
  // The relay said no peer of that name is registered (CloseSession NO_SUCH_PEER).
  bool peer_not_registered() const { return peer_not_registered_; }
  bool awaiting_answer() const {
    return !closed_ && !established_ && (!leg_ || !leg_->has_remote_params());
  }
  // Connecting side: carry one accepted TCP connection to `target` on the remote side.
  // Held until the tunnel is up. `on_result` (optional) learns the serving peer's answer.
  // `first_bytes`: what the caller already read from `tcp` (a request head it routed
  // by), sent on the stream before anything read later.
  // `meter` (optional) goes to the connection's StreamBridge.
  void forward(GSocketConnection* tcp, const HostPort& target, OpenResultHandler on_result = {},
               std::string first_bytes = {}, std::shared_ptr<TrafficMeter> meter = {});
  // Connecting side: once the tunnel is up, ask the serving peer to redeem an invite
  // secret; `done` gets its answer (or a failure of the tunnel).
  using PairDone = std::function<void(bool ok, const std::string& detail)>;
  void request_pairing(const std::string& secret, PairDone done);
  // Sends CONNECTION_CLOSE and resets every forwarded connection.
  void close(const std::string& reason);
  // Connecting side: a fresh tunnel takes new connections. This one carries its open
  // streams on (the path may recover) and closes itself when the last one ends.
  void retire(const std::string& why);

  // Microseconds since the last datagram from the other side (or since the start).
  gint64 silent_for_us() const { return g_get_monotonic_time() - last_receive_us_; }
  size_t open_streams() const { return core_.open_streams(); }
  bool retired() const { return retired_; }

  // Stable for the tunnel's life: the session it began with.
  uint64_t tunnel_id() const { return first_session_id_; }
  // Gives up a path restart in progress (e.g. its relay link was lost).
  void cancel_restart(const std::string& reason) { restart_failed(reason); }
  // The session the tunnel runs on now (changes after a path restart).
  uint64_t session_id() const { return leg_ ? leg_->session_id() : first_session_id_; }
  bool established() const { return established_; }
  bool closed() const { return closed_; }
  // Closed on purpose, by this side (close()) or by the other without an error (a
  // shutdown, a finished `pair`): logged as news, not as a warning.
  bool closed_in_order() const { return closed_in_order_; }
  const std::string& remote_label() const { return remote_label_; }
  // The key the other side proved in the QUIC handshake (valid once established).
  const PublicKey& remote_key() const { return expected_remote_key_; }
  // For `peer status`: path, RTT, bytes and streams of this tunnel right now.
  TunnelStatus status() const;

 private:
  // TunnelCore::Io
  bool send_datagram(std::span<const std::byte> datagram) override;
  void end_of_pass() override;
  void wake() override { loop_.wake(); }
  void write_due() override { loop_.write_now(); }
  void on_established() override;
  void on_closed(const std::string& reason) override;
  void on_stream_finished() override;

  std::unique_ptr<IceLeg> make_leg(uint64_t session_id, const IceSession::Options& options,
                                   bool controlling);
  IceLeg* leg_for(uint64_t session_id);
  void on_leg_selected_pair(IceLeg* leg);
  void on_leg_failed(IceLeg* leg, const std::string& reason);
  void restart_failed(const std::string& reason);
  void restart_timed_out();
  void drop_old_legs_later();
  void drop_old_legs();
  void start_quic();
  bool verify_remote_key(const PublicKey& key);
  void forward_pending();
  void fail(const std::string& reason);
  void send_close_session(uint64_t session_id, const std::string& detail);
  void print_path_line();
  void setup_timed_out();
  void on_datagram(std::span<const std::byte> datagram);
  // Hard-NAT punching.
  void start_punch_probe();
  void punch_probed();
  void ask_punch();
  void punch_answered(const StreamDecision& answer);
  StreamDecision answer_punch(const wire::PunchOffer& offer);
  void begin_punch(const wire::PunchOffer& local, const wire::PunchOffer& remote,
                   const wire::PunchOffer& key_offer);
  void punch_won();
  void punch_failed(const std::string& why);
  void punch_not_offered();
  void drop_punch();
  void check_punched_path();
  void leave_punched_path(const std::string& why);
  void leave_punched_for_new_offer();
  void schedule_repunch();
  void repunch();
  SelectedPath punched_path() const;
  // One GLib timeout or idle source calling a member; the member may not throw into
  // GLib (the trampoline logs what it catches).
  GSourcePtr attach_source(GSource* source, void (Tunnel::*member)());
  GSourcePtr add_timeout(guint seconds, void (Tunnel::*member)());
  GSourcePtr add_timeout_ms(guint ms, void (Tunnel::*member)());
  GSourcePtr add_idle(void (Tunnel::*member)());
  static gboolean on_source(gpointer data);

  Role role_;
  uint64_t first_session_id_;
  std::string remote_label_;
  IceSession::Options ice_options_;
  Hooks hooks_;
  TcpConnector connector_;
  TunnelCore core_;
  CoreLoop loop_;

  std::unique_ptr<IceLeg> leg_;       // carries QUIC
  std::unique_ptr<IceLeg> next_leg_;  // a path restart in progress
  std::vector<std::unique_ptr<IceLeg>> old_legs_;  // replaced; destroyed from idle
  GSourcePtr restart_timer_;
  gint64 restart_started_us_ = 0;
  GSourcePtr drop_old_idle_;
  std::string target_name_;  // connecting side: the name asked for, for restarts
  PublicKey expected_remote_key_{};
  bool established_ = false;
  bool closed_ = false;
  bool closed_in_order_ = false;
  bool retired_ = false;
  gint64 restart_failed_us_ = 0;
  int restart_failures_ = 0;
  std::string retire_reason_;
  gint64 last_receive_us_ = 0;
  std::string last_path_line_;
  bool path_line_pending_ = false;
  GSourcePtr setup_timer_;
  gint64 started_us_ = 0;
  gint64 established_us_ = 0;

  // Connecting side: TCP connections waiting for the QUIC handshake; then they go to
  // core_ (which holds them further while the remote's stream limit is reached).
  std::vector<PendingForward> pending_;
  // Connecting side: the phases a person sees on stderr (connect_progress.h).
  void progress(ConnectPhase phase, const std::string& detail = "");
  std::optional<ConnectProgress> progress_;
  bool key_refused_ = false;
  bool peer_not_registered_ = false;

  // Hard-NAT punching; the leg's callbacks reach core_, so it is declared after it.
  std::unique_ptr<punch::PunchLeg> punch_;
  std::optional<wire::PunchOffer> punch_offer_;  // ours, once probed
  bool punch_done_ = false;  // the search started, failed or was refused: once a tunnel
  bool punched_ = false;     // QUIC's datagrams take punch_
  int punch_asks_ = 0;       // connecting side: asks while the other side still probes
  bool repunch_pending_ = false;  // punch_timer_ waits for repunch()
  guint repunch_delay_ms_ = 0;  // the next search after a lost punched path (0: the first)
  // The next ask, the wait for an offer, dropping a failed leg, or the punched
  // path's silence check.
  GSourcePtr punch_timer_;
};

}  // namespace natfwd
