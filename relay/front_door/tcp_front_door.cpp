#include "front_door/tcp_front_door.h"

#include "front_door/front_door_peer.h"
#include "front_door/proxy_header.h"
#include "front_door/visitor_meter.h"
#include "identity.h"
#include "log.h"
#include "net/socket_address.h"

namespace natfwd::relay::front_door {

TcpFrontDoor::TcpFrontDoor(const std::string& ip, uint16_t min, uint16_t max, Lookup lookup,
                           FrontDoorPeer& peer, std::shared_ptr<VisitorLimits> limits)
    : lookup_(std::move(lookup)),
      peer_(peer),
      limits_(std::move(limits)),
      service_(g_socket_service_new()) {
  for (uint32_t port = min; port <= max; ++port)
    net::listen_tcp_on(G_SOCKET_LISTENER(service_.get()), {ip, static_cast<uint16_t>(port)},
                       "publish-ports");
  g_signal_connect(service_.get(), "incoming", G_CALLBACK(on_incoming), this);
  g_socket_service_start(service_.get());
}

TcpFrontDoor::~TcpFrontDoor() {
  g_socket_service_stop(service_.get());
  g_socket_listener_close(G_SOCKET_LISTENER(service_.get()));
  g_signal_handlers_disconnect_by_data(service_.get(), this);
}

gboolean TcpFrontDoor::on_incoming(GSocketService*, GSocketConnection* tcp, GObject*,
                                   gpointer self) {
  guard_callback("publish tcp: accept", [&] { static_cast<TcpFrontDoor*>(self)->accept(tcp); });
  return TRUE;
}

void TcpFrontDoor::accept(GSocketConnection* tcp) {
  GObjectPtr<GSocketAddress> local(g_socket_connection_get_local_address(tcp, nullptr));
  const uint16_t port = net::to_host_port(local.get()).port;
  const auto published = lookup_(port);
  if (!published) {
    // Any visitor can knock on any port of the range: debug only.
    log::debug("publish tcp: port %u is not published; closing", port);
    g_io_stream_close(G_IO_STREAM(tcp), nullptr, nullptr);
    return;
  }
  const auto& [name, service] = *published;
  GObjectPtr<GSocketAddress> remote(g_socket_connection_get_remote_address(tcp, nullptr));
  const HostPort visitor = remote ? net::to_host_port(remote.get()) : HostPort{"?", 0};
  VisitorAdmission admission = admit_visitor(limits_, service, visitor,
                                             "publish tcp: port " + std::to_string(port));
  if (admission.verdict != VisitorAdmission::Verdict::kAdmitted) {
    // Outside allow-from or over a limit: closed before anything reaches home.
    g_io_stream_close(G_IO_STREAM(tcp), nullptr, nullptr);
    return;
  }
  std::string first_bytes;
  if (service.proxy_protocol) {
    const auto header = proxy_v2_header(visitor, net::to_host_port(local.get()));
    if (!header) {
      g_io_stream_close(G_IO_STREAM(tcp), nullptr, nullptr);
      return;
    }
    first_bytes = *header;
  }
  peer_.forward(name, publisher_key(service), tcp, service.target, std::move(first_bytes), {},
                std::move(admission.meter));
}

}  // namespace natfwd::relay::front_door
