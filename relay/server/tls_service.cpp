#include "server/tls_service.h"

#include <netinet/in.h>
#include <netinet/tcp.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/bn.h>
#include <openssl/rand.h>

#include <array>
#include <cstdio>
#include <exception>
#include <stdexcept>

#include "identity.h"
#include "log.h"
#include "state_dir.h"
#include "server/rendezvous_service.h"
#include "net/socket_address.h"
#include "server/turn_service.h"
#include "tcp_dispatch.h"

namespace natfwd::relay {
namespace {

struct FileClose {
  void operator()(FILE* f) const { fclose(f); }
};

// Self-signed ECDSA P-256 certificate, valid for ten years; peers pin its key, not
// its name or dates.
void create_self_signed(const std::string& cert_file, const std::string& key_file) {
  EvpPkeyPtr key(EVP_EC_gen("P-256"));
  if (!key) throw std::runtime_error("cannot make a TLS key: " + openssl_error_text("OpenSSL error"));
  X509Ptr cert(X509_new());
  X509_set_version(cert.get(), 2);
  std::array<unsigned char, 16> serial{};
  RAND_bytes(serial.data(), serial.size());
  serial[0] &= 0x7F;
  BIGNUM* bn = BN_bin2bn(serial.data(), serial.size(), nullptr);
  BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(cert.get()));
  BN_free(bn);
  X509_gmtime_adj(X509_getm_notBefore(cert.get()), -24 * 3600);
  X509_gmtime_adj(X509_getm_notAfter(cert.get()), 10L * 365 * 24 * 3600);
  X509_set_pubkey(cert.get(), key.get());
  X509_NAME* name = X509_get_subject_name(cert.get());
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>("natfwd-relay"), -1, -1, 0);
  X509_set_issuer_name(cert.get(), name);
  if (X509_sign(cert.get(), key.get(), EVP_sha256()) == 0)
    throw std::runtime_error("cannot sign the TLS certificate: " + openssl_error_text("OpenSSL error"));

  auto to_pem = [](auto write) {
    BIO* bio = BIO_new(BIO_s_mem());
    write(bio);
    char* data = nullptr;
    const long size = BIO_get_mem_data(bio, &data);
    std::string text(data, static_cast<size_t>(size));
    BIO_free(bio);
    return text;
  };
  const std::string key_pem = to_pem([&](BIO* bio) {
    PEM_write_bio_PrivateKey(bio, key.get(), nullptr, nullptr, 0, nullptr, nullptr);
  });
  const std::string cert_pem = to_pem([&](BIO* bio) { PEM_write_bio_X509(bio, cert.get()); });
  if (const std::string why = write_private_file(key_file, key_pem); !why.empty())
    throw std::runtime_error(why);
  std::unique_ptr<FILE, FileClose> out(fopen(cert_file.c_str(), "wx"));
  if (!out || fwrite(cert_pem.data(), 1, cert_pem.size(), out.get()) != cert_pem.size())
    throw std::runtime_error("cannot write " + cert_file);
}

}  // namespace

TlsIdentity load_or_create_tls_identity(const std::string& cert_file, const std::string& key_file,
                                        const std::string& state_dir) {
  TlsIdentity identity{cert_file, key_file, {}};
  if (identity.cert_file.empty()) {
    identity.cert_file = state_dir + "/tls.crt";
    identity.key_file = state_dir + "/tls.key";
    const bool have_cert = access(identity.cert_file.c_str(), F_OK) == 0;
    const bool have_key = access(identity.key_file.c_str(), F_OK) == 0;
    if (!have_cert && !have_key) {
      create_self_signed(identity.cert_file, identity.key_file);
      log::info("made a self-signed TLS certificate in %s", identity.cert_file.c_str());
    } else if (!have_cert || !have_key) {
      throw std::runtime_error("one of " + identity.cert_file + " and " + identity.key_file +
                               " is missing; remove the other to make a new pair");
    }
  }
  std::unique_ptr<FILE, FileClose> in(fopen(identity.cert_file.c_str(), "r"));
  if (!in) throw std::runtime_error("cannot read " + identity.cert_file + ": " + g_strerror(errno));
  X509Ptr cert(PEM_read_X509(in.get(), nullptr, nullptr, nullptr));
  if (!cert) throw std::runtime_error(identity.cert_file + ": not a PEM certificate");
  identity.spki_sha256 = spki_sha256(cert.get());
  return identity;
}

