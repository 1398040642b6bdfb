// The STUN Binding responder (RFC 8489 section 6.3): a request in, a response out.
// No I/O: the UDP service hands it each datagram with the sender's address.
//
// The TURN server shares the port: the services look at the method first and pass
// Binding requests here.
#pragma once

#include <array>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "stun/stun_message.h"

namespace natfwd::stun {

// The four transport addresses of a server doing RFC 5780 behaviour discovery: the
// primary IP and an alternate one, each with the primary port and an alternate one.
struct DiscoveryAddresses {
  // by_ip_port[ip][port]: [0][0] is the primary (listen) address, [1][x] the alternate
  // IP, [x][1] the alternate port.
  std::array<std::array<TransportAddress, 2>, 2> by_ip_port{};
};

// Which of the four addresses a request arrived on, or a response leaves from.
struct ServerEndpoint {
  int ip = 0;    // 0 primary, 1 alternate
  int port = 0;  // 0 primary, 1 alternate
  bool operator==(const ServerEndpoint&) const = default;
};

class BindingResponder {
 public:
  enum class Outcome {
    kRespond,  // send `response` back to the sender
    kIgnore,   // valid STUN that needs no answer (indications, stray responses)
    kDrop,     // not valid STUN: the sender's fault; `reason` says why
  };
  struct Result {
    Outcome outcome = Outcome::kDrop;
    std::vector<std::byte> response;  // kRespond only
    std::string_view reason;          // kDrop and kIgnore; static string
    // Where to send `response` from: where the request came in, unless a CHANGE-REQUEST
    // asked for the other IP and/or port (RFC 5780 section 7.2).
    ServerEndpoint send_from;
  };

  // With `discovery`, the responder does RFC 5780: OTHER-ADDRESS and RESPONSE-ORIGIN in
  // every answer, CHANGE-REQUEST honoured. Without, a CHANGE-REQUEST is an unknown
  // comprehension-required attribute and gets a 420, and OTHER-ADDRESS is never sent
  // (section 7.2: a server that cannot change address must not advertise one).
  explicit BindingResponder(std::string software,
                            std::optional<DiscoveryAddresses> discovery = std::nullopt)
      : software_(std::move(software)), discovery_(std::move(discovery)) {}

  Result handle(std::span<const std::byte> datagram, const TransportAddress& from,
                ServerEndpoint received_on = {}) const;
  bool does_discovery() const { return discovery_.has_value(); }

  // Comprehension-required attributes this server understands (it may still ignore
  // them); any other one in a request gets a 420 (RFC 8489 section 6.3.1).
  static bool understands(uint16_t attribute_type);

 private:
  std::vector<std::byte> error_response(const Message& request, int code,
                                        std::string_view reason,
                                        std::span<const uint16_t> unknown) const;

  bool understood(uint16_t attribute_type) const {
    return understands(attribute_type) ||
           (discovery_ && attribute_type == attr::kChangeRequest);
  }

  std::string software_;
  std::optional<DiscoveryAddresses> discovery_;
};

}  // namespace natfwd::stun
