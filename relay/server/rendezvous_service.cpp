#include "server/rendezvous_service.h"

#include <netinet/in.h>
#include <netinet/tcp.h>

#include <exception>

#include "log.h"
#include "net/socket_address.h"
#include "server/tls_service.h"
#include "server/turn_service.h"
#include "tcp_dispatch.h"

namespace natfwd::relay {
namespace {

TimePoint now() { return Clock::now(); }

}  // namespace

RendezvousService::RendezvousService(GSocket* listener, RendezvousConfig config,
                                     TurnService* turn, TlsService* tls,
                                     std::unique_ptr<NameBindingPolicy> names)
    : listener_(G_SOCKET(g_object_ref(listener))),
      core_(config, names ? std::move(names) : std::make_unique<MemoryNameBinding>()),
      turn_(turn),
      tls_(tls) {
  g_socket_set_blocking(listener_.get(), FALSE);
  watch_listener();
}

RendezvousService::~RendezvousService() {
  // Sources first, so that no callback runs into a half-destroyed object.
  accept_source_.reset();
  resume_accept_source_.reset();
  timer_.arm(std::nullopt);
  reap_source_.reset();
  for (auto& [id, client] : clients_) {
    client->sniff_source.reset();
    if (client->framed) client->framed->close();
  }
  clients_.clear();
}

void RendezvousService::watch_listener() {
  accept_source_.reset(g_socket_create_source(listener_.get(), G_IO_IN, nullptr));
  g_source_set_callback(accept_source_.get(), G_SOURCE_FUNC(on_accept_trampoline), this,
                        nullptr);
  g_source_attach(accept_source_.get(), nullptr);
}

gboolean RendezvousService::on_accept_trampoline(GSocket*, GIOCondition, gpointer self) {
  auto* service = static_cast<RendezvousService*>(self);
  guard_callback("rendezvous: accept", [service] { service->on_accept(); });
  return G_SOURCE_CONTINUE;
}

gboolean RendezvousService::on_resume_accept_trampoline(gpointer self) {
  auto* service = static_cast<RendezvousService*>(self);
  service->resume_accept_source_.reset();
  service->watch_listener();
  return G_SOURCE_REMOVE;
}

void RendezvousService::on_accept() {
  for (int i = 0; i < kMaxAcceptsPerWakeup; ++i) {
    GError* raw_error = nullptr;
    GSocket* socket = g_socket_accept(listener_.get(), nullptr, &raw_error);
    if (!socket) {
      GErrorPtr error(raw_error);
      if (g_error_matches(error.get(), G_IO_ERROR, G_IO_ERROR_WOULD_BLOCK)) return;
      // EMFILE and friends: the listener stays readable, so stop watching it for a
      // moment instead of spinning.
      log::warn_limited("rendezvous-accept", "rendezvous: accept: %s", error->message);
      accept_source_.reset();
      resume_accept_source_.reset(g_timeout_source_new(kAcceptBackoffMs));
      g_source_set_callback(resume_accept_source_.get(), on_resume_accept_trampoline, this,
                            nullptr);
      g_source_attach(resume_accept_source_.get(), nullptr);
      return;
    }
    GObjectPtr<GSocket> owned(socket);
    // TURN over TCP carries QUIC: small packets that must not wait for Nagle.
    g_socket_set_option(socket, IPPROTO_TCP, TCP_NODELAY, 1, nullptr);
    accept_one(socket);
  }
}

std::optional<ConnectionId> RendezvousService::admit(const HostPort& remote) {
  const ConnectionId id = next_id_++;
  const Admission admission = core_.on_connection_opened(id, remote, now());
  if (admission != Admission::kAccepted) {
    log::warn_limited("rendezvous-admission", "rendezvous: refused %s: %s",
                      remote.to_string().c_str(),
                      admission == Admission::kTooManyFromAddress
                          ? "too many connections from this address"
                          : "too many connections");
    return std::nullopt;
  }
  return id;
}

void RendezvousService::adopt_stream(std::unique_ptr<ByteStream> stream,
                                     std::span<const std::byte> already_read) {
  GObjectPtr<GSocketAddress> remote_address(g_socket_get_remote_address(stream->socket(), nullptr));
  const auto id = admit(net::to_host_port(remote_address.get()));
  if (!id) {
    stream->shutdown_write();
    return;
  }
  auto client = std::make_unique<Client>();
  client->service = this;
  client->id = *id;
  const ConnectionId connection = *id;
  Client& ref = *client;
  clients_.emplace(connection, std::move(client));
  ref.framed = std::make_unique<FramedConnection>(
      std::move(stream),
      [this, connection](const wire::Envelope& envelope) { on_envelope(connection, envelope); },
      [this, connection](const std::string& reason) { on_transport_closed(connection, reason); },
      size_t{1} << 20, already_read);
  arm_timer();
}

void RendezvousService::accept_one(GSocket* socket) {
  GSocketAddress* raw_remote = g_socket_get_remote_address(socket, nullptr);
  GObjectPtr<GSocketAddress> remote_owned(raw_remote);
  const HostPort remote = net::to_host_port(raw_remote);
  const auto admitted = admit(remote);
  if (!admitted) {
    g_socket_close(socket, nullptr);
    return;
  }
  const ConnectionId id = *admitted;
  g_socket_set_blocking(socket, FALSE);
  auto client = std::make_unique<Client>();
  client->service = this;
  client->id = id;
  client->socket.reset(G_SOCKET(g_object_ref(socket)));
  client->sniff_source.reset(
      g_socket_create_source(socket, GIOCondition(G_IO_IN | G_IO_HUP | G_IO_ERR), nullptr));
  g_source_set_callback(client->sniff_source.get(), G_SOURCE_FUNC(on_sniff_trampoline),
                        client.get(), nullptr);
  g_source_attach(client->sniff_source.get(), nullptr);
  clients_.emplace(id, std::move(client));
  arm_timer();
}

gboolean RendezvousService::on_sniff_trampoline(GSocket*, GIOCondition, gpointer data) {
  auto* client = static_cast<Client*>(data);
  return guard_callback("rendezvous", G_SOURCE_REMOVE, [client]() -> gboolean {
    return client->service->on_sniff(*client) ? G_SOURCE_CONTINUE : G_SOURCE_REMOVE;
  });
}

// Peeks at the first byte without consuming it, so that whoever handles the protocol
// sees the whole stream.
bool RendezvousService::on_sniff(Client& client) {
  std::byte first{};
  GInputVector vector{&first, 1};
  gint flags = G_SOCKET_MSG_PEEK;
  GError* raw_error = nullptr;
  const gssize n = g_socket_receive_message(client.socket.get(), nullptr, &vector, 1, nullptr,
                                            nullptr, &flags, nullptr, &raw_error);
  GErrorPtr error(raw_error);
  if (n < 0 && g_error_matches(error.get(), G_IO_ERROR, G_IO_ERROR_WOULD_BLOCK)) return true;
  const ConnectionId id = client.id;
  if (n <= 0) {
    on_transport_closed(id, n == 0 ? "closed before sending anything" : error->message);
    return false;
  }
  const TcpProtocol protocol = classify_first_byte(first);
  if (protocol == TcpProtocol::kRendezvous) {
    start_rendezvous(client);
    return false;  // start_rendezvous dropped the sniff source
  }
  if ((protocol == TcpProtocol::kStun && turn_) || (protocol == TcpProtocol::kTls && tls_)) {
    // Not a rendezvous connection after all: the core forgets it, and the socket
    // moves to the TURN or TLS service.
    GObjectPtr<GSocket> socket(client.socket.release());
    client.sniff_source.reset();
    core_.on_connection_closed(id, "handed over", now());
    retire(id);
    if (protocol == TcpProtocol::kStun) {
      GObjectPtr<GSocketAddress> remote(g_socket_get_remote_address(socket.get(), nullptr));
      turn_->adopt_stream(make_plain_stream(socket.get()), turn::Transport::kTcp,
                          net::to_transport_address(remote.get()), {});
    } else {
      tls_->adopt(socket.get());
    }
    apply_actions();
    return false;
  }
  log::warn_limited("rendezvous-protocol-sniff",
                    "tcp: closing connection speaking %s (first byte 0x%02x): not served",
                    to_string(protocol), std::to_integer<unsigned>(first));
  on_transport_closed(id, std::string("unsupported protocol: ") + to_string(protocol));
  return false;
}

void RendezvousService::start_rendezvous(Client& client) {
  const ConnectionId id = client.id;
  client.sniff_source.reset();  // safe inside its own callback: GLib holds a reference
  client.framed = std::make_unique<FramedConnection>(
      client.socket.get(),
      [this, id](const wire::Envelope& envelope) { on_envelope(id, envelope); },
      [this, id](const std::string& reason) { on_transport_closed(id, reason); });
  client.socket.reset();  // FramedConnection holds its own reference
}

void RendezvousService::on_envelope(ConnectionId id, const wire::Envelope& envelope) {
  try {
    core_.on_envelope(id, envelope, now());
    apply_actions();
  } catch (const std::exception& e) {
    // A bug of ours, not the peer's; keep serving the others.
    log::error("rendezvous: connection %llu: %s", static_cast<unsigned long long>(id), e.what());
    retire(id);
  }
}

void RendezvousService::on_transport_closed(ConnectionId id, const std::string& reason) {
  try {
    core_.on_connection_closed(id, reason, now());
    retire(id);
    apply_actions();
  } catch (const std::exception& e) {
    log::error("rendezvous: connection %llu: %s", static_cast<unsigned long long>(id), e.what());
  }
}

void RendezvousService::apply_actions() {
  // Sending can fail synchronously and report a closed transport, which queues more
  // actions; the outermost call drains them all.
  if (applying_actions_) return;
  applying_actions_ = true;
  struct Reset {
    bool& flag;
    ~Reset() { flag = false; }
  } reset{applying_actions_};
  for (auto actions = core_.take_actions(); !actions.empty(); actions = core_.take_actions()) {
    for (auto& action : actions) {
      if (auto* send = std::get_if<SendAction>(&action)) {
        auto it = clients_.find(send->connection);
        if (it != clients_.end() && it->second->framed) it->second->framed->send(send->envelope);
      } else if (auto* close = std::get_if<CloseAction>(&action)) {
        log::debug("rendezvous: closing connection %llu: %s",
                   static_cast<unsigned long long>(close->connection), close->reason.c_str());
        retire(close->connection);
      } else if (auto* check = std::get_if<CheckDomainsAction>(&action)) {
        if (domain_checker_) {
          domain_checker_(*check);
        } else {
          core_.on_domains_checked(
              check->connection, check->check,
              std::vector<DomainVerdict>(check->domains.size(),
                                         {DomainVerdict::Outcome::kRetry,
                                          "this relay cannot look up custom domains"}),
              now());
        }
      }
    }
  }
  arm_timer();
}

void RendezvousService::domains_checked(ConnectionId id, uint64_t check,
                                        const std::vector<DomainVerdict>& verdicts) {
  try {
    core_.on_domains_checked(id, check, verdicts, now());
    apply_actions();
  } catch (const std::exception& e) {
    log::error("rendezvous: custom domains of connection %llu: %s",
               static_cast<unsigned long long>(id), e.what());
  }
}

void RendezvousService::retire(ConnectionId id) {
  auto it = clients_.find(id);
  if (it == clients_.end()) return;
  Client& client = *it->second;
  client.sniff_source.reset();
  if (client.framed) client.framed->close();  // flushes a final Error, no callback
  if (client.socket) {
    g_socket_close(client.socket.get(), nullptr);
    client.socket.reset();
  }
  to_reap_.insert(id);
  if (!reap_source_) {
    reap_source_.reset(g_idle_source_new());
    g_source_set_callback(reap_source_.get(), on_reap_trampoline, this, nullptr);
    g_source_attach(reap_source_.get(), nullptr);
  }
}

gboolean RendezvousService::on_reap_trampoline(gpointer self) {
  auto* service = static_cast<RendezvousService*>(self);
  for (ConnectionId id : service->to_reap_) service->clients_.erase(id);
  service->to_reap_.clear();
  service->reap_source_.reset();
  return G_SOURCE_REMOVE;
}

void RendezvousService::arm_timer() { timer_.arm(core_.next_deadline()); }

void RendezvousService::on_timer() {
  try {
    core_.on_tick(now());
    apply_actions();  // re-arms
  } catch (const std::exception& e) {
    log::error("rendezvous: timer: %s", e.what());
    arm_timer();
  }
}

}  // namespace natfwd::relay
