// A non-blocking byte stream over a TCP socket: plain, or TLS (OpenSSL) on top.
//
// FramedConnection (rendezvous), the relay's TLS port and the peer's TURN bridges all
// move bytes through this one interface, so TLS is written once. Readiness comes from
// the GSocket: after kWouldBlock, wait for wait_condition() before retrying (TLS may
// need the socket writable to read, or readable to write).
#pragma once

#include <cstddef>
#include <functional>
#include <memory>
#include <span>
#include <string>

#include <gio/gio.h>
#include <openssl/ssl.h>

#include "openssl_handles.h"

namespace natfwd {

class ByteStream {
 public:
  enum class Io { kOk, kWouldBlock, kEof, kError };
  virtual ~ByteStream() = default;

  // kOk with n > 0 bytes, kWouldBlock, kEof (orderly end), or kError (error set).
  virtual Io read(std::span<std::byte> buffer, size_t& n, std::string& error) = 0;
  virtual Io write(std::span<const std::byte> data, size_t& n, std::string& error) = 0;
  // What to wait for after the last call returned kWouldBlock.
  virtual GIOCondition wait_condition() const = 0;
  // Bytes already read from the socket and held inside (TLS records): read them
  // before waiting for the socket again.
  virtual bool has_buffered_input() const { return false; }
  // Ends our direction (TCP FIN, after TLS close_notify). Best effort.
  virtual void shutdown_write() = 0;
  virtual GSocket* socket() const = 0;
  std::string remote_address() const;
};

// Takes a reference on the socket and makes it non-blocking.
std::unique_ptr<ByteStream> make_plain_stream(GSocket* socket);

// Checks the peer's certificate chain once the handshake is done; returns an empty
// string to accept, else why not. `spki_sha256` is SHA-256 of the leaf's DER
// SubjectPublicKeyInfo (what pins compare).
using TlsPeerCheck = std::function<std::string(X509* leaf, const std::string& spki_sha256)>;

// TLS client or server over `socket`. The handshake runs inside the first read/write
// calls. A client with a check refuses the connection (kError) when it fails.
std::unique_ptr<ByteStream> make_tls_stream(GSocket* socket, SSL_CTX* ctx, bool is_server,
                                            const std::string& server_name = "",
                                            TlsPeerCheck check = nullptr);

// SHA-256 of the DER SubjectPublicKeyInfo of a certificate (32 raw bytes).
std::string spki_sha256(X509* certificate);
// A client context: TLS 1.2+, no verification by OpenSSL itself (checks go through
// TlsPeerCheck, which can also call verify_with_system_cas).
SslCtxPtr make_tls_client_context();
// A server context with the given PEM certificate chain and key files; throws
// std::runtime_error with a one-line reason.
SslCtxPtr make_tls_server_context(const std::string& cert_file, const std::string& key_file);

}  // namespace natfwd
