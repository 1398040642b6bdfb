#include "control/control_server.h"

#include <fcntl.h>
#include <glib-unix.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "log.h"

namespace natfwd {
namespace {

// A request is one short line; anything longer is not a client of ours.
constexpr size_t kMaxRequest = 256;
constexpr int kClientTimeoutMs = 5000;
constexpr size_t kMaxClients = 16;

bool make_address(const std::string& path, sockaddr_un& address, std::string& error) {
  address = {};
  address.sun_family = AF_UNIX;
  if (path.size() >= sizeof address.sun_path) {
    error = "the control socket path " + path + " is too long for a Unix socket (" +
            std::to_string(sizeof address.sun_path - 1) + " bytes at most)";
    return false;
  }
  memcpy(address.sun_path, path.c_str(), path.size() + 1);
  return true;
}

// A stream socket connected to `path`, or -1 with errno set.
int connect_to(const std::string& path) {
  sockaddr_un address;
  std::string ignored;
  if (!make_address(path, address, ignored)) {
    errno = ENAMETOOLONG;
    return -1;
  }
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  if (connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0) {
    const int saved = errno;
    close(fd);
    errno = saved;
    return -1;
  }
  return fd;
}

// Writes all of `data` to a blocking fd with a send timeout; false on failure.
bool write_all(int fd, const std::string& data) {
  size_t done = 0;
  while (done < data.size()) {
    ssize_t n = send(fd, data.data() + done, data.size() - done, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    done += static_cast<size_t>(n);
  }
  return true;
}

void set_timeouts(int fd, int milliseconds) {
  timeval tv{milliseconds / 1000, (milliseconds % 1000) * 1000};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

}  // namespace

std::unique_ptr<ControlServer> ControlServer::open(const std::string& state_dir, Handler handler,
                                                   Carrier carrier, std::string& error) {
  const std::string path = state_dir + "/" + kControlSocketName;
  sockaddr_un address;
  if (!make_address(path, address, error)) return nullptr;
  struct stat st;
  if (lstat(path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) {
      error = path + " exists and is not a socket; not touching it";
      return nullptr;
    }
    int live = connect_to(path);
    if (live >= 0) {
      close(live);
      error = "another peer is running with the state dir " + state_dir + " (" + path +
              " answers); this one runs without a control socket, and `peer status` reaches "
              "the other one. Give each peer its own --state-dir";
      return nullptr;
    }
    unlink(path.c_str());  // left behind by a peer that died
  }
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) {
    error = std::string("control socket: ") + strerror(errno);
    return nullptr;
  }
  // Owner only from the start (the state dir is 0700 too): status shows who talks to
  // whom, and future commands may change things.
  const mode_t old_mask = umask(077);
  const int bound = bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address);
  const int bind_errno = errno;
  umask(old_mask);
  if (bound != 0 || listen(fd, 8) != 0) {
    error = "cannot listen on " + path + ": " + strerror(bound != 0 ? bind_errno : errno);
    close(fd);
    return nullptr;
  }
  chmod(path.c_str(), 0600);
  return std::unique_ptr<ControlServer>(
      new ControlServer(path, fd, std::move(handler), std::move(carrier)));
}

ControlServer::ControlServer(std::string path, int fd, Handler handler, Carrier carrier)
    : path_(std::move(path)),
      listen_fd_(fd),
      handler_(std::move(handler)),
      carrier_(std::move(carrier)) {
  listen_source_.reset(g_unix_fd_add(listen_fd_, G_IO_IN, on_accept, this));
}

ControlServer::~ControlServer() {
  for (auto& client : clients_) {
    client->source.reset();
    close(client->fd);
  }
  listen_source_.reset();
  close(listen_fd_);
  unlink(path_.c_str());
}

gboolean ControlServer::on_accept(gint fd, GIOCondition, gpointer self) {
  auto* server = static_cast<ControlServer*>(self);
  return guard_callback("control: accept", G_SOURCE_CONTINUE, [&] {
    for (;;) {
      int client_fd = accept4(fd, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
      if (client_fd < 0) break;
      if (server->clients_.size() >= kMaxClients) {
        close(client_fd);
        continue;
      }
      auto client = std::make_unique<Client>();
      client->fd = client_fd;
      client->source.reset(g_unix_fd_add(client_fd, G_IO_IN, on_client_readable, server));
      server->clients_.push_back(std::move(client));
    }
    return G_SOURCE_CONTINUE;
  });
}

gboolean ControlServer::on_client_readable(gint fd, GIOCondition, gpointer self) {
  auto* server = static_cast<ControlServer*>(self);
  const gboolean keep = guard_callback("control", G_SOURCE_REMOVE,
                                       [&] { return server->client_readable(fd); });
  if (keep == G_SOURCE_REMOVE) server->drop(fd);  // no-op when already dropped
  return keep;
}

gboolean ControlServer::client_readable(int fd) {
  ControlServer* server = this;
  Client* client = nullptr;
  for (auto& candidate : server->clients_)
    if (candidate->fd == fd) client = candidate.get();
  if (!client) return G_SOURCE_REMOVE;
  char buffer[kMaxRequest];
  ssize_t n = recv(fd, buffer, sizeof buffer, 0);
  if (n < 0 && (errno == EAGAIN || errno == EINTR)) return G_SOURCE_CONTINUE;
  if (n <= 0) {
    server->drop(fd);
    return G_SOURCE_REMOVE;
  }
  client->request.append(buffer, static_cast<size_t>(n));
  const auto newline = client->request.find('\n');
  if (newline == std::string::npos) {
    if (client->request.size() < kMaxRequest) return G_SOURCE_CONTINUE;
    client->request = "(too long)";
  } else {
    client->request.resize(newline);
  }
  server->answer_and_close(*client);
  return G_SOURCE_REMOVE;
}

void ControlServer::answer_and_close(Client& client) {
  if (carrier_ && carrier_(client.fd, client.request)) {
    forget(client.fd);  // the carrier owns the descriptor now
    return;
  }
  const std::string answer = handler_(client.request);
  // The answer is a few KB at most: send it in one blocking go with a timeout, so a
  // client that does not read cannot hold the peer for long.
  const int flags = fcntl(client.fd, F_GETFL);
  fcntl(client.fd, F_SETFL, flags & ~O_NONBLOCK);
  set_timeouts(client.fd, kClientTimeoutMs);
  if (!write_all(client.fd, answer)) log::debug("control: a client left before the answer");
  drop(client.fd);
}

void ControlServer::drop(int fd) {
  if (forget(fd)) close(fd);
}

bool ControlServer::forget(int fd) {
  for (auto it = clients_.begin(); it != clients_.end(); ++it) {
    if ((*it)->fd != fd) continue;
    (*it)->source.reset();
    clients_.erase(it);
    return true;
  }
  return false;
}

bool parse_control_request(const std::string& line, std::vector<std::string>& words,
                           std::string& error) {
  words.clear();
  std::string word;
  for (char c : line + " ") {
    if (c == ' ') {
      if (!word.empty()) words.push_back(word);
      word.clear();
    } else {
      word += c;
    }
  }
  if (words.size() < 2 || words[0] != kControlProtocol) {
    error = "not a natfwd-control request";
    return false;
  }
  if (words[1] != std::to_string(kControlVersion)) {
    error = "control protocol version " + words[1] + " is not supported (this peer speaks " +
            std::to_string(kControlVersion) + ")";
    return false;
  }
  words.erase(words.begin(), words.begin() + 2);
  return true;
}

int connect_control(const std::string& state_dir, const std::string& command, std::string& error,
                    int* connect_errno) {
  const std::string path = state_dir + "/" + kControlSocketName;
  int fd = connect_to(path);
  if (connect_errno) *connect_errno = fd < 0 ? errno : 0;
  if (fd < 0) {
    error = "no running peer uses the state dir " + state_dir + " (nothing answers on " + path +
            ": " + strerror(errno) + ")";
    return -1;
  }
  set_timeouts(fd, kClientTimeoutMs);
  std::string request = std::string(kControlProtocol) + " " + std::to_string(kControlVersion) +
                        " " + command + "\n";
  if (!write_all(fd, request)) {
    error = "the peer on " + path + " did not take the request";
    close(fd);
    return -1;
  }
  return fd;
}

std::optional<std::string> query_control(const std::string& state_dir, const std::string& command,
                                         std::string& error, int* connect_errno) {
  const std::string path = state_dir + "/" + kControlSocketName;
  const int fd = connect_control(state_dir, command, error, connect_errno);
  if (fd < 0) return std::nullopt;
  std::string answer;
  char buffer[4096];
  for (;;) {
    ssize_t n = recv(fd, buffer, sizeof buffer, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      error = "no answer from the peer on " + path + ": " + strerror(errno);
      close(fd);
      return std::nullopt;
    }
    if (n == 0) break;
    answer.append(buffer, static_cast<size_t>(n));
  }
  close(fd);
  if (answer.empty()) {
    error = "the peer on " + path + " closed without an answer";
    return std::nullopt;
  }
  return answer;
}

}  // namespace natfwd
