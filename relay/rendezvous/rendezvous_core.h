// The rendezvous broker: registry of named peers and router of session setup
// messages between them. I/O free: the GLib side (relay/rendezvous_service.h) feeds it
// events with the current time and carries out the actions it queues, and arms one
// timer at next_deadline().
//
// Errors (HACKING.md, "Error policy"): a peer that breaks the protocol gets an Error and
// its connection closed; misrouted session messages are dropped.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <unordered_map>
#include <variant>
#include <vector>

#include "address.h"
#include "rendezvous.pb.h"
#include "token_bucket.h"
#include "metrics/relay_stats.h"
#include "turn/peer_policy.h"
#include "rendezvous/name_binding.h"

namespace natfwd::relay {

using Clock = std::chrono::steady_clock;
using TimePoint = Clock::time_point;
using ConnectionId = uint64_t;
using SessionId = uint64_t;

// The TURN servers a peer is told about, with fresh REST API credentials
// (turn/credentials.h): in Welcome, and again in an IceServersUpdate before they
// expire. Nothing TURN is announced when `secret` is empty.
struct TurnAnnouncement {
  std::string secret;  // the shared TURN REST secret
  // The relay's own TURN: TURN_UDP and TURN_TCP on stun_port (host "").
  bool own_turn = true;
  // The relay's TLS port (--tls-listen), 0 for none: TURN_TLS with this pin.
  uint16_t tls_port = 0;
  std::string tls_spki_sha256;  // 32 raw bytes
  // --turn-server: TURN_UDP and TURN_TCP entries for each.
  std::vector<HostPort> external;
  // Credentials live this long; a fresh set is sent every refresh_interval.
  std::chrono::seconds credential_lifetime{24 * 3600};
  std::chrono::seconds refresh_interval{12 * 3600};
  // Wall-clock unix seconds for EXPIRY; injectable for tests. Default: time().
  std::function<uint64_t()> unix_now;
};

// Publishing (relay --publish-domain): who may ask the relay's front door to carry
// visitors to their services, and what a publisher is told.
struct PublishConfig {
  // Visitors reach NAME.DOMAIN; empty: publishing is off, and a Register that asks
  // to publish gets Error NOT_PUBLISHER.
  std::string domain;
  // The raw 32-byte Ed25519 key of the relay's front door, sent in PublishGrant.
  std::string relay_key;
  // --allow-publisher `any`: every proven key may publish.
  bool any_publisher = false;
  // Key ids (proto/identity.h key_id) allowed to publish: --allow-publisher and the
  // state dir's publishers file.
  std::set<std::string> publishers;
  // --publish-ports: the relay's ports for raw TCP publishing; 0-0: none.
  uint16_t tcp_port_min = 0;
  uint16_t tcp_port_max = 0;
  // Custom domains (Publish.custom_domain) are on when the relay has a store for
  // their claims (a domain is held by the first key whose claim the DNS backed, until
  // the operator releases it; default: none, custom domains refused).
  std::shared_ptr<NameBindingPolicy> domain_claims;
  // A held claim is looked up again this often while its publisher is connected, so
  // that a TXT record removed from the DNS ends the route.
  std::chrono::seconds claim_recheck{24 * 3600};
  // After a look-up that could not decide (timeout, server failure) the held claim
  // stays and is looked up again this soon.
  std::chrono::seconds claim_retry{3600};
};

// What the front door enforces of a publish beyond routing (PublishGrant.features).
inline constexpr const char* kPublishFeatures[] = {"allow-from", "proxy-protocol",
                                                   "custom-domain"};

// A custom domain to look up for a claim: what the DNS must say, and the name a CNAME
// for it may point at (the publisher's NAME.DOMAIN, which the relay's wildcard record
// covers), for the record text a refusal suggests.
struct DomainCheck {
  std::string domain;
  std::string key_id;        // the TXT record at _natfwd.DOMAIN must hold this
  std::string cname_target;  // NAME.DOMAIN
};

// What the DNS said of one DomainCheck (front_door/domain_claims.h decides it).
struct DomainVerdict {
  enum class Outcome {
    kPass,     // both records are there
    kRefused,  // a record is missing or wrong: `reason` says which and what to add
    kRetry,    // the DNS did not answer (timeout, server failure): decide later
  };
  Outcome outcome = Outcome::kRetry;
  std::string reason;  // one line, for the relay's log and the publisher
};

// What a registered peer publishes, for the front door: the target its StreamOpen
// names and the key the peer proved (the front door pins it).
struct PublishedService {
  HostPort target;
  std::string public_key;  // raw 32 bytes
  // tcp and tls: a PROXY protocol v2 header goes before the visitor's bytes.
  bool proxy_protocol = false;
  // Visitors the front door lets through; empty: everyone.
  std::vector<turn::Cidr> allow_from;
  // tls: the peer terminates TLS (https publish); plain HTTP for the name redirects.
  bool tls_at_home = false;
  bool admits(const HostPort& visitor) const;
};

struct RendezvousConfig {
  // Counters for --metrics; null: not counted.
  RelayStats* stats = nullptr;
  // Port peers use for STUN and TURN over UDP and TCP; announced in Welcome.
  uint16_t stun_port = 3478;
  TurnAnnouncement turn;
  // Concurrent connections from one source IP; more are refused at accept.
  size_t max_connections_per_address = 64;
  // Concurrent connections in total.
  size_t max_connections = 20000;
  // Sessions one connection may have opened and not yet closed.
  size_t max_sessions_per_connection = 64;
  // Budgets of a serving peer (the callee), so that a stranger spends only its own:
  // sessions with one caller key, with callers from one address, and in all. A
  // laptop's tunnels, path restarts and `peer nc` processes share its key's budget.
  size_t max_sessions_per_pair = 64;
  size_t max_sessions_per_caller_address = 64;
  size_t max_sessions_per_callee = 1024;
  // A new connection must say Hello within this time.
  std::chrono::seconds hello_timeout{10};
  // Announced in Welcome: peers send a Ping at least this often.
  std::chrono::seconds keepalive{15};
  // A connection silent this long is closed (3 keepalives).
  std::chrono::seconds idle_timeout{45};
  // Per source IP, token buckets refilled evenly over a minute: Register messages
  // (beyond: Error RATE_LIMITED and close) and OpenSession messages (beyond:
  // CloseSession LIMIT to the caller, connection kept).
  size_t max_registrations_per_minute = 30;
  size_t max_sessions_per_minute = 120;
  // Names newly bound per source address (an IPv6 /64 counts as one) per hour, so a
  // stranger cannot fill the name store; registering a name one already holds is
  // free. Generous enough for the many homes behind one carrier NAT address.
  size_t max_new_names_per_hour = 20;
  // Welcome.challenge: 32 random bytes per connection; injectable for tests.
  // Default (empty): RAND_bytes.
  std::function<std::string()> make_challenge;
  PublishConfig publish;
};

// Actions for the I/O side, in order.
struct SendAction {
  ConnectionId connection;
  wire::Envelope envelope;
};
struct CloseAction {
  ConnectionId connection;
  std::string reason;  // for logs
};
// Look the domains up and answer with on_domains_checked(connection, check, ...).
struct CheckDomainsAction {
  ConnectionId connection;
  uint64_t check;  // which request the answer is for
  std::vector<DomainCheck> domains;
};
using Action = std::variant<SendAction, CloseAction, CheckDomainsAction>;

enum class Admission { kAccepted, kTooManyFromAddress, kTooManyConnections };

// [a-z0-9][a-z0-9._-]{0,62}
bool is_valid_peer_name(std::string_view name);

class RendezvousCore {
 public:
  // `names` decides who may hold a name; default: bindings kept in memory.
  explicit RendezvousCore(RendezvousConfig config,
                          std::unique_ptr<NameBindingPolicy> names =
                              std::make_unique<MemoryNameBinding>());

