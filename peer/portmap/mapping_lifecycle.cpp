#include "portmap/mapping_lifecycle.h"

#include <algorithm>
#include <stdexcept>

namespace natfwd::portmap {

std::string_view to_string(MapProtocol protocol) {
  switch (protocol) {
    case MapProtocol::kPcp: return "pcp";
    case MapProtocol::kNatPmp: return "nat-pmp";
    case MapProtocol::kUpnp: return "upnp";
  }
  return "?";
}

MappingLifecycle::MappingLifecycle(std::vector<MapProtocol> order) : order_(std::move(order)) {
  if (order_.empty()) throw std::invalid_argument("MappingLifecycle: no protocol to try");
}

MappingLifecycle::Step MappingLifecycle::start() {
  in_flight_ = true;
  return {Step::Kind::kRequest, protocol()};
}

MappingLifecycle::Step MappingLifecycle::on_answer(const MapAnswer& answer, int64_t now_us) {
  in_flight_ = false;
  if (state_ == State::kReleased) {
    // Released while the request ran: what it made must go again.
    if (answer.ok) return {Step::Kind::kDelete, protocol()};
    return {};
  }
  if (answer.ok && answer.lifetime_seconds > 0) {
    state_ = State::kMapped;
    renewing_ = false;
    external_ip_ = answer.external_ip;
    external_port_ = answer.external_port;
    const int64_t lifetime_us = int64_t{answer.lifetime_seconds} * 1'000'000;
    expires_at_us_ = now_us + lifetime_us;
    renew_at_us_ = now_us + lifetime_us / 2;
    return {};
  }
  if (renewing_) {
    // Keep what we have until it expires; try again meanwhile.
    renewing_ = false;
    renew_at_us_ = std::min(now_us + kRenewRetryUs, expires_at_us_);
    return {};
  }
  if (!errors_.empty()) errors_ += "; ";
  errors_ += std::string(to_string(protocol())) + ": " +
             (answer.ok ? "a mapping with lifetime 0" : answer.error);
  if (index_ + 1 < order_.size()) {
    ++index_;
    in_flight_ = true;
    return {Step::Kind::kRequest, protocol()};
  }
  state_ = State::kFailed;
  return {};
}

MappingLifecycle::Step MappingLifecycle::on_timer(int64_t now_us) {
  if (state_ != State::kMapped || in_flight_) return {};
  if (now_us >= expires_at_us_) {
    state_ = State::kLost;
    return {};
  }
  if (now_us < renew_at_us_) return {};
  renewing_ = true;
  in_flight_ = true;
  return {Step::Kind::kRequest, protocol()};
}

MappingLifecycle::Step MappingLifecycle::release() {
  const State before = state_;
  state_ = State::kReleased;
  if (before == State::kMapped) return {Step::Kind::kDelete, protocol()};
  return {};  // a request in flight is deleted when it answers (on_answer)
}

std::optional<int64_t> MappingLifecycle::next_deadline() const {
  if (state_ != State::kMapped || in_flight_) return std::nullopt;
  return std::min(renew_at_us_, expires_at_us_);
}

}  // namespace natfwd::portmap
