#include "portmap/pcp_codec.h"

#include <algorithm>
#include <cstdio>

namespace natfwd::portmap {
namespace {

constexpr size_t kHeaderSize = 24;
constexpr uint8_t kResponseBit = 0x80;

void put16(std::vector<std::byte>& out, size_t at, uint16_t v) {
  out[at] = std::byte(v >> 8);
  out[at + 1] = std::byte(v & 0xff);
}
void put32(std::vector<std::byte>& out, size_t at, uint32_t v) {
  for (int i = 0; i < 4; ++i) out[at + i] = std::byte((v >> (24 - 8 * i)) & 0xff);
}
uint16_t get16(std::span<const std::byte> in, size_t at) {
  return static_cast<uint16_t>(std::to_integer<uint16_t>(in[at]) << 8 |
                               std::to_integer<uint16_t>(in[at + 1]));
}
uint32_t get32(std::span<const std::byte> in, size_t at) {
  return static_cast<uint32_t>(get16(in, at)) << 16 | get16(in, at + 2);
}
// An IPv4 address as the IPv4-mapped IPv6 address PCP carries (RFC 6887 section 5).
void put_mapped_ipv4(std::vector<std::byte>& out, size_t at, const std::array<uint8_t, 4>& ip) {
  out[at + 10] = std::byte{0xff};
  out[at + 11] = std::byte{0xff};
  for (int i = 0; i < 4; ++i) out[at + 12 + i] = std::byte{ip[i]};
}

}  // namespace

std::vector<std::byte> encode_map_request(const PcpMapRequest& r) {
  std::vector<std::byte> out(kMapMessageSize, std::byte{0});
  out[0] = std::byte{kPcpVersion};
  out[1] = std::byte{kOpcodeMap};  // R = 0: a request
  put32(out, 4, r.lifetime_seconds);
  put_mapped_ipv4(out, 8, r.client_ip);
  std::copy(r.nonce.begin(), r.nonce.end(), out.begin() + kHeaderSize);
  out[kHeaderSize + 12] = std::byte{kProtocolUdp};
  put16(out, kHeaderSize + 16, r.internal_port);
  put16(out, kHeaderSize + 18, r.suggested_external_port);
  // Suggested external address: ::ffff:0.0.0.0, "any IPv4 address" (section 11.1).
  put_mapped_ipv4(out, kHeaderSize + 20, {0, 0, 0, 0});
  return out;
}

std::string to_string(PcpResult result) {
  static const char* const kNames[] = {
      "SUCCESS",        "UNSUPP_VERSION",   "NOT_AUTHORIZED",          "MALFORMED_REQUEST",
      "UNSUPP_OPCODE",  "UNSUPP_OPTION",    "MALFORMED_OPTION",        "NETWORK_FAILURE",
      "NO_RESOURCES",   "UNSUPP_PROTOCOL",  "USER_EX_QUOTA",           "CANNOT_PROVIDE_EXTERNAL",
      "ADDRESS_MISMATCH", "EXCESSIVE_REMOTE_PEERS"};
  const auto index = static_cast<size_t>(result);
  if (index < std::size(kNames)) return kNames[index];
  return "result " + std::to_string(index);
}

PcpParse parse_map_response(std::span<const std::byte> in, const PcpNonce& nonce) {
  PcpParse out;
  auto invalid = [&out](const char* reason) {
    out.status = PcpParse::Status::kInvalid;
    out.reason = reason;
    return out;
  };
  // A NAT-PMP server answers anything of another version with its own 8-byte or
  // longer version-0 "unsupported version" response (RFC 6886 section 3.5).
  if (in.size() >= 2 && in[0] == std::byte{0}) {
    out.status = PcpParse::Status::kNotPcp;
    out.reason = "a NAT-PMP server (version 0) answered";
    return out;
  }
  if (in.size() < kHeaderSize) return invalid("shorter than a PCP header");
  if (in.size() > kMaxPcpMessageSize || in.size() % 4 != 0)
    return invalid("not a PCP message length");  // section 7
  out.response.version = std::to_integer<uint8_t>(in[0]);
  const uint8_t op = std::to_integer<uint8_t>(in[1]);
  if (!(op & kResponseBit)) return invalid("a request, not a response");
  out.response.result = static_cast<PcpResult>(std::to_integer<uint8_t>(in[3]));
  out.response.lifetime_seconds = get32(in, 4);
  out.response.epoch_seconds = get32(in, 8);
  if (out.response.version != kPcpVersion) {
    // Section 9: the server's highest version and UNSUPP_VERSION; we speak only 2.
    out.status = PcpParse::Status::kNotPcp;
    out.reason = "the server speaks another PCP version";
    return out;
  }
  if ((op & ~kResponseBit) != kOpcodeMap) return invalid("not a MAP response");
  if (in.size() < kMapMessageSize) {
    // Error responses may carry no opcode data (section 7.2): usable only as an error.
    if (out.response.result == PcpResult::kSuccess) return invalid("a MAP success too short");
    out.status = PcpParse::Status::kComplete;
    return out;
  }
  std::copy(in.begin() + kHeaderSize, in.begin() + kHeaderSize + 12,
            out.response.nonce.begin());
  // Section 11.3: a response whose nonce is not ours is for someone else.
  if (out.response.nonce != nonce) return invalid("another mapping's nonce");
  if (std::to_integer<uint8_t>(in[kHeaderSize + 12]) != kProtocolUdp &&
      out.response.result == PcpResult::kSuccess)
    return invalid("a mapping for another protocol");
  out.response.internal_port = get16(in, kHeaderSize + 16);
  out.response.external_port = get16(in, kHeaderSize + 18);
  const auto address = in.subspan(kHeaderSize + 20, 16);
  const bool v4_mapped = std::all_of(address.begin(), address.begin() + 10,
                                     [](std::byte b) { return b == std::byte{0}; }) &&
                         address[10] == std::byte{0xff} && address[11] == std::byte{0xff};
  if (v4_mapped) {
    char text[16];
    std::snprintf(text, sizeof text, "%u.%u.%u.%u", std::to_integer<unsigned>(address[12]),
                  std::to_integer<unsigned>(address[13]), std::to_integer<unsigned>(address[14]),
                  std::to_integer<unsigned>(address[15]));
    out.response.external_ip = text;
  }
  if (out.response.result == PcpResult::kSuccess) {
    if (!v4_mapped) return invalid("a MAP success without an IPv4 external address");
    if (out.response.external_port == 0 && out.response.lifetime_seconds != 0)
      return invalid("a MAP success with external port 0");
  }
  out.status = PcpParse::Status::kComplete;
  return out;
}

PcpExchange::PcpExchange(const PcpMapRequest& request, int64_t now_us)
    : request_(request),
      bytes_(encode_map_request(request)),
      next_send_us_(now_us),
      give_up_us_(now_us + kPcpGiveUpUs) {}

std::optional<std::vector<std::byte>> PcpExchange::due(int64_t now_us) {
  if (outcome_ != Outcome::kPending || now_us < next_send_us_ || now_us >= give_up_us_)
    return std::nullopt;
  next_send_us_ = now_us + interval_us_;
  interval_us_ *= 2;
  return bytes_;
}

PcpExchange::Outcome PcpExchange::on_datagram(std::span<const std::byte> datagram) {
  if (outcome_ != Outcome::kPending) return outcome_;
  const PcpParse parse = parse_map_response(datagram, request_.nonce);
  switch (parse.status) {
    case PcpParse::Status::kComplete:
      response_ = parse.response;
      outcome_ = Outcome::kAnswered;
      break;
    case PcpParse::Status::kNotPcp:
      outcome_ = Outcome::kNotPcp;
      break;
    case PcpParse::Status::kInvalid:
      break;  // someone else's, or garbage: keep waiting (section 8.3)
  }
  return outcome_;
}

PcpExchange::Outcome PcpExchange::check(int64_t now_us) const {
  if (outcome_ == Outcome::kPending && now_us >= give_up_us_) return Outcome::kGaveUp;
  return outcome_;
}

}  // namespace natfwd::portmap