  // A TCP connection was accepted from `remote` (an IP literal and port). When the
  // answer is not kAccepted the core forgets the connection: close it, no actions.
  Admission on_connection_opened(ConnectionId id, const HostPort& remote, TimePoint now);
  void on_envelope(ConnectionId id, const wire::Envelope& envelope, TimePoint now);
  // The transport closed (remote hung up, bad frame, write error). Not called for
  // connections the core itself asked to close.
  void on_connection_closed(ConnectionId id, std::string_view reason, TimePoint now);
  // Expires connections whose deadline has passed.
  void on_tick(TimePoint now);
  // The DNS answers for a CheckDomainsAction, one verdict per domain in its order. A
  // Register waiting for them completes or is refused; a held claim that the DNS no
  // longer backs ends its publisher's registration. Answers for a connection that is
  // gone or a check that was superseded are ignored.
  void on_domains_checked(ConnectionId id, uint64_t check,
                          const std::vector<DomainVerdict>& verdicts, TimePoint now);

  // Actions queued since the last call, oldest first.
  std::vector<Action> take_actions();
  // When on_tick should next run; nullopt when nothing is pending.
  std::optional<TimePoint> next_deadline() const;

  // For tests and logs.
  size_t connection_count() const { return connections_.size(); }
  size_t session_count() const { return sessions_.size(); }
  size_t registered_count() const { return names_.size(); }
  std::optional<ConnectionId> holder_of(std::string_view name) const;
  // The service of `kind` that the peer registered as `name` publishes, if any.
  std::optional<PublishedService> published(std::string_view name,
                                            wire::Publish::Kind kind) const;
  // The TCP service published on the relay's `port`, and the name publishing it.
  std::optional<std::pair<std::string, PublishedService>> published_tcp(uint16_t port) const;
  // The service published under the custom domain `host` (any case), and the name of
  // the peer publishing it.
  std::optional<std::pair<std::string, PublishedService>> published_custom(
      std::string_view host) const;
  const RendezvousConfig& config() const { return config_; }

