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
  source_.reset(g_socket_create_source(socket_.get(), G_IO_IN, nullptr));
  g_source_set_callback(source_.get(), G_SOURCE_FUNC(on_accept), this, nullptr);
  g_source_attach(source_.get(), nullptr);
}

SocksListener::~SocksListener() {
  source_.reset();
  clients_.clear();
  g_socket_close(socket_.get(), nullptr);
}

gboolean SocksListener::on_accept(GSocket* socket, GIOCondition, gpointer self) {
  auto* listener = static_cast<SocksListener*>(self);
  return guard_callback("socks: accept", G_SOURCE_CONTINUE, [&] {
    for (;;) {
      GError* raw_error = nullptr;
      GObjectPtr<GSocket> accepted(g_socket_accept(socket, nullptr, &raw_error));
      GErrorPtr error(raw_error);
      if (!accepted) {
        if (!g_error_matches(error.get(), G_IO_ERROR, G_IO_ERROR_WOULD_BLOCK))
          log::warn("accept on %s: %s", listener->bound_.c_str(), error->message);
        return G_SOURCE_CONTINUE;
      }
      if (listener->clients_.size() >= kMaxHandshakes) {
        // The oldest pending handshake goes, not the newcomer: a real client sends its
        // greeting at once, so idle connections cannot keep the listener shut.
        log::warn_limited("socks handshakes",
                          "-D %s: too many SOCKS handshakes at once; dropping the oldest",
                          listener->bound_.c_str());
        listener->drop(*listener->clients_.front());
      }
      auto client = std::make_unique<Client>();
      client->owner = listener;
      client->tcp.reset(g_socket_connection_factory_create_connection(accepted.get()));
      client->socket = g_socket_connection_get_socket(client->tcp.get());
      g_socket_set_blocking(client->socket, FALSE);
      client->source.reset(g_socket_create_source(client->socket, G_IO_IN, nullptr));
      g_source_set_callback(client->source.get(), G_SOURCE_FUNC(on_client_readable),
                            client.get(), nullptr);
      g_source_attach(client->source.get(), nullptr);
      client->timeout.reset(
          g_timeout_add_seconds(kHandshakeTimeoutSeconds, on_client_timeout, client.get()));
      listener->clients_.push_back(std::move(client));
    }
  });
}

gboolean SocksListener::on_client_readable(GSocket*, GIOCondition, gpointer data) {
  auto* client = static_cast<Client*>(data);
  SocksListener* owner = client->owner;
  return guard_callback("socks: handshake", G_SOURCE_CONTINUE, [&] {
    owner->read_handshake(*client);  // may drop the client: touch nothing after
    return G_SOURCE_CONTINUE;
  });
}

gboolean SocksListener::on_client_timeout(gpointer data) {
  auto* client = static_cast<Client*>(data);
  client->timeout.release();  // returning G_SOURCE_REMOVE removes it
  guard_callback("socks: timeout", [&] {
    log::info("-D %s: a SOCKS client sent no complete request within %u s",
              client->owner->bound_.c_str(), kHandshakeTimeoutSeconds);
    client->owner->drop(*client);
  });
  return G_SOURCE_REMOVE;
}

void SocksListener::read_handshake(Client& client) {
  // Exactly what the handshake can take, so nothing of the client's payload is read.
  while (client.handshake.status() == SocksHandshake::Status::kNeedMore) {
    uint8_t buffer[512];
    const size_t want = std::min(client.handshake.wanted(), sizeof buffer);
    GError* raw_error = nullptr;
    gssize n = g_socket_receive(client.socket, reinterpret_cast<gchar*>(buffer), want, nullptr,
                                &raw_error);
    GErrorPtr error(raw_error);
    if (n < 0 && g_error_matches(error.get(), G_IO_ERROR, G_IO_ERROR_WOULD_BLOCK)) return;
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
  std::shared_ptr<GSocket> socket = ref_object(client.socket);
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
  GObjectPtr<GSocketConnection> tcp = std::move(client.tcp);
  drop(client);
  forward_(tcp.get(), target, std::move(on_result));
}

void SocksListener::drop(Client& client) {
  // Its sources go with it; its connection closes unless someone else holds it.
  for (auto it = clients_.begin(); it != clients_.end(); ++it) {
    if (it->get() == &client) {
      clients_.erase(it);
      return;
    }
  }
}

}  // namespace natfwd
