#include "forward/local_listener.h"

#include "log.h"

namespace natfwd {

LocalListener::LocalListener(GSocket* socket, std::string bound, LocalForwardSpec spec,
                             std::string peer, Accept accept)
    : bound_(std::move(bound)),
      spec_(std::move(spec)),
      peer_(std::move(peer)),
      accept_(std::move(accept)),
      socket_(socket),
      source_(g_socket_create_source(socket, G_IO_IN, nullptr)) {
  g_source_set_callback(source_.get(), G_SOURCE_FUNC(on_accept), this, nullptr);
  g_source_attach(source_.get(), nullptr);
}

LocalListener::~LocalListener() {
  source_.reset();
  g_socket_close(socket_.get(), nullptr);
}

gboolean LocalListener::on_accept(GSocket*, GIOCondition, gpointer self) {
  auto* listener = static_cast<LocalListener*>(self);
  return guard_callback("-L accept", G_SOURCE_CONTINUE, [listener] {
    listener->accept_all();
    return G_SOURCE_CONTINUE;
  });
}

void LocalListener::accept_all() {
  for (;;) {
    GError* error = nullptr;
    GObjectPtr<GSocket> client(g_socket_accept(socket_.get(), nullptr, &error));
    if (!client) {
      GErrorPtr owned(error);
      if (!g_error_matches(error, G_IO_ERROR, G_IO_ERROR_WOULD_BLOCK))
        log::warn("accept on %s: %s", spec_.listen.to_string().c_str(), error->message);
      return;
    }
    GObjectPtr<GSocketConnection> connection(
        g_socket_connection_factory_create_connection(client.get()));
    accept_(connection.get(), spec_.target);
  }
}

}  // namespace natfwd