 private:
  struct Connection {
    HostPort remote;
    bool hello_done = false;
    // The Prove verified: the connection holds the private key of public_key. Only
    // then does it get a Welcome and may it ask for anything.
    bool proven = false;
    std::string public_key;  // raw bytes from Hello
    std::string challenge;   // sent in Challenge; Prove and Register sign it
    std::string name;        // registered name, empty if none
    std::vector<wire::Publish> publishes;  // accepted with the name's Register
    std::set<SessionId> sessions;
    TimePoint deadline;      // hello or idle deadline, mirrored in deadlines_
    std::optional<TimePoint> refresh;  // next IceServersUpdate, mirrored in refreshes_
    // A Register whose custom domains are being looked up (check_id names the look-up);
    // with no pending Register, a look-up of the held claims.
    std::optional<wire::Register> pending_register;
    uint64_t check_id = 0;
    std::optional<TimePoint> recheck;  // next look-up of held claims, in rechecks_
  };
  struct Session {
    ConnectionId caller;
    ConnectionId callee;
    bool accepted = false;
    std::string caller_key;   // the caller's proven key and address: its callee budgets
    std::string caller_host;
  };
  // What a callee's budgets count (max_sessions_per_pair and _per_caller_address).
  using CalleeBudgetKey = std::pair<ConnectionId, std::string>;  // callee, key or address

  void handle_hello(ConnectionId id, Connection& connection, const wire::Hello& hello);
  void handle_prove(ConnectionId id, Connection& connection, const wire::Prove& prove,
                    TimePoint now);
  void handle_register(ConnectionId id, Connection& connection, const wire::Register& message,
                       TimePoint now);
  // Empty when `message`'s publish list may be accepted; else the Error to send.
  std::optional<std::pair<wire::Error::Code, std::string>> check_publish(
      ConnectionId id, const Connection& connection, const wire::Register& message) const;
  // The relay ports `message`'s TCP publishes get, in order, treating ports held by a
  // connection of the same key as free (it is being replaced); empty when they do
  // not all fit.
  std::optional<std::pair<wire::Error::Code, std::string>> refuse_publisher(
      const std::string& id, const std::string& name, const std::string& host) const;
  std::optional<std::vector<uint16_t>> assign_tcp_ports(ConnectionId id,
                                                        const Connection& connection,
                                                        const wire::Register& message) const;
  // Register after its checks (and the DNS look-up of its custom domains, if any):
  // binds the name and installs the publishes.
  void complete_register(ConnectionId id, Connection& connection, const wire::Register& message,
                         TimePoint now);
  // The custom domains of `message`, lowercase, in order.
  static std::vector<std::string> custom_domains_of(const wire::Register& message);
  // Empty when `message`'s custom domains may be looked up; else the Error to send.
  std::optional<std::pair<wire::Error::Code, std::string>> check_custom_domains(
      const Connection& connection, const wire::Register& message) const;
  // Queues a look-up of `domains` for the connection, superseding any earlier one.
  void request_domain_check(ConnectionId id, Connection& connection,
                            const std::vector<std::string>& domains, const std::string& name);
  void schedule_recheck(ConnectionId id, Connection& connection, std::optional<TimePoint> at);
  void handle_open_session(ConnectionId id, Connection& connection,
                           const wire::OpenSession& message, TimePoint now);
  void handle_accept_session(ConnectionId id, const wire::AcceptSession& message);
  void handle_candidate(ConnectionId id, const wire::Candidate& message);
  void handle_close_session(ConnectionId id, const wire::CloseSession& message);
  void handle_hand_over(ConnectionId id, Connection& connection, const wire::HandOver& message);
  void handle_netcheck_query(ConnectionId id, Connection& connection,
                             const wire::NetcheckQuery& message, TimePoint now);
  void handle_netcheck_reply(ConnectionId id, const wire::NetcheckReply& message);
  void send_netcheck_status(ConnectionId id, uint64_t query_id,
                            wire::NetcheckReply::Status status);

