#include "forward/local_listener.h"

#include "log.h"

namespace natfwd {

LocalListener::LocalListener(GSocket* socket, std::string bound, LocalForwardSpec spec,
                             std::string peer, Accept accept)
    : socket_(socket),
      bound_(std::move(bound)),
      spec_(std::move(spec)),
      peer_(std::move(peer)),
      accept_(std::move(accept)) {
  source_ = g_socket_create_source(socket_, G_IO_IN, nullptr);
  g_source_set_callback(source_, G_SOURCE_FUNC(on_accept), this, nullptr);
  g_source_attach(source_, nullptr);
}

LocalListener::~LocalListener() {
  g_source_destroy(source_);
  g_source_unref(source_);
  g_socket_close(socket_, nullptr);
  g_object_unref(socket_);
}

gboolean LocalListener::on_accept(GSocket*, GIOCondition, gpointer self) {
  try {
    static_cast<LocalListener*>(self)->accept_all();
  } catch (const std::exception& e) {
    log::error("-L %s: %s", static_cast<LocalListener*>(self)->bound_.c_str(), e.what());
  }
  return G_SOURCE_CONTINUE;
}

void LocalListener::accept_all() {
  for (;;) {
    GError* error = nullptr;
    GSocket* client = g_socket_accept(socket_, nullptr, &error);
    if (!client) {
      if (!g_error_matches(error, G_IO_ERROR, G_IO_ERROR_WOULD_BLOCK))
        log::warn("accept on %s: %s", spec_.listen.to_string().c_str(), error->message);
      g_error_free(error);
      return;
    }
    GSocketConnection* connection = g_socket_connection_factory_create_connection(client);
    g_object_unref(client);
    accept_(connection, spec_.target);
    g_object_unref(connection);
  }
}

}  // namespace natfwd
