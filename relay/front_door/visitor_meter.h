// One visitor connection's share of the front door's limits (visitor_limits.h), as the
// tunnel's StreamBridge asks for it (TrafficMeter): made when the visitor is admitted,
// its place given back when the connection's bridge (or its wait) ends. Also the
// admission step the three doors share: allow-from, then the limits, with one
// rate-limited log line for a refusal.
#pragma once

#include <memory>
#include <string>

#include "front_door/visitor_limits.h"
#include "identity.h"
#include "rendezvous/rendezvous_core.h"
#include "tunnel/traffic_meter.h"

namespace natfwd::relay::front_door {

class VisitorMeter final : public TrafficMeter {
 public:
  // Holds a place admitted for `publisher` in `limits`.
  VisitorMeter(std::shared_ptr<VisitorLimits> limits, std::string publisher);
  ~VisitorMeter() override;
  VisitorMeter(const VisitorMeter&) = delete;
  VisitorMeter& operator=(const VisitorMeter&) = delete;

  size_t allowance(Direction direction) override;
  unsigned retry_after_ms(Direction direction) override;
  void spent(Direction direction, size_t bytes) override;

 private:
  std::shared_ptr<VisitorLimits> limits_;
  std::string publisher_;
};

// The key a published service's peer proved (the front door pins it).
PublicKey publisher_key(const PublishedService& service);

// What the front door does with one visitor of `service`.
struct VisitorAdmission {
  enum class Verdict { kAdmitted, kNotAllowed, kOverLimit };
  Verdict verdict = Verdict::kAdmitted;
  // kOverLimit: which limit (a publisher's own, or the relay's total).
  VisitorLimits::Admission limit = VisitorLimits::Admission::kAccepted;
  std::shared_ptr<TrafficMeter> meter;  // kAdmitted: hand it to the connection
};
// allow-from first (nothing of a visitor outside it counts against the limits), then
// the limits. `door` names the door and the name for the log ("publish http: NAME").
VisitorAdmission admit_visitor(const std::shared_ptr<VisitorLimits>& limits,
                               const PublishedService& service, const HostPort& visitor,
                               const std::string& door);

}  // namespace natfwd::relay::front_door
