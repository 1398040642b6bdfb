#include "server/sni_peek.h"

#include <sys/socket.h>

#include <cerrno>
#include <vector>

#include "front_door/client_hello.h"
#include "log.h"

namespace natfwd::relay {

SniPeek::SniPeek(Route route, Fallback fallback, Closed closed)
    : route_(std::move(route)), fallback_(std::move(fallback)), closed_(std::move(closed)) {}

SniPeek::~SniPeek() = default;

void SniPeek::adopt(GSocket* socket) {
  if (peeking_.size() >= kMaxPeeking) {
    log::warn_limited("tls-peeking", "tls: %zu connections have not sent a ClientHello yet; "
                      "closing a new one", peeking_.size());
    g_socket_close(socket, nullptr);
    if (closed_) closed_(socket);
    return;
  }
  auto peeking = std::make_unique<Peeking>();
  peeking->peek = this;
  peeking->id = next_id_++;
  peeking->socket.reset(G_SOCKET(g_object_ref(socket)));
  g_socket_set_blocking(socket, FALSE);
  peeking->timeout_source.reset(g_timeout_source_new(kPeekTimeoutMs));
  g_source_set_callback(peeking->timeout_source.get(), on_timeout, peeking.get(), nullptr);
  g_source_attach(peeking->timeout_source.get(), nullptr);
  Peeking& ref = *peeking;
  peeking_.emplace(ref.id, std::move(peeking));
  look(ref);
}

gboolean SniPeek::on_readable(GSocket*, GIOCondition, gpointer data) {
  auto* peeking = static_cast<Peeking*>(data);
  guard_callback("tls: sni peek", [peeking] { peeking->peek->look(*peeking); });  // may free it
  return G_SOURCE_CONTINUE;
}

gboolean SniPeek::on_retry(gpointer data) {
  auto* peeking = static_cast<Peeking*>(data);
  guard_callback("tls: sni peek", [peeking] { peeking->peek->look(*peeking); });
  return G_SOURCE_CONTINUE;  // look() replaced or freed the source
}

gboolean SniPeek::on_timeout(gpointer data) {
  auto* peeking = static_cast<Peeking*>(data);
  log::debug("tls: no ClientHello within %u s, closing", kPeekTimeoutMs / 1000);
  peeking->peek->finish(peeking->id, "", /*close=*/true);
  return G_SOURCE_CONTINUE;  // gone with `peeking`
}

void SniPeek::look(Peeking& peeking) {
  std::vector<std::byte> buffer(front_door::kMaxFirstRecordBytes);
  const ssize_t n = recv(g_socket_get_fd(peeking.socket.get()), buffer.data(), buffer.size(),
                         MSG_PEEK | MSG_DONTWAIT);
  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
    peeking.retry_source.reset();
    if (!peeking.io_source) {
      peeking.io_source.reset(g_socket_create_source(peeking.socket.get(), G_IO_IN, nullptr));
      g_source_set_callback(peeking.io_source.get(), G_SOURCE_FUNC(on_readable), &peeking,
                            nullptr);
      g_source_attach(peeking.io_source.get(), nullptr);
    }
    return;
  }
  if (n <= 0) return finish(peeking.id, "", /*close=*/true);
  buffer.resize(static_cast<size_t>(n));
  const front_door::ClientHelloSni hello = front_door::parse_client_hello_sni(buffer);
  if (hello.status == front_door::ClientHelloSni::Status::kNeedMore) {
    peeking.io_source.reset();
    peeking.retry_source.reset(g_timeout_source_new(kRetryMs));
    g_source_set_callback(peeking.retry_source.get(), on_retry, &peeking, nullptr);
    g_source_attach(peeking.retry_source.get(), nullptr);
    return;
  }
  finish(peeking.id, hello.server_name, /*close=*/false);
}

void SniPeek::finish(uint64_t id, const std::string& server_name, bool close) {
  auto it = peeking_.find(id);
  if (it == peeking_.end()) return;
  GObjectPtr<GSocket> socket = std::move(it->second->socket);
  peeking_.erase(it);  // its sources go with it
  if (close) {
    g_socket_close(socket.get(), nullptr);
    if (closed_) closed_(socket.get());
  } else if (server_name.empty() || !route_(socket.get(), server_name)) {
    fallback_(socket.get());
  }
}

}  // namespace natfwd::relay
