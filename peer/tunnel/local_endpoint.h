// The local end of one tunnel stream, as the tunnel core sees it: a TCP connection in
// production (StreamBridge, stream_bridge.h), bytes in memory in the unit tests.
//
// Flow control runs through it both ways: the endpoint stops reading while
// Stream::send() says the stream is full, and reports bytes as delivered() only once
// the local side took them, which is when QUIC gives the credit back to the sender.
#pragma once

#include <cstddef>
#include <functional>
#include <memory>
#include <span>
#include <string>

#include "address.h"

namespace natfwd {

class LocalEndpoint {
 public:
  // The tunnel stream behind the endpoint. Calls into it may end the stream (and then
  // close() the endpoint) before they return.
  class Stream {
   public:
    virtual ~Stream() = default;
    // Bytes read from the local side, to the other side. False: the stream holds a
    // window's worth now; read no more until on_send_space().
    virtual bool send(std::span<const std::byte> data) = 0;
    // The local side stopped sending (EOF): FIN after the bytes sent so far.
    virtual void send_end() = 0;
    // `bytes` of what receive() gave are now with the local side.
    virtual void delivered(size_t bytes) = 0;
    // After receive_end(): everything is delivered and the local write side is shut.
    virtual void write_shut() = 0;
    // The local side failed (e.g. a TCP reset): reset the stream.
    virtual void failed(const std::string& why) = 0;
  };

  virtual ~LocalEndpoint() = default;
  // The stream is ready for data: read from the local side from now on. Must not call
  // back into `stream` before it returns.
  virtual void start(Stream& stream) = 0;
  // Bytes from the other side, to deliver in order (copy them; report delivered()).
  virtual void receive(std::span<const std::byte> data) = 0;
  // The other side's FIN: once all is delivered, shut the local write side and report
  // write_shut().
  virtual void receive_end() = 0;
  // send() accepts bytes again.
  virtual void on_send_space() = 0;
  // The stream is over; no more calls follow. `reset`: let the local side see a failure
  // (a TCP RST), not a clean end.
  virtual void close(bool reset) = 0;
};

// Serving side: reaches the targets a stream asks for.
class LocalConnector {
 public:
  // A connect in progress; destroying it cancels it (its `done` is then never called).
  class Attempt {
   public:
    virtual ~Attempt() = default;
  };
  struct Result {
    std::unique_ptr<LocalEndpoint> endpoint;  // null when the connect failed
    bool unresolved = false;                  // the name did not resolve
    std::string error;
  };
  using Done = std::function<void(Result result)>;

  virtual ~LocalConnector() = default;
  // Starts connecting `target`; `done` runs once, later (never inside this call).
  virtual std::unique_ptr<Attempt> connect(const HostPort& target, Done done) = 0;
};

}  // namespace natfwd
