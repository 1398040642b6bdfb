#include "acme/acme_http.h"

#include <charconv>
#include <stdexcept>

#include "log.h"

namespace natfwd::acme {
namespace {

// RFC 8555 section 6.1: an ACME client says who it is.
constexpr const char* kUserAgent = "natfwd-acme";
// RFC 8555 section 6.2: every POST body is a JWS.
constexpr const char* kJoseJson = "application/jose+json";

std::string header(SoupMessage* message, const char* name) {
  const char* value = soup_message_headers_get_one(soup_message_get_response_headers(message), name);
  return value ? value : "";
}

// Retry-After in seconds (RFC 9110 section 10.2.3); an HTTP date counts as absent.
std::optional<int64_t> retry_after(const std::string& text) {
  int64_t seconds = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), seconds);
  if (text.empty() || ec != std::errc() || end != text.data() + text.size() || seconds < 0)
    return std::nullopt;
  return seconds;
}

}  // namespace

AcmeHttp::AcmeHttp(const std::string& ca_file, const std::string& proxy_url) {
  session_.reset(soup_session_new_with_options("timeout", kRequestTimeoutSeconds,
                                               "idle-timeout", kRequestTimeoutSeconds,
                                               "user-agent", kUserAgent, nullptr));
  if (!proxy_url.empty()) {
    // Every scheme through the one proxy: https requests become CONNECT tunnels.
    GObjectPtr<GProxyResolver> proxy(g_simple_proxy_resolver_new(proxy_url.c_str(), nullptr));
    soup_session_set_proxy_resolver(session_.get(), proxy.get());
  }
  if (!ca_file.empty()) {
    GError* error = nullptr;
    GObjectPtr<GTlsDatabase> roots(g_tls_file_database_new(ca_file.c_str(), &error));
    if (!roots) {
      GErrorPtr owned(error);
      throw std::runtime_error("--acme-ca-file " + ca_file + ": " + owned->message);
    }
    soup_session_set_tls_database(session_.get(), roots.get());
  }
}

AcmeHttp::~AcmeHttp() = default;

void AcmeHttp::send(const AcmeOrder::Request& request, Done done) {
  idle_ = SourceId();
  cancellable_.reset();  // cancels the one out: its callback touches nothing of ours
  message_.reset(soup_message_new(request.method.c_str(), request.url.c_str()));
  done_ = std::move(done);
  if (!message_) {
    // Not a URL libsoup can send to: answered, from the main loop, as a CA that did
    // not answer.
    log::warn("acme: cannot send to '%s': not an http(s) URL", request.url.c_str());
    idle_ = SourceId(g_idle_add(&AcmeHttp::on_unsendable, this));
    return;
  }
  if (request.method == "POST") {
    GBytes* body = g_bytes_new(request.body.data(), request.body.size());
    soup_message_set_request_body_from_bytes(message_.get(), kJoseJson, body);
    g_bytes_unref(body);
  }
  cancellable_.reset(g_cancellable_new());
  soup_session_send_and_read_async(session_.get(), message_.get(), G_PRIORITY_DEFAULT,
                                   cancellable_.get(), &AcmeHttp::on_sent, this);
}

gboolean AcmeHttp::on_unsendable(gpointer data) {
  auto* self = static_cast<AcmeHttp*>(data);
  self->idle_.release();
  guard_callback("acme http", [self] { self->finish(nullptr, nullptr, nullptr); });
  return G_SOURCE_REMOVE;
}

void AcmeHttp::on_sent(GObject* source, GAsyncResult* result, gpointer data) {
  GError* error = nullptr;
  GBytes* body = soup_session_send_and_read_finish(SOUP_SESSION(source), result, &error);
  GErrorPtr owned_error(error);
  std::unique_ptr<GBytes, void (*)(GBytes*)> owned_body(body, g_bytes_unref);
  // Cancelled: the AcmeHttp that sent it may be gone (GCancellablePtr's contract).
  if (error && g_error_matches(error, G_IO_ERROR, G_IO_ERROR_CANCELLED)) return;
  auto* self = static_cast<AcmeHttp*>(data);
  guard_callback("acme http", [&] {
    self->finish(self->message_.get(), body, error);
  });
}

void AcmeHttp::finish(SoupMessage* message, GBytes* body, GError* error) {
  AcmeOrder::Response response;
  if (message && !error) {
    response.status = static_cast<int>(soup_message_get_status(message));
    if (body) {
      gsize size = 0;
      const auto* data = static_cast<const char*>(g_bytes_get_data(body, &size));
      response.body.assign(data ? data : "", size);
    }
    response.replay_nonce = header(message, "Replay-Nonce");
    response.retry_after_seconds = retry_after(header(message, "Retry-After"));
    const std::string location = header(message, "Location");
    if (!location.empty()) {
      // RFC 9110 section 10.2.2: Location may be relative to the request's URL.
      GCharPtr uri(soup_message_get_uri(message)
                       ? g_uri_to_string(soup_message_get_uri(message))
                       : nullptr);
      GCharPtr resolved(uri ? g_uri_resolve_relative(uri.get(), location.c_str(),
                                                     G_URI_FLAGS_NONE, nullptr)
                            : nullptr);
      response.location = resolved ? resolved.get() : location;
    }
  } else {
    // The order reports this with its "no answer" line.
    response.body = error ? error->message : "not an http(s) URL";
  }
  cancellable_.reset();
  message_.reset();
  Done done = std::move(done_);
  done_ = nullptr;
  if (done) done(response);  // may send the next request
}

}  // namespace natfwd::acme
