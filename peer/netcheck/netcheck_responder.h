// The serving peer's side of `peer netcheck NAME`: it runs the same checks as `peer
// netcheck` each time it registers at the relay, and answers NetcheckQuery (routed by
// the relay) with the facts, to callers whose key it authorises (see NatFacts in
// proto/rendezvous.proto for why only to them).
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "netcheck/netcheck_runner.h"
#include "rendezvous.pb.h"

namespace natfwd::netcheck {

class NetcheckResponder {
 public:
  using Send = std::function<void(const wire::Envelope&)>;
  // The caller's raw public key (NetcheckQuery.caller_key, vouched for by the relay,
  // which checked the caller's signature).
  using Authorized = std::function<bool(const std::string& caller_key)>;

  NetcheckResponder(Send send, Authorized authorized)
      : send_(std::move(send)), authorized_(std::move(authorized)) {}

  // The relay link is up: `options` say where the relay is; our TCP (or proxied)
  // link to it already works, so that is not checked again.
  void on_welcome(NetcheckOptions options, bool via_proxy);
  // Registered (again): measure afresh; answers use the previous facts meanwhile.
  void on_registered();
  void on_query(const wire::NetcheckQuery& query);
  // The reply to `query`, for a caller that sends it back the way the query came.
  wire::Envelope answer(const wire::NetcheckQuery& query) const;

  const std::optional<SideFacts>& facts() const { return facts_; }

 private:
  Send send_;
  Authorized authorized_;
  std::optional<NetcheckOptions> options_;
  bool via_proxy_ = false;
  std::unique_ptr<NetcheckRun> run_;
  std::optional<SideFacts> facts_;
};

}  // namespace natfwd::netcheck
