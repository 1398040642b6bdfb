// The TCP side of the relay: accepts connections, tells protocols apart by the first
// byte (relay/tcp_dispatch.h), and wires rendezvous connections (FramedConnection) to
// the I/O-free RendezvousCore. One GLib timeout is armed at the core's nearest
// deadline.
//
// Lifetimes: a client object is never destroyed inside one of its own callbacks;
// closed clients are reaped from an idle source.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include <gio/gio.h>

#include "framed_connection.h"
#include "rendezvous/rendezvous_core.h"
#include "server/deadline_timer.h"
#include "glib_ptr.h"

namespace natfwd::relay {

class TurnService;
class TlsService;

class RendezvousService {
 public:
  // Takes a reference on the bound, listening TCP socket. Connections that speak
  // STUN go to `turn`, TLS ones to `tls`; either may be null (then they are closed).
  // Both must outlive this service. `names`: who may hold a name (null: in memory).
  RendezvousService(GSocket* listener, RendezvousConfig config, TurnService* turn = nullptr,
                    TlsService* tls = nullptr, std::unique_ptr<NameBindingPolicy> names = nullptr);
  ~RendezvousService();
  RendezvousService(const RendezvousService&) = delete;
  RendezvousService& operator=(const RendezvousService&) = delete;

  size_t client_count() const { return clients_.size(); }
  const RendezvousCore& core() const { return core_; }

  // Custom domains: who looks up the DNS for the core's CheckDomainsActions. It answers
  // with domains_checked, later or from inside the call. Unset: a custom domain claim
  // is answered with a "retry" verdict.
  using DomainChecker = std::function<void(const CheckDomainsAction&)>;
  void set_domain_checker(DomainChecker checker) { domain_checker_ = std::move(checker); }
  void domains_checked(ConnectionId id, uint64_t check, const std::vector<DomainVerdict>& verdicts);

  // A rendezvous connection that arrived another way (TLS): `already_read` are the
  // plaintext bytes the sniffer consumed.
  void adopt_stream(std::unique_ptr<ByteStream> stream, std::span<const std::byte> already_read);

 private:
  struct Client {
    RendezvousService* service;
    ConnectionId id;
    GObjectPtr<GSocket> socket;  // until the first byte tells what it speaks
    GSourcePtr sniff_source;
    std::unique_ptr<FramedConnection> framed;
  };

  static gboolean on_accept_trampoline(GSocket*, GIOCondition, gpointer self);
  static gboolean on_sniff_trampoline(GSocket*, GIOCondition, gpointer client);
  static gboolean on_reap_trampoline(gpointer self);
  static gboolean on_resume_accept_trampoline(gpointer self);

  void watch_listener();
  void on_accept();
  void accept_one(GSocket* socket);
  std::optional<ConnectionId> admit(const HostPort& remote);
  bool on_sniff(Client& client);
  void start_rendezvous(Client& client);
  void on_envelope(ConnectionId id, const wire::Envelope& envelope);
  void on_transport_closed(ConnectionId id, const std::string& reason);
  void apply_actions();
  void arm_timer();
  void on_timer();
  // Closes the client's socket now; the object goes at the next idle.
  void retire(ConnectionId id);

  // Connections accepted per wakeup, so that a flood does not starve established ones.
  static constexpr int kMaxAcceptsPerWakeup = 64;
  // Pause before accepting again when out of file descriptors.
  static constexpr guint kAcceptBackoffMs = 100;

  GObjectPtr<GSocket> listener_;
  GSourcePtr accept_source_;
  GSourcePtr resume_accept_source_;
  RendezvousCore core_;
  TurnService* turn_;
  TlsService* tls_;
  std::unordered_map<ConnectionId, std::unique_ptr<Client>> clients_;
  ConnectionId next_id_ = 1;
  DeadlineTimer timer_{[this] { on_timer(); }};
  std::set<ConnectionId> to_reap_;
  GSourcePtr reap_source_;
  bool applying_actions_ = false;
  DomainChecker domain_checker_;
};

}  // namespace natfwd::relay
