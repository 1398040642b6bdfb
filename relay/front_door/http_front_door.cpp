#include "front_door/http_front_door.h"


#include "front_door/front_door_peer.h"
#include "front_door/http_head.h"
#include "front_door/visitor_meter.h"
#include "tunnel/stream_opening.h"
#include "identity.h"
#include "log.h"
#include "net/socket_address.h"

namespace natfwd::relay::front_door {
namespace {

constexpr size_t kReadChunk = 4096;

// A short error page, then no more from us. A page of a few hundred bytes fits the
// empty send buffer of a connection we have not written to.
void send_page(GSocketConnection* tcp, int status, const char* title, const std::string& detail) {
  const std::string response = http_error_response(status, title, detail);
  GSocket* socket = g_socket_connection_get_socket(tcp);
  g_socket_send(socket, response.data(), response.size(), nullptr, nullptr);
  g_socket_shutdown(socket, FALSE, TRUE, nullptr);
}

HostPort remote_of(GSocketConnection* tcp) {
  GObjectPtr<GSocketAddress> address(g_socket_connection_get_remote_address(tcp, nullptr));
  if (!address || !G_IS_INET_SOCKET_ADDRESS(address.get())) return {"?", 0};
  return net::to_host_port(address.get());
}

}  // namespace

HttpFrontDoor::HttpFrontDoor(const HostPort& listen, std::string domain, Lookup lookup,
                             FrontDoorPeer& peer, std::shared_ptr<VisitorLimits> limits)
    : domain_(std::move(domain)),
      lookup_(std::move(lookup)),
      peer_(peer),
      limits_(std::move(limits)) {
  service_.reset(g_socket_service_new());
  local_address_ = net::listen_tcp_on(G_SOCKET_LISTENER(service_.get()), listen, "publish-http");
  g_signal_connect(service_.get(), "incoming", G_CALLBACK(on_incoming), this);
  g_socket_service_start(service_.get());
}

HttpFrontDoor::~HttpFrontDoor() {
  g_socket_service_stop(service_.get());
  g_socket_listener_close(G_SOCKET_LISTENER(service_.get()));
  g_signal_handlers_disconnect_by_data(service_.get(), this);
  visitors_.clear();
}

gboolean HttpFrontDoor::on_incoming(GSocketService*, GSocketConnection* tcp, GObject*,
                                    gpointer self) {
  guard_callback("publish http: accept", [&] { static_cast<HttpFrontDoor*>(self)->accept(tcp); });
  return TRUE;
}

void HttpFrontDoor::accept(GSocketConnection* tcp) {
  if (visitors_.size() >= kMaxPendingVisitors) {
    log::warn_limited("publish-http-full", "publish http: %zu visitors are still sending their "
                      "request heads; closing a new one", visitors_.size());
    g_io_stream_close(G_IO_STREAM(tcp), nullptr, nullptr);
    return;
  }
  const uint64_t id = next_id_++;
  auto visitor = std::make_unique<Visitor>();
  visitor->door = this;
  visitor->id = id;
  visitor->tcp.reset(G_SOCKET_CONNECTION(g_object_ref(tcp)));
  visitor->address = remote_of(tcp);
  visitor->remote = visitor->address.to_string();
  GSocket* socket = g_socket_connection_get_socket(tcp);
  g_socket_set_blocking(socket, FALSE);
  visitor->read_source.reset(g_socket_create_source(socket, G_IO_IN, nullptr));
  g_source_set_callback(visitor->read_source.get(), G_SOURCE_FUNC(on_readable), visitor.get(),
                        nullptr);
  g_source_attach(visitor->read_source.get(), nullptr);
  visitor->timeout_source.reset(g_timeout_source_new(kHeadTimeoutMs));
  g_source_set_callback(visitor->timeout_source.get(), on_timeout, visitor.get(), nullptr);
  g_source_attach(visitor->timeout_source.get(), nullptr);
  visitors_.emplace(id, std::move(visitor));
}

gboolean HttpFrontDoor::on_readable(GSocket*, GIOCondition, gpointer data) {
  auto* visitor = static_cast<Visitor*>(data);
  // advance() may destroy the visitor and this source with it, which GLib allows
  // from the source's own dispatch; the return value then does not matter.
  guard_callback("publish http: read", [visitor] { visitor->door->advance(*visitor); });
  return G_SOURCE_CONTINUE;
}

gboolean HttpFrontDoor::on_timeout(gpointer data) {
  auto* visitor = static_cast<Visitor*>(data);
  guard_callback("publish http: timeout", [visitor] {
    log::debug("publish http: %s sent no complete request head in %u ms; closing",
               visitor->remote.c_str(), kHeadTimeoutMs);
    visitor->door->answer(*visitor, 408, "Request Timeout",
                          "the request head did not arrive in time");
  });
  return G_SOURCE_CONTINUE;  // the source is gone with the visitor
}

bool HttpFrontDoor::advance(Visitor& visitor) {
  GSocket* socket = g_socket_connection_get_socket(visitor.tcp.get());
  char buffer[kReadChunk];
  GError* raw_error = nullptr;
  const gssize n = g_socket_receive(socket, buffer, sizeof buffer, nullptr, &raw_error);
  if (n < 0) {
    GErrorPtr error(raw_error);
    if (g_error_matches(error.get(), G_IO_ERROR, G_IO_ERROR_WOULD_BLOCK)) return true;
    drop(visitor.id);
    return false;
  }
  if (n == 0) {  // gone before a whole head
    drop(visitor.id);
    return false;
  }
  visitor.read.append(buffer, static_cast<size_t>(n));
  const HttpHead head = parse_http_head(std::as_bytes(std::span(visitor.read)));
  switch (head.status) {
    case HttpHead::Status::kNeedMore:
      return true;
    case HttpHead::Status::kInvalid:
      log::warn_limited("publish-http-bad", "publish http: bad request from %s: %s",
                        visitor.remote.c_str(), head.reason);
      answer(visitor, 400, "Bad Request", head.reason);
      return false;
    case HttpHead::Status::kComplete:
      route(visitor, head);
      return false;
  }
  return false;
}

void HttpFrontDoor::route(Visitor& visitor, const HttpHead& head) {
  // The head goes to home with the visitor's address added, whatever followed it as it
  // came.
  const std::string& host = head.host;
  std::optional<std::string> name = published_name(host, domain_);
  std::optional<PublishedService> service = name ? lookup_(*name) : std::nullopt;
  if (auto custom = name || !custom_lookup_ ? std::nullopt : custom_lookup_(host)) {
    name = custom->first;
    service = custom->second;
  }
  if (!service) {
    // Any visitor can ask for any name, as often as it likes: debug only.
    log::debug("publish http: %s asked for %s: not published here", visitor.remote.c_str(),
               host.c_str());
    answer(visitor, 404, "Not Found", host + " is not published at this relay");
    return;
  }
  VisitorAdmission admission =
      admit_visitor(limits_, *service, visitor.address, "publish http: " + *name);
  if (admission.verdict == VisitorAdmission::Verdict::kNotAllowed) {
    answer(visitor, 403, "Forbidden", host + " does not take visitors from your address");
    return;
  }
  if (admission.verdict == VisitorAdmission::Verdict::kOverLimit) {
    // RFC 6585 section 4: 429 for the publisher's own limits (this site is busy);
    // RFC 9110 section 15.6.4: 503 when the whole front door is.
    const bool own = admission.limit == VisitorLimits::Admission::kPublisherConnections ||
                     admission.limit == VisitorLimits::Admission::kPublisherRate;
    if (own)
      answer(visitor, 429, "Too Many Requests",
             host + " has too many visitors right now; try again in a minute");
    else
      answer(visitor, 503, "Service Unavailable",
             "this relay has too many visitors right now; try again in a minute");
    return;
  }
  if (service->tls_at_home) {
    // An https publish: the page is only at https://NAME.DOMAIN/, on the relay's TLS
    // port (443), so the visitor's port is not carried over.
    const std::string response = https_redirect_response(host, visitor.read);
    g_socket_send(g_socket_connection_get_socket(visitor.tcp.get()), response.data(),
                  response.size(), nullptr, nullptr);
    g_io_stream_close(G_IO_STREAM(visitor.tcp.get()), nullptr, nullptr);
    drop(visitor.id);
    return;
  }
  const PublicKey key = publisher_key(*service);
  log::debug("publish http: %s -> %s (%s)", visitor.remote.c_str(), name->c_str(),
             service->target.to_string().c_str());
  GObjectPtr<GSocketConnection> tcp(G_SOCKET_CONNECTION(g_object_ref(visitor.tcp.get())));
  std::string first_bytes =
      with_forwarded_fields(visitor.read, head.length, visitor.address.host);
  drop(visitor.id);  // our sources go; the connection stays open for the tunnel
  // Home could not take it (not reachable, its server down): a 502 page says so
  // instead of a bare reset. Nothing was sent to the visitor before this answer.
  std::shared_ptr<GSocketConnection> held(G_SOCKET_CONNECTION(g_object_ref(tcp.get())),
                                          g_object_unref);
  // Home's own words (addresses on its network) go to the log, not to the visitor.
  auto on_result = [held, host](int status, const std::string& detail) {
    if (status == wire::StreamOpenResult::OK || status == kStreamBroken) return;
    log::warn_limited("publish-http-502", "publish http: %s: %s", host.c_str(), detail.c_str());
    const char* why = status == kOpenFailedLocally ? "the home peer could not be reached"
                      : status == wire::StreamOpenResult::CONNECT_FAILED ||
                              status == wire::StreamOpenResult::RESOLVE_FAILED
                          ? "the web server at home did not answer"
                          : "the home peer did not take the connection";
    send_page(held.get(), 502, "Bad Gateway", host + ": " + why);
  };
  peer_.forward(*name, key, tcp.get(), service->target, std::move(first_bytes), on_result,
                std::move(admission.meter));
}

void HttpFrontDoor::answer(Visitor& visitor, int status, const char* title,
                           const std::string& detail) {
  send_page(visitor.tcp.get(), status, title, detail);
  g_io_stream_close(G_IO_STREAM(visitor.tcp.get()), nullptr, nullptr);
  drop(visitor.id);
}

void HttpFrontDoor::drop(uint64_t id) { visitors_.erase(id); }

}  // namespace natfwd::relay::front_door
