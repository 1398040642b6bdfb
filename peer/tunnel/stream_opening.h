// The negotiation at the start of each tunnel stream, without I/O: stream bytes in,
// a decision out.
//
// The connecting side writes a StreamOpen header (proto/stream_open.h) and waits for
// the serving side's StreamOpenResult before it delivers anything to its local client;
// the serving side reads StreamOpen, asks its policy (the --serve allowlist,
// authorisation) or its pairing handler, and either connects the target or answers
// with a refusal and ends the stream. Bytes after the header are stream data: they
// stay in rest() for the caller.
#pragma once

#include <cstddef>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "address.h"
#include "stream_open.h"

namespace natfwd {

// The serving side's answer to a stream's header: StreamStatus::kOk to go ahead, else a
// StreamOpenResult status and why.
struct StreamDecision {
  int status = static_cast<int>(wire::StreamStatus::kOk);
  std::string detail;
  // A punch offer's answer: the serving side's own offer.
  std::optional<wire::PunchOffer> punch = std::nullopt;
};
// May the serving side connect this target (the --serve allowlist, authorisation)?
using TargetPolicy = std::function<StreamDecision(const HostPort& target)>;
// A pairing request (StreamOpen.pair_secret) from the other side.
using PairHandler = std::function<StreamDecision(const std::string& secret)>;
// A hard-NAT punch offer (StreamOpen.punch) from the other side; an OK answer carries
// this side's offer.
using PunchHandler = std::function<StreamDecision(const wire::PunchOffer& offer)>;
// Connecting side: the serving peer's answer to a stream open (a StreamOpenResult
// status, OK = 0), or kOpenFailedLocally when the stream ended before any answer (the
// tunnel failed, the relay link was down). Called once. With such a handler the local
// connection is closed, not reset, on failure: the handler has told its client why
// (a SOCKS reply, `peer nc`'s one line).
// After an OK, the handler is called once more with kStreamBroken if the stream then
// ends in a reset rather than a clean close both ways (`peer nc` exits non-zero).
inline constexpr int kOpenFailedLocally = -1;
inline constexpr int kStreamBroken = -2;
using OpenResultHandler = std::function<void(int status, const std::string& detail)>;
// What an OpenResultHandler's status means, for a person ("not served there (...)").
std::string open_result_text(int status, const std::string& detail);

class StreamOpening {
 public:
  enum class Outcome {
    kWaiting,   // the header is not whole yet
    kConnect,   // serving: the policy allows target(); connect it, then answer
    kRefuse,    // serving: answer decision() and end the stream (refusals, pairing)
    kAnswered,  // connecting: the serving side answered decision()
    kBroken,    // connecting: no valid answer (garbage, or the stream ended first)
  };

  // Connecting side: the stream carries a connection to `target`.
  static StreamOpening connecting(const HostPort& target);
  // Connecting side: the stream carries a pairing request.
  static StreamOpening pairing(const std::string& secret);
  // Connecting side: the stream carries a punch offer.
  static StreamOpening punching(const wire::PunchOffer& offer);
  // Serving side: the header decides; without a pair (punch) handler pairing
  // (punching) is refused.
  static StreamOpening serving(TargetPolicy policy, PairHandler pair, PunchHandler punch = {});

  // Connecting side: the header to write first on the stream.
  const std::vector<std::byte>& request() const { return request_; }

  // Stream bytes as they arrive; `fin`: the other side's direction ended. Returns
  // kWaiting until the header is whole, then the outcome once; later calls (and calls
  // after the outcome) only collect rest().
  Outcome receive(std::span<const std::byte> data, bool fin);
  bool decided() const { return decided_; }

  // Bytes of the header: flow-control credit the caller returns to QUIC at once.
  size_t header_size() const { return header_size_; }
  // Stream data received after the header.
  std::vector<std::byte> take_rest();
  // kConnect: what to connect.
  const HostPort& target() const { return target_; }
  // kRefuse, kAnswered: the status and detail; kBroken: detail says why.
  const StreamDecision& decision() const { return decision_; }
  // kRefuse of a malformed header: log it (network garbage, rate limited).
  bool bad_header() const { return bad_header_; }
  // Serving, after kConnect: the target could not be reached; the answer to send.
  static StreamDecision connect_failed(bool unresolved, const std::string& error);

 private:
  enum class Role { kConnecting, kServing };
  explicit StreamOpening(Role role) : role_(role) {}
  Outcome decide_serving();
  Outcome decide_connecting();

  Role role_;
  std::vector<std::byte> request_;
  TargetPolicy policy_;
  PairHandler pair_;
  PunchHandler punch_;
  std::vector<std::byte> buffer_;  // stream bytes until the header is whole, then rest
  bool fin_ = false;
  bool decided_ = false;
  bool bad_header_ = false;
  size_t header_size_ = 0;
  HostPort target_;
  StreamDecision decision_;
};

}  // namespace natfwd
