// The server side of a SOCKS handshake, without I/O: SOCKS5 (RFC 1928; method "no
// authentication required" only, CONNECT only, IPv4, IPv6 and domain names) and
// SOCKS4 with the 4a extension (a host name after the user id when DSTIP is 0.0.0.x).
//
// The caller reads exactly wanted() bytes at a time and feeds them, so it never reads
// past the request: whatever the client sends after it belongs to the target. feed()
// returns what to send back at once (SOCKS5's method selection, or an error reply).
// When status() is kReady, target() is where the client wants to go; the caller asks
// the serving peer and sends reply() with its answer.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "address.h"

namespace natfwd {

// RFC 1928 section 6 reply codes; SOCKS4 knows only granted/rejected.
enum class SocksReply : uint8_t {
  kSucceeded = 0x00,
  kGeneralFailure = 0x01,
  kNotAllowedByRuleset = 0x02,
  kNetworkUnreachable = 0x03,
  kHostUnreachable = 0x04,
  kConnectionRefused = 0x05,
  kCommandNotSupported = 0x07,
  kAddressTypeNotSupported = 0x08,
};

// The serving peer's StreamOpenResult status (or kOpenFailedLocally) as a SOCKS reply.
SocksReply socks_reply_for_stream_status(int status);

class SocksHandshake {
 public:
  enum class Status { kNeedMore, kReady, kFailed };

  size_t wanted() const;
  std::vector<uint8_t> feed(std::span<const uint8_t> bytes);
  Status status() const { return status_; }
  int version() const { return version_; }          // 4 or 5, 0 before the first byte
  const HostPort& target() const { return target_; }
  const std::string& error() const { return error_; }  // why kFailed
  std::vector<uint8_t> reply(SocksReply code) const;

 private:
  enum class Stage {
    kStart,           // VER + NMETHODS (5) or VN + CD (4)
    kMethods,         // 5: NMETHODS method bytes
    kRequestHead,     // 5: VER CMD RSV ATYP
    kDomainLength,    // 5: the length byte of a domain name
    kAddressAndPort,  // 5: the address and port
    kSocks4Address,   // 4: DSTPORT DSTIP
    kSocks4UserId,    // 4: the user id up to NUL, one byte at a time
    kSocks4Host,      // 4a: the host name up to NUL, one byte at a time
    kDone,
  };
  void take(uint8_t byte, std::vector<uint8_t>& out);
  void stage_complete(std::vector<uint8_t>& out);
  void fail(const std::string& why, std::vector<uint8_t>& out, std::vector<uint8_t> answer = {});

  Stage stage_ = Stage::kStart;
  Status status_ = Status::kNeedMore;
  int version_ = 0;
  size_t need_ = 2;  // bytes the current stage still waits for (stages of fixed size)
  std::vector<uint8_t> buffer_;
  uint8_t address_type_ = 0;
  bool socks4a_ = false;
  HostPort target_;
  std::string error_;
};

}  // namespace natfwd
