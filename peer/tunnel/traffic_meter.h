// What may pass through one forwarded connection, and what did: the publishing front
// door hands one to each visitor connection it carries (its per-publisher and total
// byte rates and counters); a connection without one is neither limited nor counted.
// The meter lives as long as the connection's StreamBridge (or its wait for a tunnel),
// so its destructor is where the connection's place is given back.
#pragma once

#include <cstddef>

namespace natfwd {

class TrafficMeter {
 public:
  enum class Direction { kToStream, kToLocal };  // local TCP -> tunnel, tunnel -> local
  virtual ~TrafficMeter() = default;
  // Bytes that may go in `direction` now; 0: none until retry_after_ms() has passed.
  virtual size_t allowance(Direction direction) = 0;
  // After allowance() gave 0: when to ask again.
  virtual unsigned retry_after_ms(Direction direction) = 0;
  // `bytes` went in `direction` (they are taken from the allowance and counted).
  virtual void spent(Direction direction, size_t bytes) = 0;
};

}  // namespace natfwd
