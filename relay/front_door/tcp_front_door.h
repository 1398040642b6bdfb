// The publishing front door for raw TCP (relay --publish-ports): listens on every port
// of the range, and carries a connection on port P, as it came, to the target that a
// peer publishes there (peer --publish tcp:); a port nobody publishes closes the
// connection at once, and so do the publish's allow-from and the visitor limits.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>

#include <gio/gio.h>

#include "address.h"
#include "glib_ptr.h"
#include "rendezvous/rendezvous_core.h"


namespace natfwd::relay::front_door {

class FrontDoorPeer;
class VisitorLimits;

class TcpFrontDoor {
 public:
  // The name and service published on a port, if any.
  using Lookup =
      std::function<std::optional<std::pair<std::string, PublishedService>>(uint16_t port)>;

  // Binds every port from `min` to `max` on `ip`; throws std::runtime_error when one
  // cannot be bound. `peer` must outlive this.
  TcpFrontDoor(const std::string& ip, uint16_t min, uint16_t max, Lookup lookup,
               FrontDoorPeer& peer, std::shared_ptr<VisitorLimits> limits);
  ~TcpFrontDoor();
  TcpFrontDoor(const TcpFrontDoor&) = delete;
  TcpFrontDoor& operator=(const TcpFrontDoor&) = delete;

 private:
  static gboolean on_incoming(GSocketService*, GSocketConnection* tcp, GObject*, gpointer self);
  void accept(GSocketConnection* tcp);

  Lookup lookup_;
  FrontDoorPeer& peer_;
  std::shared_ptr<VisitorLimits> limits_;
  GObjectPtr<GSocketService> service_;
};

}  // namespace natfwd::relay::front_door
