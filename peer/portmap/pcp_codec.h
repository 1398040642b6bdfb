// PCP (RFC 6887) MAP requests and responses: pure functions over bytes, no I/O, and the
// retransmission of one request as an I/O-free core that takes `now`.
//
// No Debian package speaks PCP (libnatpmp is NAT-PMP only, miniupnpc UPnP IGD only),
// so this is ours. Only what a peer needs: MAP for one UDP port of an IPv4 client
// (RFC 6887 section 11), no options, no PEER, no ANNOUNCE.
//
//   request  (section 7.1 + 11.1, 60 bytes): version 2 | R=0 opcode | reserved(16) |
//            requested lifetime(32) | client IP(128) | nonce(96) | protocol(8) |
//            reserved(24) | internal port(16) | suggested external port(16) |
//            suggested external IP(128)
//   response (section 7.2 + 11.1, 60 bytes): version 2 | R=1 opcode | reserved(8) |
//            result code(8) | lifetime(32) | epoch(32) | reserved(96) | nonce |
//            protocol | reserved | internal port | assigned external port |
//            assigned external IP
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace natfwd::portmap {

inline constexpr uint16_t kPcpServerPort = 5351;  // RFC 6887 section 19.1 (shared with NAT-PMP)
inline constexpr uint8_t kPcpVersion = 2;         // RFC 6887 section 9
inline constexpr uint8_t kOpcodeMap = 1;          // RFC 6887 section 19.2
inline constexpr uint8_t kProtocolUdp = 17;       // IANA protocol number
inline constexpr size_t kMapMessageSize = 60;     // common header 24 + MAP 36
inline constexpr size_t kMaxPcpMessageSize = 1100;  // RFC 6887 section 7

using PcpNonce = std::array<std::byte, 12>;  // RFC 6887 section 11.1: random per mapping

struct PcpMapRequest {
  std::array<uint8_t, 4> client_ip{};  // the source address of the request (IPv4)
  uint16_t internal_port = 0;
  uint16_t suggested_external_port = 0;  // 0: any
  uint32_t lifetime_seconds = 0;         // 0 deletes the mapping (section 15)
  PcpNonce nonce{};
};

std::vector<std::byte> encode_map_request(const PcpMapRequest& request);

// RFC 6887 section 7.4.
enum class PcpResult : uint8_t {
  kSuccess = 0,
  kUnsuppVersion = 1,
  kNotAuthorized = 2,
  kMalformedRequest = 3,
  kUnsuppOpcode = 4,
  kUnsuppOption = 5,
  kMalformedOption = 6,
  kNetworkFailure = 7,
  kNoResources = 8,
  kUnsuppProtocol = 9,
  kUserExQuota = 10,
  kCannotProvideExternal = 11,
  kAddressMismatch = 12,
  kExcessiveRemotePeers = 13,
};
std::string to_string(PcpResult result);

struct PcpMapResponse {
  uint8_t version = 0;
  PcpResult result = PcpResult::kSuccess;
  uint32_t lifetime_seconds = 0;
  uint32_t epoch_seconds = 0;
  PcpNonce nonce{};
  uint16_t internal_port = 0;
  uint16_t external_port = 0;
  std::string external_ip;  // dotted IPv4 (from ::ffff:a.b.c.d), "" when not IPv4-mapped
};

struct PcpParse {
  enum class Status { kComplete, kInvalid, kNotPcp };
  Status status = Status::kInvalid;
  const char* reason = "";  // static text for kInvalid / kNotPcp
  PcpMapResponse response;
};

// A response to our MAP request. kNotPcp: a NAT-PMP-only server's answer (version 0,
// RFC 6887 section 9); kInvalid: anything else that is not a MAP response we can use
// (too short, not a response, wrong opcode, another nonce, a success without an IPv4
// external address). A response with version 2 but an error result is kComplete.
PcpParse parse_map_response(std::span<const std::byte> datagram, const PcpNonce& nonce);

// One request and its retransmissions. RFC 6887 section 8.1.1 starts at 3 s and never
// gives up; a peer setting up a tunnel cannot wait that long, and a gateway on the LAN
// answers in milliseconds, so this uses NAT-PMP's schedule (RFC 6886 section 3.1:
// 250 ms, doubling) and gives up after kPcpGiveUpUs.
inline constexpr int64_t kPcpFirstRetransmitUs = 250'000;
inline constexpr int64_t kPcpGiveUpUs = 2'000'000;

class PcpExchange {
 public:
  enum class Outcome { kPending, kAnswered, kNotPcp, kGaveUp };

  PcpExchange(const PcpMapRequest& request, int64_t now_us);
  // The request when it is due (at start, then at each retransmission), else nothing.
  std::optional<std::vector<std::byte>> due(int64_t now_us);
  // When due() or give-up next needs a call.
  int64_t next_deadline_us() const { return next_send_us_ < give_up_us_ ? next_send_us_ : give_up_us_; }
  // Feeds one datagram from the server; invalid ones are ignored (kPending).
  Outcome on_datagram(std::span<const std::byte> datagram);
  // kGaveUp once the deadline passed without an answer.
  Outcome check(int64_t now_us) const;
  const PcpMapResponse& response() const { return response_; }
  Outcome outcome() const { return outcome_; }

 private:
  PcpMapRequest request_;
  std::vector<std::byte> bytes_;
  int64_t next_send_us_;
  int64_t interval_us_ = kPcpFirstRetransmitUs;
  int64_t give_up_us_;
  Outcome outcome_ = Outcome::kPending;
  PcpMapResponse response_;
};

}  // namespace natfwd::portmap
