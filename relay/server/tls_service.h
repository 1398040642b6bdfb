// TLS on the relay (--tls-listen, typically port 443): accepts connections, runs the
// OpenSSL handshake (common/byte_stream.h), and hands the decrypted stream to the
// rendezvous service (first plaintext byte 0xC5) or to the TURN service (a STUN
// message: TURN over TLS, RFC 8656 section 3.1). Also takes TLS connections that
// arrive on the main TCP port.
//
// The handshakes in progress are a pool of kMaxPending places of which one source
// address gets at most kMaxPendingPerAddress (a ConnectionBudget), and each must
// finish and bring its first plaintext byte within kHandshakeTimeout: an address that
// opens a thousand connections and sends one byte on each holds a few places for a
// few seconds, and everyone else still gets in.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>

#include <gio/gio.h>

#include "admission/connection_budget.h"
#include "byte_stream.h"
#include "glib_ptr.h"
#include "metrics/relay_stats.h"
#include "server/deadline_timer.h"
#include "server/sni_peek.h"

namespace natfwd::relay {

class RendezvousService;
class TurnService;

// The relay's certificate: loaded from --cert/--key, or made once (self-signed,
// ECDSA P-256, key mode 0600) in the state dir and reused.
struct TlsIdentity {
  std::string cert_file;
  std::string key_file;
  std::string spki_sha256;  // 32 raw bytes: what peers pin
};
// Throws std::runtime_error with a one-line reason.
TlsIdentity load_or_create_tls_identity(const std::string& cert_file, const std::string& key_file,
                                        const std::string& state_dir);

class TlsService {
 public:
  // `listener` (may be null: only connections handed over by adopt()) is bound and
  // listening; a reference is taken.
  TlsService(GSocket* listener, const TlsIdentity& identity);
  ~TlsService();
  TlsService(const TlsService&) = delete;
  TlsService& operator=(const TlsService&) = delete;

  // Where decrypted streams go; `turn` may be null (--no-turn). Both must outlive us.
  void set_targets(RendezvousService* rendezvous, TurnService* turn);
  // Where refusals and timeouts are counted (--metrics); null: nowhere.
  void set_stats(RelayStats* stats) { stats_ = stats; }
  // A TCP connection whose first byte is a TLS handshake record.
  void adopt(GSocket* socket);
  // Publishing: each new connection's ClientHello is first offered to `route`
  // (sni_peek.h); what it does not take is served here as before.
  void set_sni_route(SniPeek::Route route);

 private:
  struct Pending {
    TlsService* service;
    uint64_t id;
    std::unique_ptr<ByteStream> stream;
    GSourcePtr io_source;
    GIOCondition condition = G_IO_IN;
  };
  static gboolean on_accept_trampoline(GSocket*, GIOCondition, gpointer self);
  static gboolean on_io_trampoline(GSocket*, GIOCondition, gpointer pending);

  void on_accept();
  // Drives the handshake and reads the first plaintext bytes; dispatches when they
  // are there. False when the pending connection is gone.
  bool advance(Pending& pending);
  void watch(Pending& pending, GIOCondition condition);
  void drop(uint64_t id);
  void on_timer();
  // Admitted (`id`, its place in budget_) after the peek or at once.
  void start_handshake(GSocket* socket, uint64_t id);
  // The budget id of a socket in the SNI peek, forgotten; 0 when none.
  uint64_t take_peeked(GSocket* socket);

  // A client must finish the handshake and say something within this time. TLS 1.3
  // takes one round trip after the TCP handshake; 5 s also covers two lost segments
  // at TCP's initial 1 s retransmission timeout (RFC 6298: 1 + 2 s) and a proxy hop.
  static constexpr std::chrono::seconds kHandshakeTimeout{5};
  // Handshakes in progress at once; more connections are refused.
  static constexpr size_t kMaxPending = 1024;
  // ... from one source IP: a NAT with many peers reconnecting at once after a relay
  // restart gets 32 at a time (the rest retry with backoff), and 32 addresses are
  // needed to fill the pool.
  static constexpr size_t kMaxPendingPerAddress = 32;

  GObjectPtr<GSocket> listener_;
  GSourcePtr accept_source_;
  SslCtxPtr ctx_;
  RendezvousService* rendezvous_ = nullptr;
  TurnService* turn_ = nullptr;
  RelayStats* stats_ = nullptr;
  std::unordered_map<uint64_t, std::unique_ptr<Pending>> pending_;
  ConnectionBudget budget_{{kMaxPending, kMaxPendingPerAddress, kHandshakeTimeout}};
  uint64_t next_id_ = 1;
  DeadlineTimer timer_{[this] { on_timer(); }};
  std::unique_ptr<SniPeek> sni_peek_;  // null: no publishing, no peek
  std::unordered_map<GSocket*, uint64_t> peeked_;  // in the SNI peek: budget ids
};

}  // namespace natfwd::relay
