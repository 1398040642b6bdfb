// The STUN Binding responder (RFC 8489 section 6.3): a request in, a response out.
// No I/O: the UDP service hands it each datagram with the sender's address.
//
// Issue 3 puts a TURN server on the same port; it will look at the method first and
// pass Binding requests here.
#pragma once

#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "stun/stun_message.h"

namespace natfwd::stun {

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
  };

  explicit BindingResponder(std::string software) : software_(std::move(software)) {}

  Result handle(std::span<const std::byte> datagram, const TransportAddress& from) const;

  // Comprehension-required attributes this server understands (it may still ignore
  // them); any other one in a request gets a 420 (RFC 8489 section 6.3.1).
  static bool understands(uint16_t attribute_type);

 private:
  std::vector<std::byte> error_response(const Message& request, int code,
                                        std::string_view reason,
                                        std::span<const uint16_t> unknown) const;

  std::string software_;
};

}  // namespace natfwd::stun
