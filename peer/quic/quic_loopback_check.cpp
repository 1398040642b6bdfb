// Manual real-time check of quic::Driver (not a test, not installed): two Drivers, each
// in its own thread and GLib main loop (like two peer processes), joined by a pair of
// connected UDP sockets on 127.0.0.1, move N MB (every byte checked) and print MB/s.
// The server closes the connection when all data arrived, which ends both loops. Exercises what the fake-clock unit
// test cannot: GLib timers and pacing, socket buffers, would-block and resume.
//
//   quic_loopback_check [megabytes=200] [streams=1]
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <thread>
#include <vector>

#include <glib-unix.h>
#include <glib.h>

#include "log.h"
#include "quic_driver.h"

using namespace natfwd;
using namespace natfwd::quic;

namespace {

constexpr int kSocketBuffer = 8 << 20;

// Stream byte at offset o is o % 251. kPattern + (o % 251) is that sequence from o on,
// for up to kChunk bytes, so sending and checking are a memcpy/memcmp.
constexpr size_t kChunk = 64 * 1024;
const std::vector<std::byte>& pattern_block() {
  static const std::vector<std::byte> block = [] {
    std::vector<std::byte> b(kChunk + 251);
    for (size_t i = 0; i < b.size(); ++i) b[i] = static_cast<std::byte>(i % 251);
    return b;
  }();
  return block;
}
const std::byte* pattern_at(uint64_t offset) { return pattern_block().data() + offset % 251; }

int udp_socket() {
  int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) throw std::runtime_error(std::string("socket: ") + strerror(errno));
  // Default UDP buffers (~208 KiB) drop bursts (NOTES-transport.md): raise them, with the
  // FORCE variants when allowed.
  int size = kSocketBuffer;
  if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof size) != 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
  if (setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &size, sizeof size) != 0)
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof size);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0)
    throw std::runtime_error(std::string("bind: ") + strerror(errno));
  return fd;
}

void connect_to(int fd, int other) {
  sockaddr_in addr{};
  socklen_t length = sizeof addr;
  getsockname(other, reinterpret_cast<sockaddr*>(&addr), &length);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), length) != 0)
    throw std::runtime_error(std::string("connect: ") + strerror(errno));
}

// One side: a socket, a Driver, and the application on top.
class Side : public Connection::Observer {
 public:
  Side(const char* name, const Config& config, int fd, GMainLoop* loop)
      : name_(name), fd_(fd), loop_(loop),
        driver_(config, *this, [this](std::span<const std::byte> d) { return send(d); }) {
    read_watch_ = watch(G_IO_IN, &Side::on_readable);
  }

  void start_sending(uint64_t total, int streams) {
    to_send_ = total;
    stream_count_ = streams;
  }

  // Observer
  void on_handshake_complete(const PublicKey&) override {
    handshake_at_ = Driver::now();
    if (to_send_ == 0) return;
    for (int i = 0; i < stream_count_; ++i) {
      auto id = driver_.connection().open_stream();
      if (!id) break;
      senders_.push_back({*id, 0, false});
    }
    start_ = Driver::now();
    pump();
  }
  void on_remote_stream_opened(int64_t id) override { received_[id] = 0; }
  void on_stream_data(int64_t id, std::span<const std::byte> data, bool fin) override {
    if (!first_byte_at_) first_byte_at_ = Driver::now();
    uint64_t& offset = received_[id];
    for (size_t done = 0; done < data.size(); done += kChunk) {
      size_t n = std::min(kChunk, data.size() - done);
      if (std::memcmp(data.data() + done, pattern_at(offset + done), n) != 0) ++corrupt_;
    }
    offset += data.size();
    total_received_ += data.size();
    driver_.connection().stream_consumed(id, data.size());
    driver_.flush();
    if (fin && ++fins_ == expected_fins_) {
      end_ = Driver::now();
      driver_.close(0, "transfer complete");  // inside a callback: sent after it
    }
  }
  void on_stream_reset(int64_t id, uint64_t code) override {
    std::fprintf(stderr, "%s: stream %lld reset (%llu)\n", name_, (long long)id, (unsigned long long)code);
  }
  void on_stream_send_space(int64_t) override { pump(); }
  void on_stream_closed(int64_t) override {}
  void on_connection_closed(const std::string& reason) override {
    std::fprintf(stderr, "%s: connection closed: %s\n", name_, reason.c_str());
    g_main_loop_quit(loop_);
  }

  Driver& driver() { return driver_; }
  uint64_t total_received_ = 0, corrupt_ = 0;
  int expected_fins_ = 1, fins_ = 0;
  Timestamp start_ = 0, end_ = 0, handshake_at_ = 0;
  std::optional<Timestamp> first_byte_at_;
  uint64_t datagrams_sent_ = 0, would_block_ = 0;

 private:
  struct StreamSender {
    int64_t id;
    uint64_t offset;
    bool done;
  };

  void pump() {
    const uint64_t per_stream = to_send_ / senders_.size();
    for (StreamSender& s : senders_) {
      while (!s.done && s.offset < per_stream) {
        size_t n = static_cast<size_t>(std::min<uint64_t>(kChunk, per_stream - s.offset));
        size_t taken = driver_.connection().stream_write(s.id, std::span(pattern_at(s.offset), n));
        s.offset += taken;
        if (taken < n) break;
      }
      if (!s.done && s.offset == per_stream) {
        driver_.connection().stream_shutdown_write(s.id);
        s.done = true;
      }
    }
    driver_.flush();
  }

