// The publishing front door's HTTP port (relay --publish-http): accepts visitors,
// reads the head of each one's first request (http_head.h) and hands the connection,
// with the bytes read so far, to the home peer its Host names (NAME.DOMAIN). A Host
// that names no publishing peer gets a 404 page and a malformed head a 400 page at
// once; a visitor that sends no complete head in time is closed. A visitor outside the
// publish's allow-from gets a 403 page, one over a visitor limit a 429 (the
// publisher's own limits) or 503 (the relay's total) page. The first request's
// head reaches home with X-Forwarded-For and X-Forwarded-Proto added.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>

#include <gio/gio.h>

#include "address.h"
#include "glib_ptr.h"
#include "http_request_head.h"
#include "rendezvous/rendezvous_core.h"

namespace natfwd::relay::front_door {

class FrontDoorPeer;
class VisitorLimits;

class HttpFrontDoor {
 public:
  // What the rendezvous knows: the http service the peer `name` publishes, if any.
  using Lookup = std::function<std::optional<PublishedService>(const std::string& name)>;

  // Binds `listen` (port 0 picks one); throws std::runtime_error when it cannot.
  // `domain` is lowercase; `peer` must outlive this.
  HttpFrontDoor(const HostPort& listen, std::string domain, Lookup lookup, FrontDoorPeer& peer,
                std::shared_ptr<VisitorLimits> limits);
  ~HttpFrontDoor();
  HttpFrontDoor(const HttpFrontDoor&) = delete;
  HttpFrontDoor& operator=(const HttpFrontDoor&) = delete;

  const HostPort& local_address() const { return local_address_; }

  // Custom domains: the name of the peer that publishes the full host name `host`
  // (RendezvousCore::published_custom), and its service; for hosts outside DOMAIN.
  using CustomLookup = std::function<std::optional<std::pair<std::string, PublishedService>>(
      const std::string& host)>;
  void set_custom_lookup(CustomLookup lookup) { custom_lookup_ = std::move(lookup); }

 private:
  struct Visitor {
    HttpFrontDoor* door;
    uint64_t id;
    GObjectPtr<GSocketConnection> tcp;
    HostPort address;    // the visitor's, as accepted
    std::string remote;  // "ip:port" for logs
    std::string read;    // bytes read so far
    GSourcePtr read_source;
    GSourcePtr timeout_source;
  };

  static gboolean on_incoming(GSocketService*, GSocketConnection* tcp, GObject*, gpointer self);
  static gboolean on_readable(GSocket*, GIOCondition, gpointer visitor);
  static gboolean on_timeout(gpointer visitor);
  void accept(GSocketConnection* tcp);
  // Reads what is there; routes or answers once the head is complete. False when the
  // visitor is gone (answered, handed on or dropped).
  bool advance(Visitor& visitor);
  // Hands the visitor to home with its head's forwarded fields (with_forwarded_fields).
  void route(Visitor& visitor, const HttpHead& head);
  // Writes a short error page and closes.
  void answer(Visitor& visitor, int status, const char* title, const std::string& detail);
  void drop(uint64_t id);

  // A visitor must send its request head within this time (slow-header floods).
  static constexpr guint kHeadTimeoutMs = 10000;
  // Heads being read at once; further visitors are closed at accept.
  static constexpr size_t kMaxPendingVisitors = 1024;

  std::string domain_;
  Lookup lookup_;
  CustomLookup custom_lookup_;
  FrontDoorPeer& peer_;
  std::shared_ptr<VisitorLimits> limits_;
  HostPort local_address_;
  std::unordered_map<uint64_t, std::unique_ptr<Visitor>> visitors_;
  uint64_t next_id_ = 1;
  // Last: stopped first, so that no accept reaches a half-destroyed door.
  GObjectPtr<GSocketService> service_;
};

}  // namespace natfwd::relay::front_door
