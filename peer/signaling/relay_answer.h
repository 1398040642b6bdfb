// What answered at a --relay address, judged from the first bytes it sent, for the
// one line a peer prints when its relay link fails before the relay ever spoke: a
// port that runs sshd, a web server or somebody else's TLS service is a wrong
// address, not a relay that is down, and retrying cannot fix it.
//
// FirstBytesStream sits between the connector's stream and the FramedConnection and
// keeps the first bytes the server sent twice: raw from the socket (peeked before TLS
// reads them, so an sshd banner is seen even when TLS chokes on it with "wrong
// version number") and as the stream delivered them (inside TLS: what a foreign
// HTTPS server answered to our Hello). foreign_protocol() is pure.
//
// A TLS client may read the server's answer inside the very call that sent its
// ClientHello, before any peek; RelayProbe then asks again without TLS: one Hello in
// plain frames, which a relay answers with a frame and anything else with its own
// protocol. `peer netcheck` asks the same before it diagnoses anything.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "byte_stream.h"
#include "identity.h"
#include "framed_connection.h"
#include "glib_ptr.h"
#include "transport/connector.h"

namespace natfwd {

// The first bytes a connection's server sent, as far as they were seen.
struct FirstBytes {
  std::string raw;      // from the socket, before TLS
  std::string decoded;  // as the stream delivered them (decrypted with TLS)
};

// "" when the bytes are (the start of) a natfwd frame, or none came; otherwise what
// the server looks like, for "it answered like ...": "SSH ('SSH-2.0-OpenSSH_9.2')",
// "HTTP ('HTTP/1.1 400 Bad Request')", "TLS", "'220 mail ESMTP'", or "binary data
// (17 03 03 ...)".
std::string foreign_protocol(std::string_view first_bytes);

// The bytes to judge of a link that failed before the relay spoke: over TLS, the raw
// bytes when they are no TLS record (TLS never got going), else what came inside.
std::string_view bytes_to_judge(const FirstBytes& seen, bool tls);

// A ByteStream that records the first bytes into `seen` (shared, so that they outlive
// the stream, which the FramedConnection drops when it fails) and otherwise passes
// everything to `inner`.
std::unique_ptr<ByteStream> record_first_bytes(std::unique_ptr<ByteStream> inner,
                                               std::shared_ptr<FirstBytes> seen);

// Asks one TCP address (through the proxy, if any; never TLS) whether a natfwd relay
// listens there. `done` is called once, never from the constructor, and may destroy
// the probe; destroying it earlier cancels it.
class RelayProbe {
 public:
  struct Answer {
    bool relay = false;   // a frame came back
    std::string foreign;  // what answered instead (foreign_protocol), if anything did
    std::string error;    // otherwise why there is no answer
  };
  using Done = std::function<void(const Answer&)>;
  RelayProbe(const ConnectOptions& options, unsigned timeout_seconds, Done done);
  ~RelayProbe();
  RelayProbe(const RelayProbe&) = delete;
  RelayProbe& operator=(const RelayProbe&) = delete;

 private:
  static gboolean on_timeout(gpointer self);
  void ask(std::unique_ptr<ByteStream> stream);
  void finish(const Answer& answer);

  Done done_;
  std::shared_ptr<FirstBytes> seen_;
  std::unique_ptr<ConnectAttempt> attempt_;
  std::unique_ptr<FramedConnection> link_;
  bool finished_ = false;
  SourceId timer_;
};

}  // namespace natfwd
