#include "socks/socks_handshake.h"

#include <arpa/inet.h>

#include "rendezvous.pb.h"
#include "tunnel/stream_opening.h"

namespace natfwd {
namespace {

constexpr uint8_t kSocks5 = 5;
constexpr uint8_t kSocks4 = 4;
constexpr uint8_t kMethodNoAuth = 0x00;
constexpr uint8_t kNoAcceptableMethod = 0xff;
constexpr uint8_t kCommandConnect = 0x01;
constexpr uint8_t kAtypIpv4 = 0x01;
constexpr uint8_t kAtypDomain = 0x03;
constexpr uint8_t kAtypIpv6 = 0x04;
constexpr uint8_t kSocks4Granted = 0x5a;
constexpr uint8_t kSocks4Rejected = 0x5b;
constexpr size_t kMaxNulTerminated = 255;

uint16_t port_at(const std::vector<uint8_t>& b, size_t at) {
  return static_cast<uint16_t>(b[at] << 8 | b[at + 1]);
}

std::string ip_text(int family, const uint8_t* bytes) {
  char text[INET6_ADDRSTRLEN];
  inet_ntop(family, bytes, text, sizeof text);
  return text;
}

}  // namespace

SocksReply socks_reply_for_stream_status(int status) {
  switch (status) {
    case wire::StreamOpenResult::OK: return SocksReply::kSucceeded;
    case wire::StreamOpenResult::NOT_SERVED:
    case wire::StreamOpenResult::NOT_AUTHORIZED: return SocksReply::kNotAllowedByRuleset;
    case wire::StreamOpenResult::RESOLVE_FAILED: return SocksReply::kHostUnreachable;
    case wire::StreamOpenResult::CONNECT_FAILED: return SocksReply::kConnectionRefused;
    case kOpenFailedLocally: return SocksReply::kNetworkUnreachable;  // no tunnel
    default: return SocksReply::kGeneralFailure;
  }
}

size_t SocksHandshake::wanted() const {
  if (status_ != Status::kNeedMore) return 0;
  if (stage_ == Stage::kSocks4UserId || stage_ == Stage::kSocks4Host) return 1;  // up to NUL
  return need_ - buffer_.size();
}

std::vector<uint8_t> SocksHandshake::feed(std::span<const uint8_t> bytes) {
  std::vector<uint8_t> out;
  for (uint8_t byte : bytes) {
    if (status_ != Status::kNeedMore) {
      if (status_ == Status::kReady) fail("the client sent data before the SOCKS reply", out);
      break;
    }
    take(byte, out);
  }
  return out;
}

void SocksHandshake::take(uint8_t byte, std::vector<uint8_t>& out) {
  if (stage_ == Stage::kSocks4UserId || stage_ == Stage::kSocks4Host) {
    // NUL-terminated fields: the buffer holds the field so far.
    if (byte != 0) {
      if (buffer_.size() >= kMaxNulTerminated) {
        fail("SOCKS4 user id or host name too long", out, reply(SocksReply::kGeneralFailure));
        return;
      }
      buffer_.push_back(byte);
      return;
    }
    stage_complete(out);
    return;
  }
  buffer_.push_back(byte);
  if (buffer_.size() == need_) stage_complete(out);
}

void SocksHandshake::stage_complete(std::vector<uint8_t>& out) {
  std::vector<uint8_t> b;
  b.swap(buffer_);
  switch (stage_) {
    case Stage::kStart:
      version_ = b[0];
      if (version_ == kSocks5) {
        if (b[1] == 0) return fail("SOCKS5 greeting offers no method", out);
        stage_ = Stage::kMethods;
        need_ = b[1];
      } else if (version_ == kSocks4) {
        if (b[1] != kCommandConnect) {
          version_ = kSocks4;
          return fail("only CONNECT is supported", out, reply(SocksReply::kCommandNotSupported));
        }
        stage_ = Stage::kSocks4Address;
        need_ = 6;
      } else {
        version_ = 0;
        return fail("not a SOCKS4 or SOCKS5 client (first byte " + std::to_string(b[0]) + ")", out);
      }
      return;
    case Stage::kMethods:
      for (uint8_t method : b) {
        if (method == kMethodNoAuth) {
          out.insert(out.end(), {kSocks5, kMethodNoAuth});
          stage_ = Stage::kRequestHead;
          need_ = 4;
          return;
        }
      }
      return fail("the SOCKS5 client wants authentication; only \"no authentication\" is offered",
                  out, {kSocks5, kNoAcceptableMethod});
    case Stage::kRequestHead:
      if (b[0] != kSocks5) return fail("SOCKS5 request with version " + std::to_string(b[0]), out);
      if (b[1] != kCommandConnect)
        return fail("only CONNECT is supported", out, reply(SocksReply::kCommandNotSupported));
      address_type_ = b[3];
      if (address_type_ == kAtypIpv4) {
        stage_ = Stage::kAddressAndPort;
        need_ = 4 + 2;
      } else if (address_type_ == kAtypIpv6) {
        stage_ = Stage::kAddressAndPort;
        need_ = 16 + 2;
      } else if (address_type_ == kAtypDomain) {
        stage_ = Stage::kDomainLength;
        need_ = 1;
      } else {
        return fail("unknown SOCKS5 address type " + std::to_string(address_type_), out,
                    reply(SocksReply::kAddressTypeNotSupported));
      }
      return;
    case Stage::kDomainLength:
      if (b[0] == 0) return fail("empty domain name", out, reply(SocksReply::kGeneralFailure));
      stage_ = Stage::kAddressAndPort;
      need_ = b[0] + 2u;
      return;
    case Stage::kAddressAndPort: {
      const size_t address_length = b.size() - 2;
      if (address_type_ == kAtypIpv4) target_.host = ip_text(AF_INET, b.data());
      else if (address_type_ == kAtypIpv6) target_.host = ip_text(AF_INET6, b.data());
      else target_.host.assign(b.begin(), b.begin() + static_cast<ptrdiff_t>(address_length));
      target_.port = port_at(b, address_length);
      break;
    }
    case Stage::kSocks4Address: {
      target_.port = port_at(b, 0);
      // 0.0.0.x with x != 0: SOCKS4a, the host name follows the user id.
      socks4a_ = b[2] == 0 && b[3] == 0 && b[4] == 0 && b[5] != 0;
      if (!socks4a_) target_.host = ip_text(AF_INET, b.data() + 2);
      stage_ = Stage::kSocks4UserId;
      return;
    }
    case Stage::kSocks4UserId:
      if (socks4a_) {
        stage_ = Stage::kSocks4Host;
        return;
      }
      break;  // plain SOCKS4: the request is complete
    case Stage::kSocks4Host:
      if (b.empty()) return fail("empty SOCKS4a host name", out, reply(SocksReply::kGeneralFailure));
      target_.host.assign(b.begin(), b.end());
      break;
    case Stage::kDone:
      return;
  }
  // The request is whole.
  stage_ = Stage::kDone;
  need_ = 0;
  if (target_.port == 0 || !is_valid_host(target_.host))
    return fail("bad target " + target_.to_string(), out, reply(SocksReply::kGeneralFailure));
  status_ = Status::kReady;
}

void SocksHandshake::fail(const std::string& why, std::vector<uint8_t>& out,
                          std::vector<uint8_t> answer) {
  status_ = Status::kFailed;
  stage_ = Stage::kDone;
  need_ = 0;
  buffer_.clear();
  error_ = why;
  out.insert(out.end(), answer.begin(), answer.end());
}

std::vector<uint8_t> SocksHandshake::reply(SocksReply code) const {
  if (version_ == kSocks4) {
    // VN 0, CD, and DSTPORT/DSTIP that clients ignore.
    return {0, code == SocksReply::kSucceeded ? kSocks4Granted : kSocks4Rejected, 0, 0, 0, 0, 0, 0};
  }
  // VER REP RSV ATYP BND.ADDR BND.PORT: the bound address means nothing across the
  // tunnel, so 0.0.0.0:0 (clients do not use it for CONNECT).
  return {kSocks5, static_cast<uint8_t>(code), 0, kAtypIpv4, 0, 0, 0, 0, 0, 0};
}

}  // namespace natfwd
