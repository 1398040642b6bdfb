#include "relays/name_handover.h"

#include "log.h"

namespace natfwd {

NameHandover::NameHandover(Request request, size_t relay_count, std::function<void()> done)
    : request_(std::move(request)), relay_count_(relay_count), done_(std::move(done)) {}

void NameHandover::on_welcome(RelayLink& link) {
  if (answered_.count(link.index)) return;  // a reconnect after the answer
  wire::Envelope envelope;
  envelope.mutable_hand_over()->set_name(request_.name);
  envelope.mutable_hand_over()->set_to_key_id(request_.to_key_id);
  link.client->send(envelope);
}

bool NameHandover::on_message(RelayLink& link, const wire::Envelope& envelope) {
  if (!envelope.has_handed_over()) return false;
  if (!answered_.insert(link.index).second) return true;
  log::ready("handed '%s' over to key %s at relay %s: the peer with that key may register "
             "it now", envelope.handed_over().name().c_str(),
             envelope.handed_over().to_key_id().c_str(), link.address.to_string().c_str());
  if (answered_.size() == relay_count_) done_();
  return true;
}

}  // namespace natfwd