TlsService::TlsService(GSocket* listener, const TlsIdentity& identity)
    : ctx_(make_tls_server_context(identity.cert_file, identity.key_file)) {
  if (listener) {
    listener_.reset(G_SOCKET(g_object_ref(listener)));
    g_socket_set_blocking(listener_.get(), FALSE);
    accept_source_.reset(g_socket_create_source(listener_.get(), G_IO_IN, nullptr));
    g_source_set_callback(accept_source_.get(), G_SOURCE_FUNC(on_accept_trampoline), this,
                          nullptr);
    g_source_attach(accept_source_.get(), nullptr);
  }
}

TlsService::~TlsService() {
  accept_source_.reset();
  timer_.arm(std::nullopt);
  for (auto& [id, pending] : pending_) pending->io_source.reset();
  pending_.clear();
}

void TlsService::set_targets(RendezvousService* rendezvous, TurnService* turn) {
  rendezvous_ = rendezvous;
  turn_ = turn;
}

gboolean TlsService::on_accept_trampoline(GSocket*, GIOCondition, gpointer self) {
  auto* service = static_cast<TlsService*>(self);
  guard_callback("tls: accept", [service] { service->on_accept(); });
  return G_SOURCE_CONTINUE;
}

void TlsService::on_accept() {
  for (int i = 0; i < 64; ++i) {
    GError* raw_error = nullptr;
    GSocket* socket = g_socket_accept(listener_.get(), nullptr, &raw_error);
    if (!socket) {
      GErrorPtr error(raw_error);
      if (!g_error_matches(error.get(), G_IO_ERROR, G_IO_ERROR_WOULD_BLOCK))
        log::warn_limited("tls-accept", "tls: accept: %s", error->message);
      return;
    }
    GObjectPtr<GSocket> owned(socket);
    // TURN over TLS carries QUIC: small packets that must not wait for Nagle.
    g_socket_set_option(socket, IPPROTO_TCP, TCP_NODELAY, 1, nullptr);
    adopt(socket);
  }
}

void TlsService::set_sni_route(SniPeek::Route route) {
  // The peek holds a connection's place in the budget: one address cannot fill the
  // peek any more than the handshakes. A name the front door takes frees the place.
  sni_peek_ = std::make_unique<SniPeek>(
      [this, route = std::move(route)](GSocket* socket, const std::string& server_name) {
        const bool taken = route(socket, server_name);
        if (taken) budget_.release(take_peeked(socket));
        return taken;
      },
      [this](GSocket* socket) { start_handshake(socket, take_peeked(socket)); },
      [this](GSocket* socket) { budget_.release(take_peeked(socket)); });
}

uint64_t TlsService::take_peeked(GSocket* socket) {
  auto it = peeked_.find(socket);
  if (it == peeked_.end()) return 0;  // never admitted: nothing to release
  const uint64_t id = it->second;
  peeked_.erase(it);
  return id;
}

void TlsService::adopt(GSocket* socket) {
  GObjectPtr<GSocketAddress> remote(g_socket_get_remote_address(socket, nullptr));
  if (!remote) {
    g_socket_close(socket, nullptr);
    return;
  }
  const auto from = net::to_transport_address(remote.get());
  const uint64_t id = next_id_++;
  const auto admission = budget_.admit(id, from, std::chrono::steady_clock::now());
  if (admission != ConnectionBudget::Admission::kAccepted) {
    const bool per_address = admission == ConnectionBudget::Admission::kTooManyFromAddress;
    log::warn_limited("tls-pending", "tls: refusing %s: %s", from.to_string().c_str(),
                      per_address ? "too many handshakes from this address"
                                  : "too many handshakes in progress");
    if (stats_) stats_->error(per_address ? "tls_handshakes_per_address" : "tls_handshakes_total");
    g_socket_close(socket, nullptr);
    return;
  }
  if (sni_peek_) {
    peeked_[socket] = id;
    sni_peek_->adopt(socket);
    return;
  }
  start_handshake(socket, id);
}

