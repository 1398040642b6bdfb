#include "ice/connected_receive.h"

#include <string_view>

#include "stun/turn_constants.h"
#include "stun/turn_framing.h"

namespace natfwd {

bool receives_on_connected_socket(const PairShape& pair) {
  return pair.udp && pair.local != CandidateKind::kRelayed &&
         pair.remote != CandidateKind::kRelayed;
}

DatagramKind classify_datagram(std::span<const std::byte> datagram) {
  return datagram.size() >= stun::kHeaderSize && stun::looks_like_stun(datagram)
             ? DatagramKind::kStun
             : DatagramKind::kData;
}

std::optional<std::span<const std::byte>> tunnel_data_from_turn_server(
    std::span<const std::byte> datagram) {
  std::span<const std::byte> inner;
  if (turn::looks_like_channel_data(datagram)) {
    const auto channel_data = turn::parse_channel_data(datagram);
    if (!channel_data) return std::nullopt;
    inner = channel_data->data;
  } else {
    const auto parsed = stun::parse(datagram);
    if (parsed.status != stun::ParseStatus::kOk) return std::nullopt;
    const stun::Message& message = parsed.message;
    if (message.method() != stun::method::kData ||
        message.message_class() != stun::MessageClass::kIndication)
      return std::nullopt;
    const stun::Attribute* data = message.find(turn::attr::kData);
    if (!data) return std::nullopt;
    inner = data->value;
  }
  if (inner.empty() || classify_datagram(inner) == DatagramKind::kStun) return std::nullopt;
  return inner;
}

CheckResponder::CheckResponder(std::string local_ufrag, std::string local_password)
    : ufrag_(std::move(local_ufrag)), password_(std::move(local_password)) {}

std::optional<std::vector<std::byte>> CheckResponder::answer(
    std::span<const std::byte> datagram, const stun::TransportAddress& from) const {
  const auto parsed = stun::parse(datagram);
  if (parsed.status != stun::ParseStatus::kOk) return std::nullopt;
  const stun::Message& request = parsed.message;
  if (request.method() != stun::method::kBinding ||
      request.message_class() != stun::MessageClass::kRequest)
    return std::nullopt;
  // RFC 8445 section 7.3: USERNAME "OURS:THEIRS"; a check for another agent (a stale
  // session) is not ours to answer.
  const stun::Attribute* username = request.find(stun::attr::kUsername);
  if (!username) return std::nullopt;
  const std::string_view name(reinterpret_cast<const char*>(username->value.data()),
                              username->value.size());
  if (name.size() <= ufrag_.size() || name.substr(0, ufrag_.size()) != ufrag_ ||
      name[ufrag_.size()] != ':')
    return std::nullopt;
  const auto key = std::as_bytes(std::span(password_.data(), password_.size()));
  if (!stun::verify_message_integrity(request, key)) return std::nullopt;
  // RFC 8445 section 7.3.1.4 and 7.3.1.5: a success response with the source as
  // XOR-MAPPED-ADDRESS, integrity keyed with our password, and a FINGERPRINT.
  stun::MessageBuilder response(stun::method::kBinding, stun::MessageClass::kSuccessResponse,
                                request.transaction_id);
  response.add_xor_mapped_address(from);
  response.add_message_integrity(key);
  response.add_fingerprint();
  return response.take();
}

}  // namespace natfwd
