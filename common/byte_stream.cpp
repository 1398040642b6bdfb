#include "byte_stream.h"

#include <openssl/err.h>
#include <openssl/sha.h>
#include <openssl/x509.h>

#include <stdexcept>

#include "glib_ptr.h"
#include "net/socket_address.h"

namespace natfwd {
namespace {

class PlainStream : public ByteStream {
 public:
  explicit PlainStream(GSocket* socket) : socket_(ref_object(socket)) {
    g_socket_set_blocking(socket_.get(), FALSE);
  }

  Io read(std::span<std::byte> buffer, size_t& n, std::string& error) override {
    GError* gerror = nullptr;
    gssize got = g_socket_receive(socket_.get(), reinterpret_cast<gchar*>(buffer.data()),
                                  buffer.size(), nullptr, &gerror);
    return finish(got, gerror, n, error, G_IO_IN);
  }
  Io write(std::span<const std::byte> data, size_t& n, std::string& error) override {
    GError* gerror = nullptr;
    gssize sent = g_socket_send(socket_.get(), reinterpret_cast<const gchar*>(data.data()),
                                data.size(), nullptr, &gerror);
    return finish(sent, gerror, n, error, G_IO_OUT);
  }
  GIOCondition wait_condition() const override { return wait_; }
  void shutdown_write() override { g_socket_shutdown(socket_.get(), FALSE, TRUE, nullptr); }
  GSocket* socket() const override { return socket_.get(); }

 private:
  Io finish(gssize result, GError* gerror, size_t& n, std::string& error, GIOCondition wait) {
    if (result > 0) {
      n = static_cast<size_t>(result);
      return Io::kOk;
    }
    if (result == 0) return Io::kEof;
    const bool would_block = g_error_matches(gerror, G_IO_ERROR, G_IO_ERROR_WOULD_BLOCK);
    if (!would_block) error = gerror->message;
    g_error_free(gerror);
    wait_ = wait;
    return would_block ? Io::kWouldBlock : Io::kError;
  }
  GObjectPtr<GSocket> socket_;
  GIOCondition wait_ = G_IO_IN;
};

class TlsStream : public ByteStream {
 public:
  TlsStream(GSocket* socket, SSL_CTX* ctx, bool is_server, const std::string& server_name,
            TlsPeerCheck check)
      : socket_(ref_object(socket)), check_(std::move(check)) {
    g_socket_set_blocking(socket_.get(), FALSE);
    ssl_ = SSL_new(ctx);
    SSL_set_fd(ssl_, g_socket_get_fd(socket_.get()));
    if (is_server) {
      SSL_set_accept_state(ssl_);
    } else {
      SSL_set_connect_state(ssl_);
      if (!server_name.empty() && !g_hostname_is_ip_address(server_name.c_str()))
        SSL_set_tlsext_host_name(ssl_, server_name.c_str());
    }
    // Writes may be retried with a different buffer address (ours move).
    SSL_set_mode(ssl_, SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER | SSL_MODE_ENABLE_PARTIAL_WRITE);
  }
  ~TlsStream() override {
    SSL_free(ssl_);
  }

  Io read(std::span<std::byte> buffer, size_t& n, std::string& error) override {
    if (Io status = handshake(error); status != Io::kOk) return status;
    ERR_clear_error();
    int got = SSL_read(ssl_, buffer.data(), static_cast<int>(std::min<size_t>(buffer.size(), 1 << 30)));
    if (got > 0) {
      n = static_cast<size_t>(got);
      return Io::kOk;
    }
    return classify(got, error);
  }
  Io write(std::span<const std::byte> data, size_t& n, std::string& error) override {
    if (Io status = handshake(error); status != Io::kOk) return status;
    ERR_clear_error();
    int sent = SSL_write(ssl_, data.data(), static_cast<int>(std::min<size_t>(data.size(), 1 << 30)));
    if (sent > 0) {
      n = static_cast<size_t>(sent);
      return Io::kOk;
    }
    return classify(sent, error);
  }
  GIOCondition wait_condition() const override { return wait_; }
  bool has_buffered_input() const override { return SSL_pending(ssl_) > 0; }
  void shutdown_write() override {
    if (handshake_done_) {
      SSL_shutdown(ssl_);
      // A failed close_notify changes nothing here, but must not leave its error in
      // the thread's queue (see classify).
      ERR_clear_error();
    }
    g_socket_shutdown(socket_.get(), FALSE, TRUE, nullptr);
  }
  GSocket* socket() const override { return socket_.get(); }

