#include "transport/turn_bridge.h"

#include <netinet/in.h>
#include <netinet/tcp.h>

#include <array>
#include <stdexcept>
#include <vector>

#include "log.h"
#include "socket_buffers.h"

namespace natfwd {
namespace {

constexpr size_t kChunk = 64 * 1024;

}  // namespace

// One libnice connection and its upstream twin.
class TurnBridge::Link {
 public:
  Link(TurnBridge& bridge, GSocket* local)
      : bridge_(bridge), local_(make_plain_stream(local)) {
    attempt_ = std::make_unique<ConnectAttempt>(
        bridge.upstream(), [this](std::unique_ptr<ByteStream> stream, const std::string& error) {
          upstream_connected(std::move(stream), error);
        });
    update_watches();
  }

 private:
  // Bytes moving one way: read from `from` into `buffer`, write to `to`.
  struct Direction {
    std::vector<std::byte> buffer;
    size_t offset = 0;
    bool eof = false;        // `from` ended; FIN passed on once the buffer is empty
    bool shut = false;
    GIOCondition read_wait = G_IO_IN;
    GIOCondition write_wait = G_IO_OUT;
    bool want_read = true;
    bool want_write = false;
  };

  void upstream_connected(std::unique_ptr<ByteStream> stream, const std::string& error) {
    attempt_.reset();
    if (!stream) {
      log::warn("%s: cannot connect: %s", bridge_.label().c_str(), error.c_str());
      done();
      return;
    }
    upstream_ = std::move(stream);
    // The tunnel's datagrams ride this one TCP connection (socket_buffers.h).
    if (GSocket* socket = upstream_->socket()) prefer_bbr(g_socket_get_fd(socket));
    pump();
  }

  static gboolean on_event(GSocket*, GIOCondition, gpointer self) {
    auto* link = static_cast<Link*>(self);
    return guard_callback("turn bridge", G_SOURCE_CONTINUE, [link] {
      link->pump();
      return G_SOURCE_CONTINUE;
    });
  }

  void pump() {
    if (finished_) return;
    if (upstream_) {
      if (!move(*local_, *upstream_, to_upstream_) || !move(*upstream_, *local_, to_local_)) {
        done();
        return;
      }
      if (to_upstream_.shut && to_local_.shut) {
        done();
        return;
      }
    }
    update_watches();
  }

  // Returns false on an error that ends the link.
  bool move(ByteStream& from, ByteStream& to, Direction& d) {
    d.want_read = d.want_write = false;
    for (int round = 0; round < 64; ++round) {
      if (d.offset < d.buffer.size()) {
        size_t n = 0;
        std::string error;
        switch (to.write(std::span(d.buffer).subspan(d.offset), n, error)) {
          case ByteStream::Io::kOk:
            d.offset += n;
            continue;
          case ByteStream::Io::kWouldBlock:
            d.want_write = true;
            d.write_wait = to.wait_condition();
            return true;
          default:
            log::debug("%s: write: %s", bridge_.label().c_str(), error.c_str());
            return false;
        }
      }
      d.buffer.clear();
      d.offset = 0;
      if (d.eof) {
        if (!d.shut) to.shutdown_write();
        d.shut = true;
        return true;
      }
      d.buffer.resize(kChunk);
      size_t n = 0;
      std::string error;
      switch (from.read(d.buffer, n, error)) {
        case ByteStream::Io::kOk:
          d.buffer.resize(n);
          continue;
        case ByteStream::Io::kWouldBlock:
          d.buffer.clear();
          d.want_read = true;
          d.read_wait = from.wait_condition();
          return true;
        case ByteStream::Io::kEof:
          d.buffer.clear();
          d.eof = true;
          continue;
        case ByteStream::Io::kError:
          log::debug("%s: read: %s", bridge_.label().c_str(), error.c_str());
          return false;
      }
    }
    // Yielded after a burst: come back through the main loop.
    d.want_read = true;
    d.read_wait = G_IO_OUT;  // writable sockets wake us at once
    return true;
  }

