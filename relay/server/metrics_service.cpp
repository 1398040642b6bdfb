#include "server/metrics_service.h"

#include <algorithm>
#include <stdexcept>

#include "log.h"
#include "metrics/relay_stats.h"
#include "net/socket_address.h"

namespace natfwd::relay {

// Scrapers are few; more at once than this is someone else, and then the oldest
// connection that has not sent its request yet goes: a scraper sends its request at
// once, so idle connections cannot keep Prometheus out.
constexpr size_t kMaxClients = 16;

struct MetricsService::Client {
  MetricsService* service = nullptr;
  GObjectPtr<GSocketConnection> connection;
  std::string received;
  char buffer[1024];
  SourceId timeout;
  GObjectPtr<GCancellable> cancellable{g_cancellable_new()};
};

MetricsService::MetricsService(const HostPort& listen, std::function<std::string()> render)
    : service_(g_socket_service_new()), render_(std::move(render)) {
  local_address_ = net::listen_tcp_on(G_SOCKET_LISTENER(service_.get()), listen, "metrics");
  g_signal_connect(service_.get(), "incoming", G_CALLBACK(on_incoming), this);
  g_socket_service_start(service_.get());
}

MetricsService::~MetricsService() {
  g_socket_service_stop(service_.get());
  g_socket_listener_close(G_SOCKET_LISTENER(service_.get()));
  g_signal_handlers_disconnect_by_data(service_.get(), this);
  // Every client in the list has a read pending (see on_read): cancelled, it frees
  // the client without touching this object.
  while (!clients_.empty()) drop(clients_.back().get(), true);
}

gboolean MetricsService::on_incoming(GSocketService*, GSocketConnection* connection, GObject*,
                                     gpointer self) {
  auto* service = static_cast<MetricsService*>(self);
  if (service->clients_.size() >= kMaxClients) {
    log::warn_limited("metrics-clients", "metrics: %zu connections without a request; "
                      "dropping the oldest", service->clients_.size());
    service->drop(service->clients_.front().get(), true);
  }
  auto client = std::make_unique<Client>();
  client->service = service;
  client->connection.reset(G_SOCKET_CONNECTION(g_object_ref(connection)));
  Client* raw = client.get();
  raw->timeout.reset(g_timeout_add_seconds(kRequestTimeoutSeconds, [](gpointer data) {
    auto* c = static_cast<Client*>(data);
    c->timeout.release();
    guard_callback("metrics: timeout", [c] { c->service->drop(c, true); });
    return G_SOURCE_REMOVE;
  }, raw));
  service->clients_.push_back(std::move(client));
  service->read_more(raw);
  return TRUE;
}

void MetricsService::read_more(Client* client) {
  GInputStream* in = g_io_stream_get_input_stream(G_IO_STREAM(client->connection.get()));
  g_input_stream_read_async(in, client->buffer, sizeof client->buffer, G_PRIORITY_DEFAULT,
                            client->cancellable.get(), on_read, client);
}

void MetricsService::on_read(GObject* stream, GAsyncResult* result, gpointer data) {
  auto* client = static_cast<Client*>(data);
  GError* raw_error = nullptr;
  const gssize n = g_input_stream_read_finish(G_INPUT_STREAM(stream), result, &raw_error);
  if (n < 0) {
    GErrorPtr error(raw_error);
    if (g_error_matches(error.get(), G_IO_ERROR, G_IO_ERROR_CANCELLED)) {
      delete client;  // already dropped: drop() left the freeing to this callback
      return;
    }
    client->service->drop(client, false);
    return;
  }
  MetricsService* service = client->service;
  if (n == 0) {
    service->drop(client, false);
    return;
  }
  client->received.append(client->buffer, static_cast<size_t>(n));
  switch (classify_metrics_request(client->received)) {
    case MetricsRequest::kNeedMore:
      service->read_more(client);
      return;
    case MetricsRequest::kMalformed:
      log::debug("metrics: malformed request, closing");
      service->drop(client, false);
      return;
    case MetricsRequest::kNotFound: {
      const std::string body = "not found; try /metrics\n";
      service->finish(client, "HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\n"
                              "Content-Length: " + std::to_string(body.size()) +
                              "\r\nConnection: close\r\n\r\n" + body);
      return;
    }
    case MetricsRequest::kMetrics: {
      const std::string body = service->render_();
      service->finish(client, "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; "
                              "charset=utf-8\r\nContent-Length: " + std::to_string(body.size()) +
                              "\r\nConnection: close\r\n\r\n" + body);
      return;
    }
  }
}

void MetricsService::finish(Client* client, const std::string& response) {
  // A few kilobytes into a fresh socket's send buffer: this does not block, and the
  // timeout bounds it if a client never reads.
  GSocket* socket = g_socket_connection_get_socket(client->connection.get());
  g_socket_set_timeout(socket, 2);
  GOutputStream* out = g_io_stream_get_output_stream(G_IO_STREAM(client->connection.get()));
  g_output_stream_write_all(out, response.data(), response.size(), nullptr, nullptr, nullptr);
  drop(client, false);
}

void MetricsService::drop(Client* client, bool read_pending) {
  client->timeout.reset();
  auto it = std::find_if(clients_.begin(), clients_.end(),
                         [client](const auto& c) { return c.get() == client; });
  if (it == clients_.end()) return;
  it->release();
  clients_.erase(it);
  if (read_pending) {
    // Closing the stream must wait for the read; the connection goes with the client.
    g_cancellable_cancel(client->cancellable.get());
    return;
  }
  g_io_stream_close(G_IO_STREAM(client->connection.get()), nullptr, nullptr);
  delete client;
}

}  // namespace natfwd::relay
