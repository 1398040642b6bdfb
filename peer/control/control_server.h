// The running peer's control socket, STATE_DIR/control: a Unix stream socket that only
// the owner can use (mode 0600 inside the 0700 state dir). `peer status` connects,
// writes one request line and reads one answer until the server closes.
//
//   request:  "natfwd-control 1 status json\n"  (or "... status text\n")
//   answer:   the JSON object (status_json) plus "\n", or the text (status_text);
//             "error: <why>\n" for a request this version does not understand.
//
//   request:  "natfwd-control 1 connect NAME HOST:PORT\n"  (`peer nc` beside a daemon)
//   answer:   "ok\n" once NAME connected HOST:PORT, then the socket carries the
//             stream's bytes both ways (EOF half-closes, as a -L connection);
//             "no-tunnel: <why>\n" when this peer has no tunnel to NAME (the caller
//             sets one up itself), "error: <why>\n" when NAME refused or it failed.
//   request:  "natfwd-control 1 connect NAME HOST:PORT status\n"  (a second -D or -L)
//   answer:   the same, but a failure is "error N: <why>\n" with N the stream-open
//             status (stream_opening.h), which a SOCKS client gets as its reply.
//
//   request:  "natfwd-control 1 carries NAME\n"  (a second -D or -L, at its start)
//   answer:   "yes\n" when this peer carries connections to NAME (`connect`), else
//             "no-tunnel: <why>\n". NAME may be NAME@KEYID, as for `connect`.
//
// A socket file left behind by a dead peer is replaced. One whose peer still answers
// is left alone: the second peer runs without a control socket and says so.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <glib.h>

#include "glib_ptr.h"

namespace natfwd {

inline constexpr const char* kControlProtocol = "natfwd-control";
inline constexpr int kControlVersion = 1;
inline constexpr const char* kControlSocketName = "control";
// A running peer answers `connect` once the serving peer answered the stream open,
// which may include setting up its tunnel first (relay, ICE, QUIC: seconds).
inline constexpr int kControlConnectAnswerSeconds = 60;

class ControlServer {
 public:
  // Answers one request line (without the newline).
  using Handler = std::function<std::string(const std::string& request)>;
  // Offered each request first: true when it took the client's connection `fd` (it
  // owns it from then on) to carry a stream, false to have `Handler` answer.
  using Carrier = std::function<bool(int fd, const std::string& request)>;

  // Binds STATE_DIR/control. On failure returns nullptr and sets `error` to a sentence.
  static std::unique_ptr<ControlServer> open(const std::string& state_dir, Handler handler,
                                             Carrier carrier, std::string& error);
  ~ControlServer();
  ControlServer(const ControlServer&) = delete;
  ControlServer& operator=(const ControlServer&) = delete;

  const std::string& path() const { return path_; }

 private:
  struct Client {
    int fd = -1;
    SourceId source;
    std::string request;
  };
  ControlServer(std::string path, int fd, Handler handler, Carrier carrier);
  static gboolean on_accept(gint fd, GIOCondition, gpointer self);
  static gboolean on_client_readable(gint fd, GIOCondition, gpointer self);
  gboolean client_readable(int fd);
  void answer_and_close(Client& client);
  void drop(int fd);
  // Out of the list without closing `fd`; false when it was not there.
  bool forget(int fd);

  std::string path_;
  int listen_fd_;
  SourceId listen_source_;
  Handler handler_;
  Carrier carrier_;
  std::vector<std::unique_ptr<Client>> clients_;
};

// Splits "natfwd-control 1 status json": true and the command words when the
// protocol name and version match; false and `error` otherwise.
bool parse_control_request(const std::string& line, std::vector<std::string>& words,
                           std::string& error);

// `peer nc` beside a running peer: connects to its control socket and sends the
// request; -1 (with `error`) when no peer answers there.
// `connect_errno`, when given, gets the connect(2) errno on failure (0 otherwise).
int connect_control(const std::string& state_dir, const std::string& command, std::string& error,
                    int* connect_errno = nullptr);

// `peer status`: asks the peer running with `state_dir`. Returns the answer, or
// nullopt with `error` set (no peer running, no answer).
std::optional<std::string> query_control(const std::string& state_dir, const std::string& command,
                                         std::string& error, int* connect_errno = nullptr);

}  // namespace natfwd