  void update_watches() {
    GIOCondition local = static_cast<GIOCondition>(0);
    GIOCondition upstream = static_cast<GIOCondition>(0);
    if (!upstream_) {
      // Not connected yet: only notice libnice hanging up.
      local = G_IO_HUP;
    } else {
      if (to_upstream_.want_read) local = static_cast<GIOCondition>(local | to_upstream_.read_wait);
      if (to_upstream_.want_write) upstream = static_cast<GIOCondition>(upstream | to_upstream_.write_wait);
      if (to_local_.want_read) upstream = static_cast<GIOCondition>(upstream | to_local_.read_wait);
      if (to_local_.want_write) local = static_cast<GIOCondition>(local | to_local_.write_wait);
    }
    watch(local_source_, local_condition_, local_ ? local_->socket() : nullptr, local);
    watch(upstream_source_, upstream_condition_, upstream_ ? upstream_->socket() : nullptr,
          upstream);
  }

  void watch(GSourcePtr& source, GIOCondition& current, GSocket* socket, GIOCondition wanted) {
    if (source && current == wanted) return;
    source.reset();
    current = wanted;
    if (!socket || wanted == 0) return;
    source.reset(g_socket_create_source(socket, wanted, nullptr));
    keep_polled_while_dispatched(source.get());  // every relayed TCP byte passes here
    g_source_set_callback(source.get(), G_SOURCE_FUNC(on_event), this, nullptr);
    g_source_attach(source.get(), nullptr);
  }

  void done() {
    if (finished_) return;
    finished_ = true;
    local_source_.reset();
    upstream_source_.reset();
    bridge_.link_done(this);  // destroys us from idle
  }

  TurnBridge& bridge_;
  std::unique_ptr<ByteStream> local_;
  std::unique_ptr<ByteStream> upstream_;
  std::unique_ptr<ConnectAttempt> attempt_;
  Direction to_upstream_, to_local_;
  // After the streams: the watches go first.
  GSourcePtr local_source_;
  GSourcePtr upstream_source_;
  GIOCondition local_condition_ = static_cast<GIOCondition>(0);
  GIOCondition upstream_condition_ = static_cast<GIOCondition>(0);
  bool finished_ = false;
};

TurnBridge::TurnBridge(ConnectOptions upstream, std::string label)
    : upstream_(std::move(upstream)), label_(std::move(label)) {
  GError* raw_error = nullptr;
  listener_.reset(g_socket_new(G_SOCKET_FAMILY_IPV4, G_SOCKET_TYPE_STREAM,
                               G_SOCKET_PROTOCOL_TCP, &raw_error));
  GObjectPtr<GInetAddress> loopback(g_inet_address_new_loopback(G_SOCKET_FAMILY_IPV4));
  GObjectPtr<GSocketAddress> address(g_inet_socket_address_new(loopback.get(), 0));
  const bool ok = listener_ && g_socket_bind(listener_.get(), address.get(), FALSE, &raw_error) &&
                  g_socket_listen(listener_.get(), &raw_error);
  GErrorPtr error(raw_error);
  if (!ok) {
    throw std::runtime_error("cannot open the " + label_ + " bridge: " +
                             (error ? error->message : "unknown error"));
  }
  g_socket_set_blocking(listener_.get(), FALSE);
  GObjectPtr<GSocketAddress> local(g_socket_get_local_address(listener_.get(), nullptr));
  port_ = g_inet_socket_address_get_port(G_INET_SOCKET_ADDRESS(local.get()));
  accept_source_.reset(g_socket_create_source(listener_.get(), G_IO_IN, nullptr));
  g_source_set_callback(accept_source_.get(), G_SOURCE_FUNC(on_accept), this, nullptr);
  g_source_attach(accept_source_.get(), nullptr);
}

TurnBridge::~TurnBridge() {
  links_.clear();
  accept_source_.reset();
  g_socket_close(listener_.get(), nullptr);
}

gboolean TurnBridge::on_accept(GSocket* socket, GIOCondition, gpointer self) {
  auto* bridge = static_cast<TurnBridge*>(self);
  return guard_callback("turn bridge: accept", G_SOURCE_CONTINUE, [&] {
    while (GObjectPtr<GSocket> client{g_socket_accept(socket, nullptr, nullptr)}) {
      g_socket_set_option(client.get(), IPPROTO_TCP, TCP_NODELAY, 1, nullptr);
      bridge->links_.insert(std::make_unique<Link>(*bridge, client.get()));
    }
    return G_SOURCE_CONTINUE;
  });
}

void TurnBridge::link_done(Link* link) {
  for (auto it = links_.begin(); it != links_.end(); ++it) {
    if (it->get() != link) continue;
    std::unique_ptr<Link> doomed(const_cast<std::unique_ptr<Link>&>(*it).release());
    links_.erase(it);
    delete_later(std::move(doomed));
    return;
  }
}

}  // namespace natfwd
