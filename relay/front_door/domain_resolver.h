// The DNS look-ups of custom-domain claims (domain_claims.h), with GLib's resolver
// (GResolver: the system's resolv.conf, CNAMEs followed): for each domain of a
// CheckDomainsAction, its addresses (A/AAAA) and the TXT record at _natfwd.DOMAIN, both
// at once; when all have answered, or kCheckTimeoutSeconds have passed, the verdicts
// go to `done`. Nothing blocks the main loop: GResolver looks up on its own threads.
//
// Bounded, since any allowed publisher can ask: kMaxRunningChecks checks at once (each
// at most a few domains, two look-ups each), kMaxQueuedChecks waiting; beyond that a
// check is answered at once with "retry" verdicts.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <vector>

#include <gio/gio.h>

#include "front_door/domain_claims.h"
#include "glib_ptr.h"

namespace natfwd::relay::front_door {

class DomainResolver {
 public:
  // Verdicts for the action's connection and check, one per domain, in its order.
  using Done = std::function<void(ConnectionId connection, uint64_t check,
                                  const std::vector<DomainVerdict>& verdicts)>;

  DomainResolver(DomainClaimCheck judge, Done done);
  // Look-ups in flight are cancelled; `done` is not called after.
  ~DomainResolver();
  DomainResolver(const DomainResolver&) = delete;
  DomainResolver& operator=(const DomainResolver&) = delete;

  void check(const CheckDomainsAction& action);

 private:
  struct Job;
  // What a GResolver callback gets: the job (gone when it was finished or dropped).
  struct Ticket {
    std::weak_ptr<Job> job;
    size_t domain;
    bool txt;
  };

  static constexpr size_t kMaxRunningChecks = 2;
  static constexpr size_t kMaxQueuedChecks = 32;
  // A DNS answer takes milliseconds; a resolver that retries its servers gives up
  // after about 10 s (resolv.conf(5): timeout 5, attempts 2).
  static constexpr guint kCheckTimeoutSeconds = 10;

  static void on_addresses_trampoline(GObject* source, GAsyncResult* result, gpointer ticket);
  static void on_txt_trampoline(GObject* source, GAsyncResult* result, gpointer ticket);
  // One look-up's answer goes to its job, unless the job finished or went meanwhile.
  static void deliver(const Ticket& ticket, DnsAnswer answer);
  static gboolean on_timeout_trampoline(gpointer job);

  void start(const CheckDomainsAction& action);
  void answered(Job& job);
  // Verdicts out, the job gone, the next queued check started.
  void finish(uint64_t job_id);

  DomainClaimCheck judge_;
  Done done_;
  GObjectPtr<GResolver> resolver_;
  std::deque<CheckDomainsAction> queued_;
  uint64_t next_job_id_ = 1;
  std::map<uint64_t, std::shared_ptr<Job>> running_;  // destroyed first: cancels look-ups
};

}  // namespace natfwd::relay::front_door
