// HTTP basic authentication (RFC 7617) in front of a published web server at home
// (`peer --publish http:PORT,auth=FILE`, and `https:` after home's TLS end): the relay
// only carries bytes, so the home peer reads each request's head on the visitor's
// connection and lets it through to the target, unchanged, only with a user and
// password of the file.
//
// Every request of a keep-alive connection is checked, not only the first: a proxy
// between visitors and the relay may send several people's requests on one
// connection. To find where the next request starts, the gate follows each request's
// framing (RFC 9112 section 6: Content-Length, or the chunked coding); a request with
// both, or with a transfer coding other than chunked last, is refused (request
// smuggling). An authorised Upgrade (WebSocket) or CONNECT turns the rest of the
// connection into opaque bytes.
//
// A refused first request is answered here (401 with WWW-Authenticate, 400, 503) and
// the connection closed; a refused later request ends the target's input instead, so
// that the responses to the requests before it still arrive, and the visitor's next
// connection gets the 401. I/O free: visitor bytes in, actions out.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace natfwd {

// user and password of an Authorization field value "Basic BASE64(user:password)"
// (RFC 7617 section 2); nullopt for another scheme or malformed credentials.
std::optional<std::pair<std::string, std::string>> parse_basic_credentials(
    std::string_view value);

class HttpAuthGate {
 public:
  enum class Check { kAccepted, kRejected, kBusy };
  // Decides one request's credentials (nullopt: the request carried none).
  using Checker =
      std::function<Check(const std::optional<std::pair<std::string, std::string>>&)>;

  struct Action {
    enum class Kind {
      kForward,  // `bytes` go to the target
      kAnswer,   // `bytes` go to the visitor, then the connection ends; drop the target
      kStop,     // end the target's input; drop what the visitor sends from now on
    };
    Kind kind;
    std::string bytes;
  };

  HttpAuthGate(Checker checker, std::string realm);

  // Visitor bytes in, in order; the actions to take, in order. After a kAnswer or a
  // kStop every later call returns nothing (the bytes are dropped).
  std::vector<Action> receive(std::span<const std::byte> data);
  bool done() const { return state_ == State::kDone; }
  // Bytes received and neither forwarded nor dropped yet (a head being read).
  size_t held() const { return buffer_.size(); }
  size_t requests_forwarded() const { return forwarded_; }

  // Chunk-size lines and trailer lines longer than this end the connection.
  static constexpr size_t kMaxLineBytes = 4096;

 private:
  enum class State {
    kHead,         // reading a request head
    kBody,         // Content-Length bytes left in body_left_
    kChunkSize,    // a chunk-size line
    kChunkData,    // body_left_ bytes of a chunk, then its CRLF
    kChunkEnd,     // the CRLF after a chunk's data
    kTrailer,      // trailer lines up to the empty line
    kTunnel,       // after an authorised Upgrade or CONNECT: everything goes
    kDone,
  };
  void refuse(std::vector<Action>& out, int status, const char* title, const char* detail,
              bool challenge);
  // Starts a request whose head (head_length bytes of buffer_) passed.
  bool start_request(std::vector<Action>& out);
  // Takes the line ending in CRLF at the front of buffer_; nullopt while incomplete.
  std::optional<std::string> take_line(std::vector<Action>& out, bool& too_long);

  Checker checker_;
  std::string realm_;
  State state_ = State::kHead;
  std::string buffer_;  // visitor bytes not yet forwarded (a head, a chunk line)
  uint64_t body_left_ = 0;
  size_t forwarded_ = 0;
};

}  // namespace natfwd
