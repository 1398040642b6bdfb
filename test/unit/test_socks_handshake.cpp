// The SOCKS handshake parser: every valid request fed in every split (byte by byte, as
// the listener reads it, and in one go), every strict prefix left incomplete, and bad
// vectors refused with the right reply.
#include <catch2/catch.hpp>

#include <vector>

#include "forward/forward_spec.h"
#include "rendezvous.pb.h"
#include "socks/socks_handshake.h"
#include "tunnel/stream_opening.h"

using namespace natfwd;
using Bytes = std::vector<uint8_t>;

namespace {

Bytes concat(std::initializer_list<Bytes> parts) {
  Bytes out;
  for (const auto& part : parts) out.insert(out.end(), part.begin(), part.end());
  return out;
}

// Feeds `request` the way the listener does: never more than wanted() at a time.
Bytes feed_as_listener(SocksHandshake& handshake, const Bytes& request) {
  Bytes answers;
  size_t at = 0;
  while (handshake.status() == SocksHandshake::Status::kNeedMore && at < request.size()) {
    const size_t n = std::min(handshake.wanted(), request.size() - at);
    REQUIRE(n > 0);
    auto out = handshake.feed(std::span(request.data() + at, n));
    answers.insert(answers.end(), out.begin(), out.end());
    at += n;
  }
  REQUIRE(at == request.size());  // it never wanted more than the request
  return answers;
}

const Bytes kGreeting = {5, 1, 0};
const Bytes kMethodChosen = {5, 0};

struct Valid {
  const char* what;
  Bytes request;
  int version;
  HostPort target;
  Bytes immediate;  // what goes back before the serving peer answered
};

std::vector<Valid> valid_requests() {
  return {
      {"socks5 ipv4", concat({kGreeting, {5, 1, 0, 1, 127, 0, 0, 1, 0x1f, 0x90}}), 5,
       {"127.0.0.1", 8080}, kMethodChosen},
      {"socks5 ipv6", concat({kGreeting, {5, 1, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 22}}),
       5, {"::1", 22}, kMethodChosen},
      {"socks5 domain", concat({kGreeting, {5, 1, 0, 3, 7, 'b', 'u', 'f', 'f', 'a', 'l', 'o', 0, 22}}), 5,
       {"buffalo", 22}, kMethodChosen},
      {"socks5 several methods", concat({{5, 3, 2, 1, 0}, {5, 1, 0, 3, 1, 'h', 1, 0}}), 5, {"h", 256},
       kMethodChosen},
      {"socks4", {4, 1, 0, 80, 10, 0, 0, 7, 'u', 's', 'e', 'r', 0}, 4, {"10.0.0.7", 80}, {}},
      {"socks4 empty user", {4, 1, 0, 80, 10, 0, 0, 7, 0}, 4, {"10.0.0.7", 80}, {}},
      {"socks4a", {4, 1, 0, 22, 0, 0, 0, 1, 'u', 0, 'b', 'u', 'f', 'f', 'a', 'l', 'o', 0}, 4,
       {"buffalo", 22}, {}},
  };
}

}  // namespace

TEST_CASE("valid SOCKS requests give the target, fed as the listener reads") {
  for (const auto& v : valid_requests()) {
    INFO(v.what);
    SocksHandshake handshake;
    REQUIRE(feed_as_listener(handshake, v.request) == v.immediate);
    REQUIRE(handshake.status() == SocksHandshake::Status::kReady);
    REQUIRE(handshake.version() == v.version);
    REQUIRE(handshake.target() == v.target);
    REQUIRE(handshake.wanted() == 0);
  }
}

TEST_CASE("valid SOCKS requests fed byte by byte and in one piece agree") {
  for (const auto& v : valid_requests()) {
    INFO(v.what);
    SocksHandshake bytewise, whole;
    Bytes answers;
    for (uint8_t b : v.request) {
      auto out = bytewise.feed(std::span(&b, 1));
      answers.insert(answers.end(), out.begin(), out.end());
    }
    REQUIRE(answers == v.immediate);
    REQUIRE(whole.feed(v.request) == v.immediate);
    REQUIRE(bytewise.target() == v.target);
    REQUIRE(whole.target() == v.target);
  }
}

TEST_CASE("every strict prefix of a valid request still needs more") {
  for (const auto& v : valid_requests()) {
    for (size_t length = 0; length < v.request.size(); ++length) {
      INFO(v.what << ", prefix of " << length << " bytes");
      SocksHandshake handshake;
      handshake.feed(std::span(v.request.data(), length));
      REQUIRE(handshake.status() == SocksHandshake::Status::kNeedMore);
      REQUIRE(handshake.wanted() > 0);
    }
  }
}

