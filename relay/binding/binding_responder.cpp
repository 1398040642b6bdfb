#include "binding/binding_responder.h"

#include <algorithm>

namespace natfwd::stun {

bool BindingResponder::understands(uint16_t type) {
  switch (type) {
    case attr::kMappedAddress:
    case attr::kUsername:
    case attr::kMessageIntegrity:
    case attr::kErrorCode:
    case attr::kUnknownAttributes:
    case attr::kRealm:
    case attr::kNonce:
    case attr::kMessageIntegritySha256:
    case attr::kPasswordAlgorithm:
    case attr::kUserhash:
    case attr::kXorMappedAddress:
    case attr::kPriority:
    case attr::kUseCandidate:
      return true;
    default:
      return !attr::is_comprehension_required(type);
  }
}

std::vector<std::byte> BindingResponder::error_response(const Message& request, int code,
                                                        std::string_view reason,
                                                        std::span<const uint16_t> unknown) const {
  MessageBuilder builder = request.classic
                               ? MessageBuilder(request.method(), MessageClass::kErrorResponse,
                                                request)
                               : MessageBuilder(request.method(), MessageClass::kErrorResponse,
                                                request.transaction_id);
  builder.add_error_code(code, reason);
  if (!unknown.empty()) builder.add_unknown_attributes(unknown);
  if (!request.classic) {
    builder.add_software(software_);
    builder.add_fingerprint();
  }
  return builder.take();
}

// CHANGE-REQUEST flags (RFC 5780 section 7.2): bit 0x4 "change IP", 0x2 "change port".
constexpr uint8_t kChangeIp = 0x04;
constexpr uint8_t kChangePort = 0x02;

BindingResponder::Result BindingResponder::handle(std::span<const std::byte> datagram,
                                                  const TransportAddress& from,
                                                  ServerEndpoint received_on) const {
  Result result;
  result.send_from = received_on;
  // libnice (0.1.21, Debian 12) still gathers server-reflexive candidates with RFC 3489
  // requests, which have no magic cookie: accept them (RFC 8489 section 11).
  auto parsed = parse(datagram, Compatibility::kAcceptRfc3489);
  if (parsed.status != ParseStatus::kOk) {
    result.outcome = Outcome::kDrop;
    result.reason = parsed.error;
    return result;
  }
  const Message& request = parsed.message;
  if (request.message_class() != MessageClass::kRequest) {
    // Section 6.3.2: indications (e.g. keepalives) get no response; we never send
    // requests, so responses are strays.
    result.outcome = Outcome::kIgnore;
    result.reason = "not a request";
    return result;
  }

  std::vector<uint16_t> unknown;
  for (const auto& attribute : request.attributes)
    if (!understood(attribute.type) &&
        std::find(unknown.begin(), unknown.end(), attribute.type) == unknown.end())
      unknown.push_back(attribute.type);

  result.outcome = Outcome::kRespond;
  if (!unknown.empty()) {
    result.response =
        error_response(request, error_code::kUnknownAttribute, "Unknown Attribute", unknown);
    return result;
  }
  if (request.method() != method::kBinding) {
    result.response = error_response(request, error_code::kBadRequest, "Unsupported method", {});
    return result;
  }

  if (const Attribute* change = request.find(attr::kChangeRequest)) {
    // Only reached with discovery_ (else it was unknown above). A value that is not
    // the 4 bytes of section 7.2 is the client's mistake.
    if (change->value.size() != 4) {
      result.response = error_response(request, error_code::kBadRequest, "Bad CHANGE-REQUEST", {});
      return result;
    }
    const auto flags = std::to_integer<uint8_t>(change->value[3]);
    if (flags & kChangeIp) result.send_from.ip = 1 - received_on.ip;
    if (flags & kChangePort) result.send_from.port = 1 - received_on.port;
  }

  if (request.classic) {
    // RFC 8489 section 11 (and RFC 5389 section 12.2): echo the cookie field and send
    // MAPPED-ADDRESS, which is all an RFC 3489 client understands.
    MessageBuilder builder(method::kBinding, MessageClass::kSuccessResponse, request);
    builder.add_mapped_address(from);
    result.response = builder.take();
    return result;
  }

  // Section 6.3.1.1 and 14.2: the reflexive address, XORed, plus SOFTWARE and
  // FINGERPRINT (harmless to clients that ignore it, needed by ICE agents that
  // multiplex).
  MessageBuilder builder(method::kBinding, MessageClass::kSuccessResponse,
                         request.transaction_id);
  builder.add_xor_mapped_address(from);
  if (discovery_) {
    // Section 7.3: OTHER-ADDRESS differs in both IP and port from where the request
    // came in; RESPONSE-ORIGIN is where this answer leaves from, so the client can
    // tell that a change was honoured.
    const auto& at = discovery_->by_ip_port;
    builder.add_attribute(attr::kResponseOrigin,
                          encode_address(at[result.send_from.ip][result.send_from.port]));
    builder.add_attribute(attr::kOtherAddress,
                          encode_address(at[1 - received_on.ip][1 - received_on.port]));
  }
  builder.add_software(software_);
  builder.add_fingerprint();
  result.response = builder.take();
  return result;
}

}  // namespace natfwd::stun
