// The peer's link to the relay: one TCP connection carrying framed Envelopes.
// Says Hello, registers the peer's name (when it serves), keeps the link alive with
// Pings, and reconnects with exponential backoff and jitter when it drops.
//
// What retrying cannot fix ends the link for good (on_disconnected with fatal): a
// relay certificate the trust check refuses (a changed key), and a server at the
// --relay address that answers but is no natfwd relay (relay_answer.h). A relay
// that accepts the connection and stays silent is given up after a timeout.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <gio/gio.h>

#include "address.h"
#include "framed_connection.h"
#include "glib_ptr.h"
#include "identity.h"
#include "rendezvous.pb.h"
#include "signaling/relay_answer.h"
#include "transport/connector.h"

namespace natfwd {

class RelayClient {
 public:
  struct Callbacks {
    // Hello answered; `relay_ip` is the relay's IP for STUN/TURN over UDP (empty when
    // unknown: behind a proxy with --relay given as a name).
    std::function<void(const wire::Welcome&, const std::string& relay_ip)> on_welcome;
    // Register answered; `registered.publish` is set when the relay publishes what
    // set_publishes() asked for.
    std::function<void(const wire::Registered& registered)> on_registered;
    // Fresh TURN credentials (IceServersUpdate) for sessions started from now on.
    std::function<void(const wire::IceServersUpdate&)> on_ice_servers;
    // IncomingSession, AcceptSession, Candidate, CloseSession, NetcheckQuery/Reply,
    // HandedOver.
    std::function<void(const wire::Envelope&)> on_session_message;
    // The link is down; it reconnects by itself unless `fatal` (the relay refused us
    // for a reason that retrying cannot fix, such as a name held by another key).
    std::function<void(const std::string& reason, bool fatal)> on_disconnected;
  };

  // `link` says how to reach the relay (TLS, proxy); link.server is the relay.
  RelayClient(ConnectOptions link, const Identity& identity, std::optional<std::string> name,
              Callbacks callbacks);
  ~RelayClient();
  RelayClient(const RelayClient&) = delete;
  RelayClient& operator=(const RelayClient&) = delete;

  void start();
  // Services to publish, sent with every Register (see rendezvous.proto, Publish).
  void set_publishes(std::vector<wire::Publish> publishes) { publishes_ = std::move(publishes); }
  // Welcomed, and not in doubt (no unanswered check after a network change).
  bool ready() const { return welcomed_ && !probe_timer_; }
  // The local network changed: the link may be dead without the kernel knowing yet.
  // Pings the relay and reconnects at once when no Pong comes within a moment; a
  // reconnect that was waiting for its backoff starts now.
  void check_link();
  void send(const wire::Envelope& envelope);
  const HostPort& relay() const { return link_options_.server; }
  // The last attempt failed before the relay answered (refused, unreachable, timed
  // out), and no new attempt has got further yet; why, in one phrase. Empty otherwise.
  const std::string& unreachable() const { return unreachable_; }

 private:
  static gboolean on_ping_timer(gpointer self);
  static gboolean on_reconnect_timer(gpointer self);
  static gboolean on_probe_timeout(gpointer self);
  static gboolean on_welcome_timeout(gpointer self);
  void connected(std::unique_ptr<ByteStream> stream, const std::string& error);
  void link_closed(const std::string& reason);
  void attempt_failed(const std::string& reason);
  void not_a_relay(const std::string& foreign);
  void handle(const wire::Envelope& envelope);
  // `at_least_ms`: the reconnect waits at least this long.
  void disconnected(const std::string& reason, bool fatal, guint at_least_ms = 0);
  void schedule_reconnect(guint at_least_ms = 0);

  ConnectOptions link_options_;
  const Identity& identity_;
  std::optional<std::string> name_;
  std::vector<wire::Publish> publishes_;
  Callbacks callbacks_;
  std::unique_ptr<ConnectAttempt> attempt_;
  std::unique_ptr<FramedConnection> link_;
  std::unique_ptr<RelayProbe> probe_;  // after a TLS failure: is it a relay at all?
  std::string relay_ip_;
  // The attempt under way: what its server sent first, whether any of it was a
  // relay's message, and the trust check's refusal of its certificate.
  std::shared_ptr<FirstBytes> first_bytes_;
  bool heard_relay_ = false;
  std::string certificate_refused_;
  std::string unreachable_;
  bool welcomed_ = false;
  bool stopped_ = false;
  SourceId ping_timer_;
  SourceId reconnect_timer_;
  SourceId probe_timer_;
  SourceId welcome_timer_;
  guint backoff_ms_ = 0;
  // A custom domain's claim the DNS did not back (Error CLAIM_UNCONFIRMED): the user
  // may be adding the record now, so the peer asks again, but at this slower pace
  // (each ask costs the relay DNS look-ups); back to the start once registered.
  guint claim_backoff_ms_ = 0;
  gint64 last_pong_us_ = 0;
  guint keepalive_seconds_ = 15;
};

}  // namespace natfwd
