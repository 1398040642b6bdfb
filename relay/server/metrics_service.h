// `relay --metrics ADDR:PORT`: a minimal HTTP/1.1 server for Prometheus scrapes. One
// request per connection (answered with Connection: close); GET /metrics gets the
// text exposition format, other requests 404, malformed ones are closed.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include <gio/gio.h>

#include "address.h"
#include "glib_ptr.h"

namespace natfwd::relay {

class MetricsService {
 public:
  // Binds `listen` (port 0 picks one); throws std::runtime_error when it cannot.
  // `render` makes the body at each scrape.
  MetricsService(const HostPort& listen, std::function<std::string()> render);
  ~MetricsService();
  MetricsService(const MetricsService&) = delete;
  MetricsService& operator=(const MetricsService&) = delete;

  const HostPort& local_address() const { return local_address_; }

 private:
  struct Client;
  static gboolean on_incoming(GSocketService*, GSocketConnection* connection, GObject*,
                              gpointer self);
  static void on_read(GObject* stream, GAsyncResult* result, gpointer client);
  void read_more(Client* client);
  void finish(Client* client, const std::string& response);
  // Closes and forgets `client`. With a read pending the read is cancelled and its
  // callback frees the client; without, it is freed here.
  void drop(Client* client, bool read_pending);
  // A connection that has not sent a whole request in this long is closed.
  static constexpr guint kRequestTimeoutSeconds = 10;

  GObjectPtr<GSocketService> service_;
  HostPort local_address_;
  std::function<std::string()> render_;
  std::vector<std::unique_ptr<Client>> clients_;
};

}  // namespace natfwd::relay
