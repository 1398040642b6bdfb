// `peer handover NAME KEYID`: the key that holds NAME at the relays hands it to the key
// KEYID (a reinstalled or moved serving peer), at every relay of --relay. Each link,
// once welcomed (its key proven), sends HandOver; done when every relay answered
// HandedOver. A relay's refusal (NOT_HOLDER: this key does not hold the name there)
// ends the link as fatal, which ends the command.
#pragma once

#include <functional>
#include <set>
#include <string>

#include "relays/relay_links.h"
#include "rendezvous.pb.h"

namespace natfwd {

class NameHandover {
 public:
  struct Request {
    std::string name;
    std::string to_key_id;
  };
  NameHandover(Request request, size_t relay_count, std::function<void()> done);

  void on_welcome(RelayLink& link);
  // True when `envelope` was the answer to us.
  bool on_message(RelayLink& link, const wire::Envelope& envelope);

 private:
  Request request_;
  size_t relay_count_;
  std::function<void()> done_;
  std::set<size_t> answered_;  // RelayLink::index
};

}  // namespace natfwd
