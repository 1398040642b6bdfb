#include "netcheck/netcheck_responder.h"

#include "log.h"

namespace natfwd::netcheck {

void NetcheckResponder::on_welcome(NetcheckOptions options, bool via_proxy) {
  options.check_tcp = false;
  options_ = std::move(options);
  via_proxy_ = via_proxy;
}

void NetcheckResponder::on_registered() {
  if (!options_ || run_) return;
  run_ = std::make_unique<NetcheckRun>(*options_, [this](const NetcheckReport& report) {
    SideFacts facts = report.facts();
    facts.tcp = !via_proxy_;
    facts.proxy = via_proxy_;
    facts_ = facts;
    log::info("netcheck: udp %s, mapping %s, filtering %s", facts.udp ? "yes" : "no",
              std::string(to_string(facts.mapping)).c_str(),
              std::string(to_string(facts.filtering)).c_str());
    // Freed from an idle callback of its own (see NetcheckRun): safe here.
    run_.reset();
  });
}

void NetcheckResponder::on_query(const wire::NetcheckQuery& query) { send_(answer(query)); }

wire::Envelope NetcheckResponder::answer(const wire::NetcheckQuery& query) const {
  wire::Envelope envelope;
  auto* reply = envelope.mutable_netcheck_reply();
  reply->set_query_id(query.query_id());
  if (!authorized_(query.caller_key())) {
    reply->set_status(wire::NetcheckReply::REFUSED);
  } else if (!facts_) {
    reply->set_status(wire::NetcheckReply::NOT_YET);
  } else {
    reply->set_status(wire::NetcheckReply::OK);
    *reply->mutable_facts() = to_wire(*facts_);
  }
  return envelope;
}

}  // namespace natfwd::netcheck