  void send(ConnectionId id, wire::Envelope envelope);
  void send_close_session(ConnectionId id, SessionId session, wire::CloseSession::Reason reason,
                          std::string detail);
  // Error{code, detail} then close: the peer broke the protocol.
  void fail(ConnectionId id, wire::Error::Code code, const std::string& detail);
  // Closes and forgets the connection, ending its sessions and freeing its name.
  void close(ConnectionId id, const std::string& reason);
  void forget(ConnectionId id, std::string_view reason);
  void end_session(SessionId session_id, ConnectionId gone, std::string_view why);
  // Forgets a session: its members' lists, the callee's budgets, and remembers it
  // for a while as ended (late Candidates for it are normal, not misrouted).
  void drop_session(SessionId session_id);
  // The callee's budget that a new session from `caller` would exceed, if any.
  std::optional<std::string> callee_budget_exceeded(const Connection& caller,
                                                    ConnectionId callee_id) const;
  void set_deadline(ConnectionId id, Connection& connection, TimePoint deadline);
  // STUN and TURN entries with credentials for this connection's key.
  void add_ice_servers(const Connection& connection,
                       google::protobuf::RepeatedPtrField<wire::IceServer>& out) const;
  void schedule_refresh(ConnectionId id, Connection& connection, TimePoint now);
  bool announces_turn() const;
  // Session member other than `id`, if `id` is a member.
  std::optional<ConnectionId> other_member(SessionId session_id, ConnectionId id) const;
  std::string describe(ConnectionId id) const;  // "'home' (192.0.2.1:4000)" for logs

  // A token bucket per source: `per_period` tokens, refilled evenly over `period`.
  using Buckets = std::unordered_map<std::string, TokenBucket>;
  // Takes a token from `source`'s bucket; false when it is empty.
  static bool take_token(Buckets& buckets, const std::string& source, size_t per_period,
                         TimePoint now, std::chrono::seconds period);
  // Drops buckets that have refilled completely (no trace left of past requests).
  void sweep_buckets(TimePoint now);
  void count(uint64_t RelayStats::*counter) {
    if (config_.stats) ++(config_.stats->*counter);
  }

  RendezvousConfig config_;
  std::unique_ptr<NameBindingPolicy> names_policy_;
  std::unordered_map<ConnectionId, Connection> connections_;
  std::unordered_map<std::string, size_t> connections_per_address_;
  std::unordered_map<std::string, ConnectionId> names_;
  std::unordered_map<SessionId, Session> sessions_;
  std::map<CalleeBudgetKey, size_t> sessions_per_pair_;            // callee, caller key
  std::map<CalleeBudgetKey, size_t> sessions_per_caller_address_;  // callee, caller IP
  std::unordered_map<ConnectionId, size_t> sessions_per_callee_;
  // Recently ended sessions, oldest first, bounded: the other side's last trickled
  // candidates cross the close on the wire.
  static constexpr size_t kRecentlyEndedSessions = 4096;
  static constexpr size_t kMaxPairingProofBytes = 64;  // an HMAC-SHA256 is 32
  std::deque<SessionId> recently_ended_order_;
  std::set<SessionId> recently_ended_;
  std::set<std::pair<TimePoint, ConnectionId>> deadlines_;
  std::set<std::pair<TimePoint, ConnectionId>> refreshes_;
  std::vector<Action> actions_;
  // `peer netcheck NAME` queries forwarded and not yet answered, by the relay's own id
  // (callers choose theirs freely; this keeps them apart).
  struct PendingNetcheck {
    ConnectionId caller;
    uint64_t caller_query_id;
    ConnectionId target;
  };
  static constexpr size_t kMaxNetchecksPerCaller = 4;
  std::unordered_map<uint64_t, PendingNetcheck> netchecks_;
  uint64_t next_netcheck_id_ = 1;
  // --publish-ports: which connection's TCP publish holds each port.
  std::map<uint16_t, ConnectionId> tcp_ports_;
  // Custom domains routed now, to the connection whose publish names them.
  std::map<std::string, ConnectionId, std::less<>> custom_domains_;
  std::set<std::pair<TimePoint, ConnectionId>> rechecks_;
  uint64_t next_check_id_ = 1;
  Buckets registration_buckets_;
  Buckets session_buckets_;
  Buckets new_name_buckets_;  // by source_group(), refilled over an hour
  TimePoint next_sweep_{};
};

}  // namespace natfwd::relay
