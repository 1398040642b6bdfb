#include "socks/socks_listener.h"

#include "log.h"

namespace natfwd {
namespace {

// A client has this long to send its request; then it is dropped.
constexpr guint kHandshakeTimeoutSeconds = 10;
constexpr size_t kMaxHandshakes = 64;

bool send_all(GSocket* socket, const std::vector<uint8_t>& bytes) {
  // Replies are at most 10 bytes on a fresh connection: the socket buffer takes them.
  gssize sent = g_socket_send(socket, reinterpret_cast<const gchar*>(bytes.data()),
                              bytes.size(), nullptr, nullptr);
  return sent == static_cast<gssize>(bytes.size());
}

}  // namespace

SocksListener::SocksListener(GSocket* socket, std::string bound, Forward forward)
    : socket_(socket), bound_(std::move(bound)), forward_(std::move(forward)) {
  source_ = g_socket_create_source(socket_, G_IO_IN, nullptr);
  g_source_set_callback(source_, G_SOURCE_FUNC(on_accept), this, nullptr);
  g_source_attach(source_, nullptr);
}

SocksListener::~SocksListener() {
  while (!clients_.empty()) drop(*clients_.back());
  g_source_destroy(source_);
  g_source_unref(source_);
  g_socket_close(socket_, nullptr);
  g_object_unref(socket_);
}

gboolean SocksListener::on_accept(GSocket* socket, GIOCondition, gpointer self) {
  auto* listener = static_cast<SocksListener*>(self);
  for (;;) {
    GError* error = nullptr;
    GSocket* accepted = g_socket_accept(socket, nullptr, &error);
    if (!accepted) {
      if (!g_error_matches(error, G_IO_ERROR, G_IO_ERROR_WOULD_BLOCK))
        log::warn("accept on %s: %s", listener->bound_.c_str(), error->message);
      g_error_free(error);
      return G_SOURCE_CONTINUE;
    }
    if (listener->clients_.size() >= kMaxHandshakes) {
      log::warn_limited("socks handshakes", "-D %s: too many SOCKS handshakes at once; refusing one",
                        listener->bound_.c_str());
      g_object_unref(accepted);
      continue;
    }
    auto client = std::make_unique<Client>();
    client->owner = listener;
    client->tcp = g_socket_connection_factory_create_connection(accepted);
    client->socket = g_socket_connection_get_socket(client->tcp);
    g_object_unref(accepted);
    g_socket_set_blocking(client->socket, FALSE);
    client->source = g_socket_create_source(client->socket, G_IO_IN, nullptr);
    g_source_set_callback(client->source, G_SOURCE_FUNC(on_client_readable), client.get(), nullptr);
    g_source_attach(client->source, nullptr);
    client->timeout = g_timeout_add_seconds(kHandshakeTimeoutSeconds, on_client_timeout, client.get());
    listener->clients_.push_back(std::move(client));
  }
}

gboolean SocksListener::on_client_readable(GSocket*, GIOCondition, gpointer data) {
  auto* client = static_cast<Client*>(data);
  client->owner->read_handshake(*client);  // may drop the client: touch nothing after
  return G_SOURCE_CONTINUE;
}

gboolean SocksListener::on_client_timeout(gpointer data) {
  auto* client = static_cast<Client*>(data);
  client->timeout = 0;
  log::info("-D %s: a SOCKS client sent no complete request within %u s", client->owner->bound_.c_str(),
            kHandshakeTimeoutSeconds);
  client->owner->drop(*client);
  return G_SOURCE_REMOVE;
}

void SocksListener::read_handshake(Client& client) {
  // Exactly what the handshake can take, so nothing of the client's payload is read.
  while (client.handshake.status() == SocksHandshake::Status::kNeedMore) {
    uint8_t buffer[512];
    const size_t want = std::min(client.handshake.wanted(), sizeof buffer);
    GError* error = nullptr;
    gssize n = g_socket_receive(client.socket, reinterpret_cast<gchar*>(buffer), want, nullptr, &error);
    if (n < 0 && g_error_matches(error, G_IO_ERROR, G_IO_ERROR_WOULD_BLOCK)) {
      g_error_free(error);
      return;
    }
    if (error) g_error_free(error);
    if (n <= 0) {
      log::debug("-D %s: the SOCKS client left during the handshake", bound_.c_str());
      drop(client);
      return;
    }
    const auto answer = client.handshake.feed(std::span(buffer, static_cast<size_t>(n)));
    if (!answer.empty() && !send_all(client.socket, answer)) {
      drop(client);
      return;
    }
  }
  if (client.handshake.status() == SocksHandshake::Status::kFailed) {
    log::warn_limited("socks handshake", "-D %s: SOCKS client refused: %s", bound_.c_str(),
                      client.handshake.error().c_str());
    drop(client);
    return;
  }
  hand_over(client);
}

void SocksListener::hand_over(Client& client) {
  const HostPort target = client.handshake.target();
  const SocksHandshake handshake = client.handshake;
  // The handler may run after this listener is gone (the tunnel outlives it at
  // shutdown): it holds its own reference to the socket.
  auto socket = std::shared_ptr<GSocket>(G_SOCKET(g_object_ref(client.socket)), g_object_unref);
  const std::string bound = bound_;
  OpenResultHandler on_result = [socket, handshake, target, bound](int status, const std::string& detail) {
    if (status == kStreamBroken) return;  // after the reply: the client sees the reset
    const SocksReply reply = socks_reply_for_stream_status(status);
    if (reply != SocksReply::kSucceeded)
      log::debug("-D %s: SOCKS%d CONNECT %s refused (reply %d): %s", bound.c_str(),
                handshake.version(), target.to_string().c_str(), static_cast<int>(reply),
                detail.c_str());
    send_all(socket.get(), handshake.reply(reply));
  };
  GSocketConnection* tcp = G_SOCKET_CONNECTION(g_object_ref(client.tcp));
  drop(client);
  forward_(tcp, target, std::move(on_result));
  g_object_unref(tcp);
}

void SocksListener::drop(Client& client) {
  if (client.source) {
    g_source_destroy(client.source);
    g_source_unref(client.source);
  }
  if (client.timeout) g_source_remove(client.timeout);
  g_object_unref(client.tcp);  // closes the connection unless someone else holds it
  for (auto it = clients_.begin(); it != clients_.end(); ++it) {
    if (it->get() == &client) {
      clients_.erase(it);
      return;
    }
  }
}

}  // namespace natfwd
