#include "front_door/tls_front_door.h"

#include "front_door/front_door_peer.h"
#include "front_door/http_head.h"
#include "front_door/proxy_header.h"
#include "front_door/visitor_meter.h"
#include "net/socket_address.h"
#include "identity.h"
#include "log.h"

namespace natfwd::relay::front_door {

TlsFrontDoor::TlsFrontDoor(std::string domain, HttpFrontDoor::Lookup lookup, FrontDoorPeer& peer,
                           std::shared_ptr<VisitorLimits> limits)
    : domain_(std::move(domain)),
      lookup_(std::move(lookup)),
      peer_(peer),
      limits_(std::move(limits)) {}

bool TlsFrontDoor::route(GSocket* socket, const std::string& server_name) {
  std::optional<std::string> name = published_name(server_name, domain_);
  std::optional<PublishedService> service = name ? lookup_(*name) : std::nullopt;
  if (auto custom = name || !custom_lookup_ ? std::nullopt : custom_lookup_(server_name)) {
    name = custom->first;
    service = custom->second;
  }
  if (!name) return false;
  if (!service) {
    // Any visitor can ask for any name: debug only.
    log::debug("publish tls: %s is not published here; the relay's own TLS answers",
               server_name.c_str());
    return false;
  }
  GObjectPtr<GSocketAddress> remote(g_socket_get_remote_address(socket, nullptr));
  const HostPort visitor = remote ? net::to_host_port(remote.get()) : HostPort{"?", 0};
  VisitorAdmission admission =
      admit_visitor(limits_, *service, visitor, "publish tls: " + server_name);
  if (admission.verdict != VisitorAdmission::Verdict::kAdmitted) {
    // Outside allow-from or over a limit: closed before anything reaches home (and not
    // handed to the relay's own TLS, which would answer with the relay's certificate).
    g_socket_close(socket, nullptr);
    return true;
  }
  GObjectPtr<GSocketConnection> tcp(g_socket_connection_factory_create_connection(socket));
  log::debug("publish tls: %s -> %s (%s)", server_name.c_str(), name->c_str(),
             service->target.to_string().c_str());
  // Nothing was read: the ClientHello is still on the socket, for home to answer,
  // after the PROXY header when the publish asked for one.
  std::string first_bytes;
  if (service->proxy_protocol) {
    GObjectPtr<GSocketAddress> local(g_socket_get_local_address(socket, nullptr));
    const auto header =
        local ? proxy_v2_header(visitor, net::to_host_port(local.get())) : std::nullopt;
    if (!header) {  // not an IP address: nothing to tell home, so nothing goes there
      g_socket_close(socket, nullptr);
      return true;
    }
    first_bytes = *header;
  }
  peer_.forward(*name, publisher_key(*service), tcp.get(), service->target,
                std::move(first_bytes), {}, std::move(admission.meter));
  return true;
}

}  // namespace natfwd::relay::front_door