void TlsService::start_handshake(GSocket* socket, uint64_t id) {
  if (id == 0) {  // not admitted (cannot happen: every peeked socket was)
    g_socket_close(socket, nullptr);
    return;
  }
  budget_.touch(id, std::chrono::steady_clock::now());  // the handshake's own time
  auto pending = std::make_unique<Pending>();
  pending->service = this;
  pending->id = id;
  pending->stream = make_tls_stream(socket, ctx_.get(), /*is_server=*/true);
  Pending& ref = *pending;
  pending_.emplace(ref.id, std::move(pending));
  timer_.arm(budget_.next_deadline());
  advance(ref);
}

void TlsService::watch(Pending& pending, GIOCondition condition) {
  if (pending.io_source && pending.condition == condition) return;
  pending.condition = condition;
  pending.io_source.reset(g_socket_create_source(pending.stream->socket(), condition, nullptr));
  g_source_set_callback(pending.io_source.get(), G_SOURCE_FUNC(on_io_trampoline), &pending,
                        nullptr);
  g_source_attach(pending.io_source.get(), nullptr);
}

gboolean TlsService::on_io_trampoline(GSocket*, GIOCondition, gpointer data) {
  auto* pending = static_cast<Pending*>(data);
  guard_callback("tls", [pending] { pending->service->advance(*pending); });  // may free it
  return G_SOURCE_CONTINUE;
}

void TlsService::on_timer() {
  guard_callback("tls: timer", [this] {
    for (uint64_t id : budget_.take_expired(std::chrono::steady_clock::now())) {
      auto it = pending_.find(id);
      if (it == pending_.end()) continue;
      log::warn_limited("tls-timeout", "tls: %s: no handshake and data within %lld s, closing",
                        it->second->stream->remote_address().c_str(),
                        static_cast<long long>(kHandshakeTimeout.count()));
      if (stats_) stats_->error("tls_handshake_timeout");
      drop(id);
    }
  });
  timer_.arm(budget_.next_deadline());
}

bool TlsService::advance(Pending& pending) {
  std::array<std::byte, 4096> buffer;
  size_t n = 0;
  std::string error;
  switch (pending.stream->read(buffer, n, error)) {
    case ByteStream::Io::kWouldBlock:
      watch(pending, pending.stream->wait_condition());
      return true;
    case ByteStream::Io::kEof:
    case ByteStream::Io::kError:
      log::debug("tls: %s: %s", pending.stream->remote_address().c_str(),
                 error.empty() ? "closed during the handshake" : error.c_str());
      drop(pending.id);
      return false;
    case ByteStream::Io::kOk:
      break;
  }
  const auto first = std::span<const std::byte>(buffer).first(n);
  const TcpProtocol protocol = classify_first_byte(first[0]);
  std::unique_ptr<ByteStream> stream = std::move(pending.stream);
  const std::string remote = stream->remote_address();
  const uint64_t id = pending.id;
  pending.io_source.reset();
  budget_.release(id);
  pending_.erase(id);  // `pending` is gone from here on
  if (protocol == TcpProtocol::kRendezvous && rendezvous_) {
    rendezvous_->adopt_stream(std::move(stream), first);
  } else if (protocol == TcpProtocol::kStun && turn_) {
    GObjectPtr<GSocketAddress> address(g_socket_get_remote_address(stream->socket(), nullptr));
    const auto from = net::to_transport_address(address.get());
    turn_->adopt_stream(std::move(stream), turn::Transport::kTls, from, first);
  } else {
    log::warn_limited("tls-protocol", "tls: closing %s: first byte 0x%02x (%s) is not served",
                      remote.c_str(), std::to_integer<unsigned>(first[0]), to_string(protocol));
    stream->shutdown_write();
    g_socket_close(stream->socket(), nullptr);
  }
  return false;
}

void TlsService::drop(uint64_t id) {
  auto it = pending_.find(id);
  if (it == pending_.end()) return;
  it->second->io_source.reset();
  budget_.release(id);
  g_socket_close(it->second->stream->socket(), nullptr);
  pending_.erase(it);
}

}  // namespace natfwd::relay
