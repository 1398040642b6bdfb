#include "tunnel/stream_opening.h"

namespace natfwd {
namespace {

StreamDecision refusal(wire::StreamStatus status, std::string detail) {
  return StreamDecision{static_cast<int>(status), std::move(detail)};
}

}  // namespace

StreamOpening StreamOpening::connecting(const HostPort& target) {
  StreamOpening opening(Role::kConnecting);
  opening.target_ = target;
  opening.request_ = wire::encode_stream_open(target);
  return opening;
}

StreamOpening StreamOpening::pairing(const std::string& secret) {
  StreamOpening opening(Role::kConnecting);
  opening.request_ = wire::encode_pair_request(secret);
  return opening;
}

StreamOpening StreamOpening::punching(const wire::PunchOffer& offer) {
  StreamOpening opening(Role::kConnecting);
  opening.request_ = wire::encode_punch_request(offer);
  return opening;
}

StreamOpening StreamOpening::serving(TargetPolicy policy, PairHandler pair, PunchHandler punch) {
  StreamOpening opening(Role::kServing);
  opening.policy_ = std::move(policy);
  opening.pair_ = std::move(pair);
  opening.punch_ = std::move(punch);
  return opening;
}

StreamOpening::Outcome StreamOpening::receive(std::span<const std::byte> data, bool fin) {
  buffer_.insert(buffer_.end(), data.begin(), data.end());
  fin_ = fin_ || fin;
  if (decided_) return Outcome::kWaiting;
  const Outcome outcome = role_ == Role::kServing ? decide_serving() : decide_connecting();
  decided_ = outcome != Outcome::kWaiting;
  if (decided_)
    buffer_.erase(buffer_.begin(), buffer_.begin() + static_cast<ptrdiff_t>(header_size_));
  return outcome;
}

StreamOpening::Outcome StreamOpening::decide_serving() {
  const auto header = wire::decode_stream_open(buffer_);
  if (header.status == wire::DecodeStatus::kNeedMore) {
    if (!fin_) return Outcome::kWaiting;
    decision_ = refusal(wire::StreamStatus::kBadRequest, "stream ended early");
    return Outcome::kRefuse;
  }
  if (header.status == wire::DecodeStatus::kInvalid) {
    bad_header_ = true;
    decision_ = refusal(wire::StreamStatus::kBadRequest, std::string(header.error));
    return Outcome::kRefuse;
  }
  header_size_ = header.consumed;
  if (header.request.is_pairing()) {
    decision_ = pair_ ? pair_(header.request.pair_secret)
                      : refusal(wire::StreamStatus::kNotAuthorized, "pairing not possible");
    return Outcome::kRefuse;
  }
  if (header.request.punch) {
    decision_ = punch_ ? punch_(*header.request.punch)
                       : refusal(wire::StreamStatus::kNotServed, "no punching here");
    return Outcome::kRefuse;
  }
  target_ = header.request.target;
  decision_ = policy_ ? policy_(target_) : refusal(wire::StreamStatus::kNotServed, "no policy");
  return decision_.status == static_cast<int>(wire::StreamStatus::kOk) ? Outcome::kConnect
                                                                        : Outcome::kRefuse;
}

StreamOpening::Outcome StreamOpening::decide_connecting() {
  const auto answer = wire::decode_stream_open_result(buffer_);
  if (answer.status == wire::DecodeStatus::kNeedMore) {
    if (!fin_) return Outcome::kWaiting;
    decision_ = StreamDecision{kOpenFailedLocally, "the stream ended before the serving peer answered"};
    return Outcome::kBroken;
  }
  if (answer.status == wire::DecodeStatus::kInvalid) {
    decision_ = StreamDecision{kOpenFailedLocally, "no valid answer from the serving peer"};
    return Outcome::kBroken;
  }
  header_size_ = answer.consumed;
  decision_ = StreamDecision{answer.result, answer.detail, answer.punch};
  return Outcome::kAnswered;
}

std::vector<std::byte> StreamOpening::take_rest() {
  std::vector<std::byte> rest;
  rest.swap(buffer_);
  return rest;
}

StreamDecision StreamOpening::connect_failed(bool unresolved, const std::string& error) {
  // A name that does not resolve is not a refused connection: the connecting side
  // (a SOCKS client: "host unreachable") is told which.
  return refusal(unresolved ? wire::StreamStatus::kResolveFailed
                            : wire::StreamStatus::kConnectFailed,
                 error);
}

std::string open_result_text(int status, const std::string& detail) {
  std::string what;
  switch (status) {
    case wire::StreamOpenResult::NOT_SERVED: what = "not served there"; break;
    case wire::StreamOpenResult::NOT_AUTHORIZED: what = "not authorised"; break;
    case wire::StreamOpenResult::RESOLVE_FAILED: what = "the serving peer cannot resolve it"; break;
    case wire::StreamOpenResult::CONNECT_FAILED: what = "the serving peer cannot connect to it"; break;
    case kOpenFailedLocally: return detail;
    case kStreamBroken: what = "the connection broke"; break;
    default: what = "refused"; break;
  }
  return detail.empty() ? what : what + " (" + detail + ")";
}

}  // namespace natfwd
