#include "front_door/tls_front_door.h"

#include "front_door/front_door_peer.h"
#include "front_door/http_head.h"
#include "identity.h"
#include "log.h"

namespace natfwd::relay::front_door {

TlsFrontDoor::TlsFrontDoor(std::string domain, HttpFrontDoor::Lookup lookup, FrontDoorPeer& peer)
    : domain_(std::move(domain)), lookup_(std::move(lookup)), peer_(peer) {}

bool TlsFrontDoor::route(GSocket* socket, const std::string& server_name) {
  const std::optional<std::string> name = published_name(server_name, domain_);
  if (!name) return false;
  const std::optional<PublishedService> service = lookup_(*name);
  if (!service) {
    // Any visitor can ask for any name: debug only.
    log::debug("publish tls: %s is not published here; the relay's own TLS answers",
               server_name.c_str());
    return false;
  }
  PublicKey key{};
  public_key_from_bytes(std::span(reinterpret_cast<const uint8_t*>(service->public_key.data()),
                                  service->public_key.size()),
                        key);
  GObjectPtr<GSocketConnection> tcp(g_socket_connection_factory_create_connection(socket));
  log::debug("publish tls: %s -> %s (%s)", server_name.c_str(), name->c_str(),
             service->target.to_string().c_str());
  // Nothing was read: the ClientHello is still on the socket, for home to answer.
  peer_.forward(*name, key, tcp.get(), service->target, {});
  return true;
}

}  // namespace natfwd::relay::front_door
