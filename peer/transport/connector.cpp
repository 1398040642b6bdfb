#include "transport/connector.h"

#include <netinet/in.h>
#include <netinet/tcp.h>

#include <unistd.h>

#include <openssl/x509v3.h>

#include "log.h"

namespace natfwd {

ConnectAttempt::ConnectAttempt(const ConnectOptions& options, Done done)
    : options_(options), done_(std::move(done)), cancellable_(g_cancellable_new()) {
  GObjectPtr<GSocketClient> client(g_socket_client_new());
  g_socket_client_set_timeout(client.get(), options_.timeout_seconds);
  if (options_.http_proxy) {
    // GIO speaks HTTP CONNECT itself (its built-in "http" GProxy).
    std::string url = "http://" + options_.http_proxy->to_string();
    GObjectPtr<GProxyResolver> resolver(g_simple_proxy_resolver_new(url.c_str(), nullptr));
    g_socket_client_set_proxy_resolver(client.get(), resolver.get());
    g_socket_client_set_enable_proxy(client.get(), TRUE);
  } else {
    g_socket_client_set_enable_proxy(client.get(), FALSE);
  }
  g_socket_client_connect_to_host_async(client.get(), options_.server.host.c_str(),
                                        options_.server.port, cancellable_.get(), on_connected,
                                        this);
}

void ConnectAttempt::on_connected(GObject* client, GAsyncResult* result, gpointer data) {
  GError* raw_error = nullptr;
  GObjectPtr<GSocketConnection> connection(
      g_socket_client_connect_to_host_finish(G_SOCKET_CLIENT(client), result, &raw_error));
  GErrorPtr error(raw_error);
  // Cancelled: the attempt was destroyed and `data` is gone.
  if (error && g_error_matches(error.get(), G_IO_ERROR, G_IO_ERROR_CANCELLED)) return;
  auto* self = static_cast<ConnectAttempt*>(data);
  guard_callback("connect", [&] {
    if (!connection) {
      std::string message = error ? error->message : "connection failed";
      if (self->options_.http_proxy)
        message = "via proxy " + self->options_.http_proxy->to_string() + ": " + message;
      self->done_(nullptr, message);
      return;
    }
    self->connected(connection.get());
  });
}

void ConnectAttempt::connected(GSocketConnection* connection) {
  // A GSocketConnection closes its socket when it goes away; take our own copy of
  // the descriptor so that the stream owns its socket outright.
  GObjectPtr<GSocket> socket(g_socket_new_from_fd(
      dup(g_socket_get_fd(g_socket_connection_get_socket(connection))), nullptr));
  if (!socket) {
    done_(nullptr, "cannot take over the connected socket");
    return;
  }
  g_socket_set_option(socket.get(), IPPROTO_TCP, TCP_NODELAY, 1, nullptr);
  std::unique_ptr<ByteStream> stream;
  if (options_.tls) {
    static SslCtxPtr context = make_tls_client_context();
    stream = make_tls_stream(socket.get(), context.get(), false, options_.server.host,
                             options_.tls_check);
  } else {
    stream = make_plain_stream(socket.get());  // takes its own reference
  }
  done_(std::move(stream), "");
}

Parsed<HostPort> parse_proxy_url(const std::string& url) {
  std::string rest = url;
  const std::string scheme = "http://";
  if (rest.rfind(scheme, 0) == 0) rest = rest.substr(scheme.size());
  else if (rest.find("://") != std::string::npos)
    return "'" + url + "' is not an http:// proxy (only HTTP CONNECT proxies are supported)";
  while (!rest.empty() && rest.back() == '/') rest.pop_back();
  if (rest.find('@') != std::string::npos)
    return std::string("proxy credentials in the URL are not supported");
  auto parsed = parse_host_port(rest, 3128);
  if (auto* error = std::get_if<std::string>(&parsed)) return "'" + url + "': " + *error;
  return std::get<HostPort>(parsed);
}

std::optional<std::string> proxy_from_environment(const std::string& host) {
  const char* value = nullptr;
  for (const char* name : {"https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY"}) {
    value = g_getenv(name);
    if (value && *value) break;
    value = nullptr;
  }
  if (!value) return std::nullopt;
  const char* no_proxy = g_getenv("no_proxy");
  if (!no_proxy) no_proxy = g_getenv("NO_PROXY");
  if (no_proxy) {
    gchar** entries = g_strsplit(no_proxy, ",", -1);
    bool excluded = false;
    for (gchar** entry = entries; *entry && !excluded; ++entry) {
      std::string pattern = g_strstrip(*entry);
      if (pattern.empty()) continue;
      if (pattern == "*") excluded = true;
      if (pattern[0] == '.') pattern = pattern.substr(1);
      if (host == pattern ||
          (host.size() > pattern.size() &&
           host.compare(host.size() - pattern.size(), pattern.size(), pattern) == 0 &&
           host[host.size() - pattern.size() - 1] == '.'))
        excluded = true;
    }
    g_strfreev(entries);
    if (excluded) return std::nullopt;
  }
  return std::string(value);
}

namespace {

std::string verify_with_store(X509* leaf, X509_STORE* store, const std::string& host) {
  X509_STORE_CTX* context = X509_STORE_CTX_new();
  X509_STORE_CTX_init(context, store, leaf, nullptr);
  const bool chain_ok = X509_verify_cert(context) == 1;
  std::string error = chain_ok ? "" : X509_verify_cert_error_string(X509_STORE_CTX_get_error(context));
  X509_STORE_CTX_free(context);
  if (!chain_ok) return "certificate not trusted: " + error;
  const bool name_ok = g_hostname_is_ip_address(host.c_str())
                           ? X509_check_ip_asc(leaf, host.c_str(), 0) == 1
                           : X509_check_host(leaf, host.c_str(), host.size(), 0, nullptr) == 1;
  return name_ok ? "" : "certificate is not valid for " + host;
}

}  // namespace

std::string verify_with_system_cas(X509* leaf, const std::string& host) {
  static X509_STORE* store = [] {
    X509_STORE* s = X509_STORE_new();
    X509_STORE_set_default_paths(s);
    return s;
  }();
  return verify_with_store(leaf, store, host);
}

std::string verify_with_ca_file(X509* leaf, const std::string& ca_file, const std::string& host) {
  std::unique_ptr<X509_STORE, decltype(&X509_STORE_free)> store(X509_STORE_new(),
                                                                X509_STORE_free);
  if (X509_STORE_load_file(store.get(), ca_file.c_str()) != 1)
    return "cannot load CA certificates from " + ca_file;
  return verify_with_store(leaf, store.get(), host);
}

}  // namespace natfwd
