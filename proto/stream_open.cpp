#include "stream_open.h"

namespace natfwd::wire {

const char* stream_status_text(int status) {
  switch (static_cast<StreamStatus>(status)) {
    case StreamStatus::kOk: return "ok";
    case StreamStatus::kNotServed: return "not served";
    case StreamStatus::kResolveFailed: return "cannot resolve";
    case StreamStatus::kConnectFailed: return "cannot connect";
    case StreamStatus::kBadRequest: return "bad request";
    case StreamStatus::kNotAuthorized: return "not authorised";
  }
  return "refused";
}

namespace {

// At most `limit` bytes of `text`, cut before a UTF-8 continuation byte: protobuf
// refuses to parse a proto3 string that is not valid UTF-8.
std::string_view utf8_prefix(std::string_view text, size_t limit) {
  if (text.size() <= limit) return text;
  size_t cut = limit;
  while (cut > 0 && (static_cast<unsigned char>(text[cut]) & 0xC0) == 0x80) --cut;
  return text.substr(0, cut);
}

}  // namespace

std::vector<std::byte> encode_stream_open(const HostPort& target) {
  StreamOpen open;
  open.set_host(target.host);
  open.set_port(target.port);
  std::vector<std::byte> out;
  encode_message(open, out);
  return out;
}

std::vector<std::byte> encode_pair_request(std::string_view secret) {
  StreamOpen open;
  open.set_pair_secret(std::string(secret));
  std::vector<std::byte> out;
  encode_message(open, out);
  return out;
}

std::vector<std::byte> encode_punch_request(const PunchOffer& offer) {
  StreamOpen open;
  *open.mutable_punch() = offer;
  std::vector<std::byte> out;
  encode_message(open, out);
  return out;
}

std::vector<std::byte> encode_stream_open_result(int status, std::string_view detail,
                                                 const PunchOffer* punch) {
  StreamOpenResult answer;
  answer.set_status(static_cast<StreamOpenResult::Status>(status));
  answer.set_detail(std::string(utf8_prefix(detail, kMaxStreamOpenDetail)));
  if (punch) *answer.mutable_punch() = *punch;
  std::vector<std::byte> out;
  encode_message(answer, out);
  return out;
}

namespace {

// The header's frame parsed into `message`. Otherwise false, with the status and the
// reason set in `out`.
template <typename Message, typename Decoded>
bool parse_header(std::span<const std::byte> input, Message& message, Decoded& out,
                  std::string_view malformed) {
  const DecodeResult frame = decode_frame(input, kMaxStreamHeaderPayload);
  out.status = frame.status;
  out.error = frame.error;
  if (frame.status != DecodeStatus::kComplete) return false;
  if (!parse_message(frame.payload, message)) {
    out.status = DecodeStatus::kInvalid;
    out.error = malformed;
    return false;
  }
  out.consumed = frame.consumed;
  return true;
}

}  // namespace

StreamOpenDecode decode_stream_open(std::span<const std::byte> input) {
  StreamOpenDecode out;
  StreamOpen open;
  if (!parse_header(input, open, out, "malformed stream header")) return out;
  if (!open.pair_secret().empty()) {
    out.request.pair_secret = open.pair_secret();
    return out;
  }
  if (open.has_punch()) {
    out.request.punch = open.punch();
    return out;
  }
  if (open.port() == 0 || open.port() > 65535 || !is_valid_host(open.host())) {
    out.status = DecodeStatus::kInvalid;
    out.consumed = 0;
    out.error = "malformed target";
    return out;
  }
  out.request.target = HostPort{open.host(), static_cast<uint16_t>(open.port())};
  return out;
}

StreamOpenResultDecode decode_stream_open_result(std::span<const std::byte> input) {
  StreamOpenResultDecode out;
  StreamOpenResult answer;
  if (!parse_header(input, answer, out, "malformed answer")) return out;
  out.result = answer.status();
  out.detail = answer.detail();
  if (answer.has_punch()) out.punch = answer.punch();
  return out;
}

}  // namespace natfwd::wire
