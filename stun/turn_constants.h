// TURN (RFC 8656) numbers: attributes, error codes, lifetimes, channel range.
// Quoted from the RFC section that defines each; units in the names.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>

namespace natfwd::turn {

using namespace std::chrono_literals;

// Attributes (RFC 8656 section 18; RFC 8489 ones live in stun/stun_message.h).
namespace attr {
inline constexpr uint16_t kChannelNumber = 0x000C;
inline constexpr uint16_t kLifetime = 0x000D;
inline constexpr uint16_t kBandwidth = 0x0010;  // RFC 5766 drafts; coturn clients send it
inline constexpr uint16_t kXorPeerAddress = 0x0012;
inline constexpr uint16_t kData = 0x0013;
inline constexpr uint16_t kXorRelayedAddress = 0x0016;
inline constexpr uint16_t kRequestedAddressFamily = 0x0017;
inline constexpr uint16_t kEvenPort = 0x0018;
inline constexpr uint16_t kRequestedTransport = 0x0019;
inline constexpr uint16_t kDontFragment = 0x001A;
inline constexpr uint16_t kReservationToken = 0x0022;
inline constexpr uint16_t kAdditionalAddressFamily = 0x8000;
inline constexpr uint16_t kAddressErrorCode = 0x8001;
inline constexpr uint16_t kIcmp = 0x8004;
}  // namespace attr

// Error codes (RFC 8656 section 19, RFC 8489 section 14.8).
namespace error_code {
inline constexpr int kBadRequest = 400;
inline constexpr int kUnauthorized = 401;
inline constexpr int kForbidden = 403;
inline constexpr int kUnknownAttribute = 420;
inline constexpr int kAllocationMismatch = 437;
inline constexpr int kStaleNonce = 438;
inline constexpr int kAddressFamilyNotSupported = 440;
inline constexpr int kWrongCredentials = 441;
inline constexpr int kUnsupportedTransportProtocol = 442;
inline constexpr int kPeerAddressFamilyMismatch = 443;
inline constexpr int kAllocationQuotaReached = 486;
inline constexpr int kInsufficientCapacity = 508;
}  // namespace error_code

// REQUESTED-TRANSPORT carries an IANA protocol number (section 18.8); only UDP relays.
inline constexpr uint8_t kProtocolUdp = 17;
// REQUESTED-ADDRESS-FAMILY values (section 18.6), the same as in XOR-*-ADDRESS.
inline constexpr uint8_t kFamilyIPv4 = 0x01;
inline constexpr uint8_t kFamilyIPv6 = 0x02;

// Section 3.2: "the default lifetime is 10 minutes"; section 7.2 lets the server cap
// what a client asks for ("e.g., 1 hour").
inline constexpr std::chrono::seconds kDefaultAllocationLifetime = 600s;
inline constexpr std::chrono::seconds kMaxAllocationLifetime = 3600s;
// Section 9: "a permission ... lasts 300 seconds (5 minutes)".
inline constexpr std::chrono::seconds kPermissionLifetime = 300s;
// Section 12: "a channel binding lasts for 10 minutes".
inline constexpr std::chrono::seconds kChannelLifetime = 600s;
// Section 12: after a binding expires, the channel number and the peer address stay
// tied to each other for "5 minutes" more, so that late packets are not misdelivered.
inline constexpr std::chrono::seconds kChannelRebindGuard = 300s;
// Section 7.2: the server "SHOULD hold the reservation for approximately 30 seconds".
inline constexpr std::chrono::seconds kReservationLifetime = 30s;
// Section 18.10: RESERVATION-TOKEN is 8 bytes; section 18.7: EVEN-PORT's R bit.
inline constexpr size_t kReservationTokenBytes = 8;
inline constexpr uint8_t kEvenPortReserveBit = 0x80;
// Not from the RFC: an allocation nobody installs a permission or channel on within
// this time is given back. An ICE agent allocates while gathering and asks for a
// permission as soon as it pairs the first remote candidate (RFC 8445 section 6.1.2.6,
// RFC 8656 section 9), one rendezvous round trip later (about a second). A natfwd peer
// gives up a whole tunnel setup after 30 s, so an allocation still without a
// permission by then belongs to no setup that can succeed; and 30 s is 20 times
// shorter than the 10 minutes an unused allocation would otherwise hold its port.
inline constexpr std::chrono::seconds kUnusedAllocationTimeout = 30s;
// Not from the RFC: peer IPs with a permission (and, separately, channels) one
// allocation may hold. ICE asks for one per remote candidate address, a handful per
// session even on a multi-homed host; 64 is ample, and it keeps one allocation's
// state to a few KiB instead of growing with whatever a client asks for.
inline constexpr size_t kMaxPermissionsPerAllocation = 64;

// RFC 8489 section 9.2: nonces have a limited lifetime; coturn uses 600 s too.
inline constexpr std::chrono::seconds kNonceLifetime = 600s;

// Section 12: channel numbers 0x4000 through 0x4FFF, 0x5000-0xFFFF reserved. But
// RFC 5766 (section 11) allowed up to 0x7FFF, and coturn's own clients
// (turnutils_uclient) and libre/restund still pick numbers there; coturn accepts
// them. So do we, for interop: 0x5000-0x7FFF are taken as RFC 5766 channels; below
// 0x4000 or above 0x7FFF is a 400 Bad Request.
inline constexpr uint16_t kMinChannelNumber = 0x4000;
inline constexpr uint16_t kMaxRfc8656ChannelNumber = 0x4FFF;
inline constexpr uint16_t kMaxChannelNumber = 0x7FFF;
// Section 12.4: ChannelData is a 4-byte header (channel, length) and the data.
inline constexpr size_t kChannelDataHeaderSize = 4;

constexpr bool is_valid_channel_number(uint16_t number) {
  return number >= kMinChannelNumber && number <= kMaxChannelNumber;
}

}  // namespace natfwd::turn
