// The SNI peek in front of the relay's TLS (publishing): reads a new TLS connection's
// ClientHello without taking it off the socket (MSG_PEEK), and offers its server name
// to the publishing front door. A name the front door takes (NAME.DOMAIN of a peer
// that publishes tls) leaves the connection untouched for the peer; anything else (the
// relay's own name, no SNI, a malformed or split ClientHello) goes on to the relay's
// own TLS handshake exactly as if no peek had happened.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <unordered_map>

#include <gio/gio.h>

#include "glib_ptr.h"

namespace natfwd::relay {

class SniPeek {
 public:
  // True when the front door took `socket` (it keeps its own reference).
  using Route = std::function<bool(GSocket* socket, const std::string& server_name)>;
  // The relay's own TLS for everything not routed.
  using Fallback = std::function<void(GSocket* socket)>;
  // A connection the peek closed (no ClientHello in time, the client left, full).
  using Closed = std::function<void(GSocket* socket)>;

  SniPeek(Route route, Fallback fallback, Closed closed = {});
  ~SniPeek();
  SniPeek(const SniPeek&) = delete;
  SniPeek& operator=(const SniPeek&) = delete;

  // A new TCP connection on a TLS port (a reference is taken).
  void adopt(GSocket* socket);
  size_t pending() const { return peeking_.size(); }

 private:
  struct Peeking {
    SniPeek* peek;
    uint64_t id;
    GObjectPtr<GSocket> socket;
    GSourcePtr io_source;     // waiting for the first bytes
    GSourcePtr retry_source;  // the ClientHello came in part: look again shortly
    GSourcePtr timeout_source;
  };
  static gboolean on_readable(GSocket*, GIOCondition, gpointer peeking);
  static gboolean on_retry(gpointer peeking);
  static gboolean on_timeout(gpointer peeking);
  void look(Peeking& peeking);
  // Ends the peek: to the front door, the relay's TLS, or closed.
  void finish(uint64_t id, const std::string& server_name, bool close);

  // As the TLS handshake's own limit: a client must say hello within this time.
  static constexpr guint kPeekTimeoutMs = 10000;
  // A ClientHello split over several segments is looked at again this often (a
  // readable socket would wake us without pause while the peeked bytes stay queued).
  static constexpr guint kRetryMs = 5;
  // Connections peeked at once, as many as TLS handshakes in progress (TlsService).
  static constexpr size_t kMaxPeeking = 1024;

  Route route_;
  Fallback fallback_;
  Closed closed_;
  std::unordered_map<uint64_t, std::unique_ptr<Peeking>> peeking_;
  uint64_t next_id_ = 1;
};

}  // namespace natfwd::relay
