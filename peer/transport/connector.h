// Outgoing TCP connections to the relay and to TURN servers: direct or through an
// HTTP CONNECT proxy (RFC 9110 section 9.3.6), plain or TLS (OpenSSL).
//
// A laptop whose only way out is a corporate proxy that allows CONNECT to port 443
// reaches the relay's TLS port this way, for the rendezvous link and for TURN.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>

#include <gio/gio.h>

#include "address.h"
#include "byte_stream.h"
#include "glib_ptr.h"

namespace natfwd {

struct ConnectOptions {
  HostPort server;
  std::optional<HostPort> http_proxy;  // CONNECT through this proxy
  bool tls = false;
  TlsPeerCheck tls_check;              // required with tls: decides whether to trust
  unsigned timeout_seconds = 15;
};

// One connection attempt. Destroying it cancels the attempt; `done` is then never
// called.
class ConnectAttempt {
 public:
  using Done = std::function<void(std::unique_ptr<ByteStream> stream, const std::string& error)>;
  ConnectAttempt(const ConnectOptions& options, Done done);
  ConnectAttempt(const ConnectAttempt&) = delete;
  ConnectAttempt& operator=(const ConnectAttempt&) = delete;

 private:
  static void on_connected(GObject* client, GAsyncResult* result, gpointer self);
  void connected(GSocketConnection* connection);
  ConnectOptions options_;
  Done done_;
  GCancellablePtr cancellable_;  // cancelled when the attempt goes
};

// "http://HOST:PORT" (or "HOST:PORT") -> the proxy's address; error text otherwise.
Parsed<HostPort> parse_proxy_url(const std::string& url);
// The proxy from https_proxy / HTTPS_PROXY (then http_proxy / HTTP_PROXY), if any and
// not excluded by no_proxy for `host`.
std::optional<std::string> proxy_from_environment(const std::string& host);

// Trust check against the system's CA store and the host name (external servers).
std::string verify_with_system_cas(X509* leaf, const std::string& host);
// The same against the CA certificates in one PEM file (--relay-ca).
std::string verify_with_ca_file(X509* leaf, const std::string& ca_file, const std::string& host);

}  // namespace natfwd