TEST_CASE("bad SOCKS input is refused with the reply RFC 1928 asks for") {
  struct Bad {
    const char* what;
    Bytes request;
    Bytes answer;  // everything sent back
  };
  const Bad bad[] = {
      {"http instead of socks", {'G', 'E', 'T', ' '}, {}},
      {"socks5 no methods", {5, 0}, {}},
      {"socks5 only user/password", {5, 1, 2}, {5, 0xff}},
      {"socks5 BIND", concat({kGreeting, {5, 2, 0, 1, 1, 2, 3, 4, 0, 80}}),
       concat({kMethodChosen, {5, 7, 0, 1, 0, 0, 0, 0, 0, 0}})},
      {"socks5 UDP ASSOCIATE", concat({kGreeting, {5, 3, 0, 1}}), concat({kMethodChosen, {5, 7, 0, 1, 0, 0, 0, 0, 0, 0}})},
      {"socks5 address type 9", concat({kGreeting, {5, 1, 0, 9}}), concat({kMethodChosen, {5, 8, 0, 1, 0, 0, 0, 0, 0, 0}})},
      {"socks5 request version 4", concat({kGreeting, {4, 1, 0, 1}}), kMethodChosen},
      {"socks5 empty domain", concat({kGreeting, {5, 1, 0, 3, 0}}), concat({kMethodChosen, {5, 1, 0, 1, 0, 0, 0, 0, 0, 0}})},
      {"socks5 port 0", concat({kGreeting, {5, 1, 0, 1, 1, 2, 3, 4, 0, 0}}),
       concat({kMethodChosen, {5, 1, 0, 1, 0, 0, 0, 0, 0, 0}})},
      {"socks5 domain with a space", concat({kGreeting, {5, 1, 0, 3, 3, 'a', ' ', 'b', 0, 22}}),
       concat({kMethodChosen, {5, 1, 0, 1, 0, 0, 0, 0, 0, 0}})},
      {"socks4 BIND", {4, 2, 0, 80, 1, 2, 3, 4, 0}, {0, 0x5b, 0, 0, 0, 0, 0, 0}},
      {"socks4a empty host", {4, 1, 0, 80, 0, 0, 0, 1, 0, 0}, {0, 0x5b, 0, 0, 0, 0, 0, 0}},
      {"data after the request", concat({kGreeting, {5, 1, 0, 1, 1, 2, 3, 4, 0, 80, 'x'}}), kMethodChosen},
  };
  for (const auto& b : bad) {
    INFO(b.what);
    SocksHandshake handshake;
    REQUIRE(handshake.feed(b.request) == b.answer);
    REQUIRE(handshake.status() == SocksHandshake::Status::kFailed);
    REQUIRE_FALSE(handshake.error().empty());
    REQUIRE(handshake.wanted() == 0);
  }
}

TEST_CASE("overlong SOCKS4 user ids are refused, not buffered without end") {
  SocksHandshake handshake;
  Bytes request = {4, 1, 0, 80, 1, 2, 3, 4};
  request.insert(request.end(), 300, 'u');
  handshake.feed(request);
  REQUIRE(handshake.status() == SocksHandshake::Status::kFailed);
}

TEST_CASE("the serving peer's answer maps to SOCKS replies") {
  REQUIRE(socks_reply_for_stream_status(wire::StreamOpenResult::OK) == SocksReply::kSucceeded);
  REQUIRE(socks_reply_for_stream_status(wire::StreamOpenResult::NOT_SERVED) ==
          SocksReply::kNotAllowedByRuleset);
  REQUIRE(socks_reply_for_stream_status(wire::StreamOpenResult::NOT_AUTHORIZED) ==
          SocksReply::kNotAllowedByRuleset);
  REQUIRE(socks_reply_for_stream_status(wire::StreamOpenResult::RESOLVE_FAILED) ==
          SocksReply::kHostUnreachable);
  REQUIRE(socks_reply_for_stream_status(wire::StreamOpenResult::CONNECT_FAILED) ==
          SocksReply::kConnectionRefused);
  REQUIRE(socks_reply_for_stream_status(kOpenFailedLocally) == SocksReply::kNetworkUnreachable);

  SocksHandshake v5;
  v5.feed(concat({kGreeting, {5, 1, 0, 1, 1, 2, 3, 4, 0, 80}}));
  REQUIRE(v5.reply(SocksReply::kSucceeded) == Bytes{5, 0, 0, 1, 0, 0, 0, 0, 0, 0});
  REQUIRE(v5.reply(SocksReply::kNotAllowedByRuleset) == Bytes{5, 2, 0, 1, 0, 0, 0, 0, 0, 0});
  SocksHandshake v4;
  v4.feed(Bytes{4, 1, 0, 80, 1, 2, 3, 4, 0});
  REQUIRE(v4.reply(SocksReply::kSucceeded) == Bytes{0, 0x5a, 0, 0, 0, 0, 0, 0});
  REQUIRE(v4.reply(SocksReply::kConnectionRefused) == Bytes{0, 0x5b, 0, 0, 0, 0, 0, 0});
}

TEST_CASE("-D accepts PORT and BIND:PORT") {
  REQUIRE(std::get<HostPort>(parse_socks_listen_spec("1080")) == HostPort{"127.0.0.1", 1080});
  REQUIRE(std::get<HostPort>(parse_socks_listen_spec("0")) == HostPort{"127.0.0.1", 0});
  REQUIRE(std::get<HostPort>(parse_socks_listen_spec("*:1080")) == HostPort{"0.0.0.0", 1080});
  REQUIRE(std::get<HostPort>(parse_socks_listen_spec("[::1]:1080")) == HostPort{"::1", 1080});
  for (const char* bad : {"", "x", "99999", "a:b:c", "bad bind:1", "-1"}) {
    INFO(bad);
    REQUIRE(std::holds_alternative<std::string>(parse_socks_listen_spec(bad)));
  }
}