 private:
  Io handshake(std::string& error) {
    if (handshake_done_) return Io::kOk;
    ERR_clear_error();
    int result = SSL_do_handshake(ssl_);
    if (result != 1) return classify(result, error);
    handshake_done_ = true;
    if (check_) {
      X509* leaf = SSL_get1_peer_certificate(ssl_);
      std::string refusal = leaf ? check_(leaf, spki_sha256(leaf)) : "no certificate";
      if (leaf) X509_free(leaf);
      if (!refusal.empty()) {
        error = refusal;
        failed_ = true;
        return Io::kError;
      }
    }
    return Io::kOk;
  }
  // SSL_get_error() reads the thread's error queue, shared by every connection of
  // the process: each SSL call above starts with an empty queue, or an error left by
  // another connection (e.g. one closed during its handshake: "shutdown while in
  // init") turns a mere WANT_READ here into a fatal error and closes an innocent
  // connection. Seen in the lab soak: the relay dropped the serving peer's link.
  Io classify(int result, std::string& error) {
    switch (SSL_get_error(ssl_, result)) {
      case SSL_ERROR_WANT_READ:
        wait_ = G_IO_IN;
        return Io::kWouldBlock;
      case SSL_ERROR_WANT_WRITE:
        wait_ = G_IO_OUT;
        return Io::kWouldBlock;
      case SSL_ERROR_ZERO_RETURN:
        return Io::kEof;
      case SSL_ERROR_SYSCALL:
        ERR_clear_error();
        if (result == 0) return Io::kEof;
        error = g_strerror(errno);
        return Io::kError;
      default:
        error = openssl_error_text("TLS error");
        return Io::kError;
    }
  }
  GObjectPtr<GSocket> socket_;
  SSL* ssl_ = nullptr;
  TlsPeerCheck check_;
  bool handshake_done_ = false;
  bool failed_ = false;
  GIOCondition wait_ = G_IO_IN;
};

}  // namespace

std::string ByteStream::remote_address() const {
  GObjectPtr<GSocketAddress> remote(g_socket_get_remote_address(socket(), nullptr));
  return net::to_string(remote.get());
}

std::unique_ptr<ByteStream> make_plain_stream(GSocket* socket) {
  return std::make_unique<PlainStream>(socket);
}

std::unique_ptr<ByteStream> make_tls_stream(GSocket* socket, SSL_CTX* ctx, bool is_server,
                                            const std::string& server_name,
                                            TlsPeerCheck check) {
  return std::make_unique<TlsStream>(socket, ctx, is_server, server_name, std::move(check));
}

std::string spki_sha256(X509* certificate) {
  unsigned char* der = nullptr;
  int length = i2d_X509_PUBKEY(X509_get_X509_PUBKEY(certificate), &der);
  if (length <= 0) return {};
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(der, static_cast<size_t>(length), digest);
  OPENSSL_free(der);
  return std::string(reinterpret_cast<const char*>(digest), sizeof digest);
}

SslCtxPtr make_tls_client_context() {
  SslCtxPtr ctx(SSL_CTX_new(TLS_client_method()));
  if (!ctx) throw std::runtime_error("cannot create TLS context: " + openssl_error_text("TLS error"));
  SSL_CTX_set_min_proto_version(ctx.get(), TLS1_2_VERSION);
  SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_NONE, nullptr);
  return ctx;
}

SslCtxPtr make_tls_server_context(const std::string& cert_file, const std::string& key_file) {
  SslCtxPtr ctx(SSL_CTX_new(TLS_server_method()));
  if (!ctx) throw std::runtime_error("cannot create TLS context: " + openssl_error_text("TLS error"));
  SSL_CTX_set_min_proto_version(ctx.get(), TLS1_2_VERSION);
  if (SSL_CTX_use_certificate_chain_file(ctx.get(), cert_file.c_str()) != 1)
    throw std::runtime_error("cannot load certificate " + cert_file + ": " + openssl_error_text("TLS error"));
  if (SSL_CTX_use_PrivateKey_file(ctx.get(), key_file.c_str(), SSL_FILETYPE_PEM) != 1)
    throw std::runtime_error("cannot load key " + key_file + ": " + openssl_error_text("TLS error"));
  if (SSL_CTX_check_private_key(ctx.get()) != 1)
    throw std::runtime_error("key " + key_file + " does not match certificate " + cert_file);
  return ctx;
}

}  // namespace natfwd
