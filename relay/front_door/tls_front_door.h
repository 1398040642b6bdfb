// The publishing front door on the relay's TLS ports: a ClientHello whose server name
// is NAME.DOMAIN of a peer that publishes tls goes, untouched and still encrypted, to
// that peer's target, which terminates TLS with its own certificate (the relay never
// holds a key for the name nor sees the plaintext). Called by the SNI peek
// (server/sni_peek.h) before the relay's own TLS.
#pragma once

#include <memory>
#include <string>

#include <gio/gio.h>

#include "front_door/http_front_door.h"

namespace natfwd::relay::front_door {

class FrontDoorPeer;
class VisitorLimits;

class TlsFrontDoor {
 public:
  // `domain` is lowercase; `peer` must outlive this.
  TlsFrontDoor(std::string domain, HttpFrontDoor::Lookup lookup, FrontDoorPeer& peer,
               std::shared_ptr<VisitorLimits> limits);

  // SniPeek::Route: true when `server_name` is a published peer's and the connection
  // went to it; false leaves it to the relay's own TLS (its own name, a name nobody
  // publishes: the client then meets the relay's certificate and gives up).
  bool route(GSocket* socket, const std::string& server_name);
  // Custom domains: server names outside DOMAIN that a peer publishes.
  void set_custom_lookup(HttpFrontDoor::CustomLookup lookup) {
    custom_lookup_ = std::move(lookup);
  }

 private:
  std::string domain_;
  HttpFrontDoor::Lookup lookup_;
  HttpFrontDoor::CustomLookup custom_lookup_;
  FrontDoorPeer& peer_;
  std::shared_ptr<VisitorLimits> limits_;
};

}  // namespace natfwd::relay::front_door