  bool send(std::span<const std::byte> datagram) {
    ssize_t n = ::send(fd_, datagram.data(), datagram.size(), 0);
    if (n >= 0) {
      ++datagrams_sent_;
      return true;
    }
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOBUFS) {
      ++would_block_;
      if (!write_watch_) write_watch_ = watch(G_IO_OUT, &Side::on_writable);
      return false;
    }
    return true;  // e.g. ECONNREFUSED: a lost datagram, QUIC recovers
  }

  static gboolean on_readable(gint, GIOCondition, gpointer data) {
    auto* self = static_cast<Side*>(data);
    std::byte buffer[65536];
    // Drain a batch; the Driver schedules one write pass after it.
    for (int i = 0; i < 256; ++i) {
      ssize_t n = recv(self->fd_, buffer, sizeof buffer, 0);
      if (n < 0) break;
      self->driver_.receive(std::span(buffer, static_cast<size_t>(n)));
    }
    return G_SOURCE_CONTINUE;
  }
  static gboolean on_writable(gint, GIOCondition, gpointer data) {
    auto* self = static_cast<Side*>(data);
    self->write_watch_.reset();  // destroying a source from its own dispatch is allowed
    self->driver_.resume_write();
    return G_SOURCE_REMOVE;
  }

  const char* name_;
  int fd_;
  GMainLoop* loop_;
  Driver driver_;
  // A watch on our socket in this thread's main context (the Driver uses the same).
  GSourcePtr watch(GIOCondition condition, GUnixFDSourceFunc callback) {
    GSourcePtr source(g_unix_fd_source_new(fd_, condition));
    // GLib calls fd sources with (fd, condition, data); g_source_set_callback wants the
    // generic type (the documented pattern, hence the double cast).
    g_source_set_callback(source.get(),
                          reinterpret_cast<GSourceFunc>(reinterpret_cast<void (*)()>(callback)),
                          this, nullptr);
    g_source_attach(source.get(), g_main_context_get_thread_default());
    return source;
  }

  GSourcePtr read_watch_;
  GSourcePtr write_watch_;
  uint64_t to_send_ = 0;
  int stream_count_ = 1;
  std::vector<StreamSender> senders_;
  std::map<int64_t, uint64_t> received_;
};

}  // namespace

int main(int argc, char** argv) {
  log::init("quic_loopback_check", log::Level::kInfo);
  const uint64_t megabytes = argc > 1 ? std::strtoull(argv[1], nullptr, 10) : 200;
  const int streams = argc > 2 ? std::atoi(argv[2]) : 1;
  const char* cc_name = g_getenv("QUIC_CC");
  // The tunnel's own default unless QUIC_CC=bbr|bbr2|cubic says otherwise.
  ngtcp2_cc_algo cc = Config{}.cc;
  if (cc_name && std::strcmp(cc_name, "bbr") == 0) cc = NGTCP2_CC_ALGO_BBR;
  if (cc_name && std::strcmp(cc_name, "bbr2") == 0) cc = NGTCP2_CC_ALGO_BBR2;
  if (cc_name && std::strcmp(cc_name, "cubic") == 0) cc = NGTCP2_CC_ALGO_CUBIC;
  try {
    Identity client_id = Identity::generate(), server_id = Identity::generate();
    int client_fd = udp_socket(), server_fd = udp_socket();
    connect_to(client_fd, server_fd);
    connect_to(server_fd, client_fd);
    Config client_config, server_config;
    client_config.identity = &client_id;
    client_config.verify_remote_key = [&](const PublicKey& k) { return k == server_id.public_key(); };
    server_config.is_server = true;
    server_config.identity = &server_id;
    server_config.verify_remote_key = [&](const PublicKey& k) { return k == client_id.public_key(); };
    client_config.cc = server_config.cc = cc;

    const Timestamp t0 = Driver::now();
    uint64_t received = 0, corrupt = 0;
    Timestamp end = 0, first_byte = 0;
    std::thread server_thread([&] {
      GMainContext* context = g_main_context_new();
      g_main_context_push_thread_default(context);
      GMainLoop* loop = g_main_loop_new(context, FALSE);
      {
        Side server("server", server_config, server_fd, loop);
        server.expected_fins_ = streams;
        g_main_loop_run(loop);
        received = server.total_received_;
        corrupt = server.corrupt_;
        end = server.end_;
        first_byte = server.first_byte_at_.value_or(0);
      }
      g_main_loop_unref(loop);
      g_main_context_pop_thread_default(context);
      g_main_context_unref(context);
    });

    GMainLoop* loop = g_main_loop_new(nullptr, FALSE);
    Timestamp start = 0, handshake = 0, rtt = 0;
    uint64_t sent = 0, would_block = 0;
    {
      Side client("client", client_config, client_fd, loop);
      client.start_sending(megabytes * 1000 * 1000, streams);
      g_main_loop_run(loop);
      start = client.start_;
      handshake = client.handshake_at_;
      rtt = client.driver().connection().stats().smoothed_rtt;
      sent = client.datagrams_sent_;
      would_block = client.would_block_;
    }
    server_thread.join();
    g_main_loop_unref(loop);
    close(client_fd);
    close(server_fd);

    const double seconds = (end - start) / 1e9;
    std::printf("handshake %.2f ms, first byte %.2f ms after start\n", (handshake - t0) / 1e6,
                first_byte ? (first_byte - t0) / 1e6 : -1.0);
    std::printf("%llu MB on %d stream(s) in %.2f s: %.1f MB/s, %llu corrupt chunks, rtt %.3f ms, "
                "%llu datagrams sent, %llu would-block\n",
                (unsigned long long)(received / 1000000), streams, seconds, received / 1e6 / seconds,
                (unsigned long long)corrupt, rtt / 1e6, (unsigned long long)sent,
                (unsigned long long)would_block);
    return corrupt == 0 && received == megabytes * 1000 * 1000 / streams * streams ? 0 : 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "quic_loopback_check: %s\n", e.what());
    return 2;
  }
}
