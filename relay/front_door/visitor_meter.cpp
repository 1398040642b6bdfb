#include "front_door/visitor_meter.h"

#include "log.h"

namespace natfwd::relay::front_door {
namespace {

VisitorLimits::Direction limits_direction(TrafficMeter::Direction direction) {
  return direction == TrafficMeter::Direction::kToStream ? VisitorLimits::Direction::kToHome
                                                         : VisitorLimits::Direction::kToVisitor;
}

VisitorLimits::TimePoint now() { return VisitorLimits::Clock::now(); }

}  // namespace

VisitorMeter::VisitorMeter(std::shared_ptr<VisitorLimits> limits, std::string publisher)
    : limits_(std::move(limits)), publisher_(std::move(publisher)) {}

VisitorMeter::~VisitorMeter() { limits_->release(publisher_); }

size_t VisitorMeter::allowance(Direction direction) {
  return limits_->allowance(publisher_, limits_direction(direction), now());
}

unsigned VisitorMeter::retry_after_ms(Direction direction) {
  return static_cast<unsigned>(
      limits_->retry_after(publisher_, limits_direction(direction), now()).count());
}

void VisitorMeter::spent(Direction direction, size_t bytes) {
  limits_->spent(publisher_, limits_direction(direction), bytes, now());
}

PublicKey publisher_key(const PublishedService& service) {
  PublicKey key{};
  public_key_from_bytes(std::span(reinterpret_cast<const uint8_t*>(service.public_key.data()),
                                  service.public_key.size()),
                        key);
  return key;
}

VisitorAdmission admit_visitor(const std::shared_ptr<VisitorLimits>& limits,
                               const PublishedService& service, const HostPort& visitor,
                               const std::string& door) {
  VisitorAdmission out;
  const std::string publisher = key_id(publisher_key(service));
  if (!service.admits(visitor)) {
    // The publisher's allow-from: nothing of this visitor reaches home. Any visitor
    // can knock: debug only.
    log::debug("%s: %s is not in the publish's allow-from", door.c_str(),
               visitor.to_string().c_str());
    limits->refused_by_allow_from(publisher);
    out.verdict = VisitorAdmission::Verdict::kNotAllowed;
    return out;
  }
  out.limit = limits->admit(publisher, VisitorLimits::Clock::now());
  if (out.limit != VisitorLimits::Admission::kAccepted) {
    log::warn_limited("publish-limit", "%s: visitor %s refused: %s (publisher %s)", door.c_str(),
                      visitor.to_string().c_str(), admission_text(out.limit),
                      publisher.c_str());
    out.verdict = VisitorAdmission::Verdict::kOverLimit;
    return out;
  }
  out.meter = std::make_shared<VisitorMeter>(limits, publisher);
  return out;
}

}  // namespace natfwd::relay::front_door
