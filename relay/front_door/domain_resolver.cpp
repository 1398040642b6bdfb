#include "front_door/domain_resolver.h"

#include <optional>
#include <string>

#include "log.h"

namespace natfwd::relay::front_door {

struct DomainResolver::Job {
  DomainResolver* owner;
  uint64_t id;
  CheckDomainsAction action;
  std::vector<std::optional<DnsAnswer>> addresses;  // by domain; empty until answered
  std::vector<std::optional<DnsAnswer>> txt;
  size_t waiting = 0;  // look-ups not yet answered
  GCancellablePtr cancellable{g_cancellable_new()};
  SourceId timeout;
};

namespace {

// A look-up's error as the claim check takes it: no such record decides, anything
// else (timeout, server failure, cancelled) does not.
DnsAnswer failed_answer(GError* error) {
  DnsAnswer answer;
  if (!error) return answer;  // none: the caller has the records
  if (g_error_matches(error, G_RESOLVER_ERROR, G_RESOLVER_ERROR_NOT_FOUND)) {
    answer.status = DnsAnswer::Status::kNotFound;
  } else {
    answer.status = DnsAnswer::Status::kFailed;
    answer.error = error->message;
  }
  return answer;
}

}  // namespace

DomainResolver::DomainResolver(DomainClaimCheck judge, Done done)
    : judge_(std::move(judge)), done_(std::move(done)), resolver_(g_resolver_get_default()) {}

DomainResolver::~DomainResolver() = default;

void DomainResolver::check(const CheckDomainsAction& action) {
  if (running_.size() < kMaxRunningChecks) return start(action);
  if (queued_.size() < kMaxQueuedChecks) {
    queued_.push_back(action);
    return;
  }
  log::warn_limited("custom-domain-busy", "custom domains: %zu checks waiting; answering "
                    "'try again later'", queued_.size());
  std::vector<DomainVerdict> verdicts;
  for (const DomainCheck& domain : action.domains)
    verdicts.push_back({DomainVerdict::Outcome::kRetry,
                        "custom domain " + domain.domain + ": the relay is checking too many "
                        "domains right now; trying again later"});
  done_(action.connection, action.check, verdicts);
}

void DomainResolver::start(const CheckDomainsAction& action) {
  auto job = std::make_shared<Job>();
  job->owner = this;
  job->id = next_job_id_++;
  job->action = action;
  job->addresses.resize(action.domains.size());
  job->txt.resize(action.domains.size());
  job->waiting = 2 * action.domains.size();
  job->timeout = SourceId(g_timeout_add_seconds(kCheckTimeoutSeconds, on_timeout_trampoline,
                                                job.get()));
  running_[job->id] = job;
  if (job->waiting == 0) return finish(job->id);
  for (size_t i = 0; i < action.domains.size(); ++i) {
    const std::string& domain = action.domains[i].domain;
    log::debug("custom domain %s: looking up its addresses and %s", domain.c_str(),
               DomainClaimCheck::txt_name(domain).c_str());
    g_resolver_lookup_by_name_async(resolver_.get(), domain.c_str(), job->cancellable.get(),
                                    on_addresses_trampoline, new Ticket{job, i, false});
    g_resolver_lookup_records_async(resolver_.get(), DomainClaimCheck::txt_name(domain).c_str(),
                                    G_RESOLVER_RECORD_TXT, job->cancellable.get(),
                                    on_txt_trampoline, new Ticket{job, i, true});
  }
}

void DomainResolver::on_addresses_trampoline(GObject* source, GAsyncResult* result,
                                             gpointer data) {
  std::unique_ptr<Ticket> ticket(static_cast<Ticket*>(data));
  GError* raw_error = nullptr;
  GList* list = g_resolver_lookup_by_name_finish(G_RESOLVER(source), result, &raw_error);
  GErrorPtr error(raw_error);
  guard_callback("custom domain look-up", [&] {
    DnsAnswer answer = failed_answer(error.get());
    if (list) {
      answer = {DnsAnswer::Status::kFound, {}, ""};
      for (GList* item = list; item; item = item->next) {
        GCharPtr text(g_inet_address_to_string(G_INET_ADDRESS(item->data)));
        answer.values.emplace_back(text.get());
      }
    }
    deliver(*ticket, std::move(answer));
  });
  if (list) g_resolver_free_addresses(list);
}

void DomainResolver::on_txt_trampoline(GObject* source, GAsyncResult* result, gpointer data) {
  std::unique_ptr<Ticket> ticket(static_cast<Ticket*>(data));
  GError* raw_error = nullptr;
  GList* list = g_resolver_lookup_records_finish(G_RESOLVER(source), result, &raw_error);
  GErrorPtr error(raw_error);
  guard_callback("custom domain look-up", [&] {
    DnsAnswer answer = failed_answer(error.get());
    if (list) {
      answer = {DnsAnswer::Status::kFound, {}, ""};
      // Each record is a GVariant "(as)": the record's character-strings, which make
      // one value together (RFC 7208 section 3.3 reads TXT records the same way).
      for (GList* item = list; item; item = item->next) {
        GVariantIter* strings = nullptr;
        g_variant_get(static_cast<GVariant*>(item->data), "(as)", &strings);
        std::string value;
        const gchar* part = nullptr;
        while (g_variant_iter_loop(strings, "&s", &part)) value += part;
        g_variant_iter_free(strings);
        answer.values.push_back(std::move(value));
      }
    }
    deliver(*ticket, std::move(answer));
  });
  if (list) g_list_free_full(list, reinterpret_cast<GDestroyNotify>(g_variant_unref));
}

void DomainResolver::deliver(const Ticket& ticket, DnsAnswer answer) {
  const std::shared_ptr<Job> job = ticket.job.lock();
  if (!job) return;
  (ticket.txt ? job->txt : job->addresses)[ticket.domain] = std::move(answer);
  job->owner->answered(*job);
}

gboolean DomainResolver::on_timeout_trampoline(gpointer data) {
  auto* job = static_cast<Job*>(data);
  job->timeout.release();  // G_SOURCE_REMOVE
  guard_callback("custom domain timeout", [job] {
    DnsAnswer late;
    late.error = "no answer within " + std::to_string(kCheckTimeoutSeconds) + " s";
    for (auto& answer : job->addresses)
      if (!answer) answer = late;
    for (auto& answer : job->txt)
      if (!answer) answer = late;
    job->owner->finish(job->id);
  });
  return G_SOURCE_REMOVE;
}

void DomainResolver::answered(Job& job) {
  if (--job.waiting == 0) finish(job.id);
}

void DomainResolver::finish(uint64_t job_id) {
  auto it = running_.find(job_id);
  if (it == running_.end()) return;
  // Out of the map first: `done_` may come back with a new check.
  const std::shared_ptr<Job> job = std::move(it->second);
  running_.erase(it);
  std::vector<DomainVerdict> verdicts;
  for (size_t i = 0; i < job->action.domains.size(); ++i)
    verdicts.push_back(judge_.judge(job->action.domains[i], job->addresses[i].value_or(DnsAnswer{}),
                                    job->txt[i].value_or(DnsAnswer{})));
  done_(job->action.connection, job->action.check, verdicts);
  while (running_.size() < kMaxRunningChecks && !queued_.empty()) {
    CheckDomainsAction next = std::move(queued_.front());
    queued_.pop_front();
    start(next);
  }
}

}  // namespace natfwd::relay::front_door
