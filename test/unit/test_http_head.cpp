// The publishing front door's HTTP/1.1 head parser and Host routing
// (relay/front_door/http_head.h): RFC 9112 request heads, every prefix of a good one,
// and named bad heads.
#include <catch2/catch.hpp>

#include <string>

#include "front_door/http_head.h"

using namespace natfwd;
using namespace natfwd::relay::front_door;
using Status = HttpHead::Status;

namespace {

HttpHead parse(const std::string& text) {
  return parse_http_head(std::as_bytes(std::span(text.data(), text.size())));
}

const std::string kCurlHead =
    "GET /index.html HTTP/1.1\r\nHost: Home.Share.Example.NET:8080\r\n"
    "User-Agent: curl/7.88.1\r\nAccept: */*\r\n\r\n";

}  // namespace

TEST_CASE("a curl request head gives its length and the Host without port, lowercased") {
  const HttpHead head = parse(kCurlHead + "body bytes that belong to the peer");
  REQUIRE(head.status == Status::kComplete);
  CHECK(head.length == kCurlHead.size());
  CHECK(head.host == "home.share.example.net");
}

TEST_CASE("every prefix of a good head needs more, never a verdict") {
  for (size_t n = 0; n < kCurlHead.size(); ++n) {
    INFO("prefix of " << n << " bytes");
    CHECK(parse(kCurlHead.substr(0, n)).status == Status::kNeedMore);
  }
}

TEST_CASE("Host forms: IPv6 literal, trailing dot, HTTP/1.0, optional white space") {
  CHECK(parse("GET / HTTP/1.1\r\nHost: [::1]:80\r\n\r\n").host == "[::1]");
  CHECK(parse("GET / HTTP/1.1\r\nhost:home.d.\r\n\r\n").host == "home.d");
  CHECK(parse("HEAD / HTTP/1.0\r\nHOST: \t a.b \r\n\r\n").host == "a.b");
}

TEST_CASE("named bad heads are invalid with a reason") {
  const std::pair<const char*, std::string> bad[] = {
      {"no Host header", "GET / HTTP/1.1\r\nAccept: */*\r\n\r\n"},
      {"more than one Host header", "GET / HTTP/1.1\r\nHost: a.b\r\nHost: c.d\r\n\r\n"},
      {"malformed Host header", "GET / HTTP/1.1\r\nHost: a.b:80x\r\n\r\n"},
      {"malformed Host header", "GET / HTTP/1.1\r\nHost: user@a.b\r\n\r\n"},
      {"malformed Host header", "GET / HTTP/1.1\r\nHost:\r\n\r\n"},
      {"not HTTP/1.x", "GET / HTTP/2.0\r\nHost: a.b\r\n\r\n"},
      {"malformed request line", "GET /\r\nHost: a.b\r\n\r\n"},
      {"malformed request line", "GET / x HTTP/1.1\r\nHost: a.b\r\n\r\n"},
      {"malformed header field", "GET / HTTP/1.1\r\nHost : a.b\r\n\r\n"},
      {"malformed header field", "GET / HTTP/1.1\r\nno colon\r\n\r\n"},
      {"malformed method", "G(T / HTTP/1.1\r\nHost: a.b\r\n\r\n"},
  };
  for (const auto& [reason, text] : bad) {
    INFO(text);
    const HttpHead head = parse(text);
    CHECK(head.status == Status::kInvalid);
    CHECK(std::string(head.reason) == reason);
  }
}

TEST_CASE("binary garbage (a TLS ClientHello) is invalid at once, not waited for") {
  const std::string hello("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 11);
  CHECK(parse(hello).status == Status::kInvalid);
}

TEST_CASE("a head that never ends is invalid once it reaches the limit") {
  std::string endless = "GET / HTTP/1.1\r\nX-Filler: ";
  endless.append(kMaxHeadBytes, 'a');
  CHECK(parse(endless).status == Status::kInvalid);
}

TEST_CASE("NAME.DOMAIN gives NAME; other hosts give nothing") {
  CHECK(published_name("home.share.example.net", "share.example.net") == "home");
  CHECK(published_name("my-box.share.example.net", "share.example.net") == "my-box");
  CHECK_FALSE(published_name("share.example.net", "share.example.net"));
  CHECK_FALSE(published_name("home.example.net", "share.example.net"));
  CHECK_FALSE(published_name("homeshare.example.net", "share.example.net"));
  CHECK_FALSE(published_name("-x.share.example.net", "share.example.net"));
  CHECK_FALSE(published_name("home.share.example.net", ""));
}

TEST_CASE("error pages are complete responses that escape the detail") {
  const std::string page = http_error_response(404, "Not Found", "no <peer> 'x'");
  CHECK(page.starts_with("HTTP/1.1 404 Not Found\r\n"));
  CHECK(page.find("Connection: close\r\n") != std::string::npos);
  CHECK(page.find("no &lt;peer&gt; 'x'") != std::string::npos);
  const size_t body = page.find("\r\n\r\n") + 4;
  CHECK(page.find("Content-Length: " + std::to_string(page.size() - body) + "\r\n") !=
        std::string::npos);
}

TEST_CASE("the head home gets names the visitor in X-Forwarded-For and X-Forwarded-Proto") {
  const std::string body = "GET /next HTTP/1.1\r\n";  // a pipelined request: untouched
  const std::string plain = "GET / HTTP/1.1\r\nHost: home.share.test\r\n\r\n";
  CHECK(with_forwarded_fields(plain + body, plain.size(), "192.0.2.7") ==
        "GET / HTTP/1.1\r\nHost: home.share.test\r\nX-Forwarded-For: 192.0.2.7\r\n"
        "X-Forwarded-Proto: http\r\n\r\n" + body);
  // An existing list gets the visitor appended to its last field; a Proto the visitor
  // claims is replaced by what the relay knows.
  const std::string proxied = "POST /x HTTP/1.1\r\nx-forwarded-for: 10.0.0.1\r\n"
                              "Host: h\r\nX-Forwarded-For: 10.0.0.2 \r\n"
                              "X-Forwarded-Proto: https\r\nContent-Length: 2\r\n\r\n";
  CHECK(with_forwarded_fields(proxied + "ok", proxied.size(), "2001:db8::1") ==
        "POST /x HTTP/1.1\r\nx-forwarded-for: 10.0.0.1\r\nHost: h\r\n"
        "X-Forwarded-For: 10.0.0.2, 2001:db8::1\r\nContent-Length: 2\r\n"
        "X-Forwarded-Proto: http\r\n\r\nok");
  const std::string empty_list = "GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-For:\r\n\r\n";
  CHECK(with_forwarded_fields(empty_list, empty_list.size(), "192.0.2.7") ==
        "GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 192.0.2.7\r\n"
        "X-Forwarded-Proto: http\r\n\r\n");
  // What the parser accepts, the result parses to the same Host.
  const std::string out = with_forwarded_fields(proxied, proxied.size(), "192.0.2.7");
  const HttpHead again = parse_http_head(std::as_bytes(std::span(out)));
  CHECK(again.status == HttpHead::Status::kComplete);
  CHECK(again.host == "h");
  CHECK(again.length == out.size());
}

TEST_CASE("an https publish's redirect keeps the request target and drops the port") {
  const std::string head = "GET /photos/a.jpg?x=1 HTTP/1.1\r\nHost: home.share.test:8080\r\n\r\n";
  const std::string response = https_redirect_response("home.share.test", head);
  CHECK(response.starts_with("HTTP/1.1 308 Permanent Redirect\r\n"));
  CHECK(response.find("\r\nLocation: https://home.share.test/photos/a.jpg?x=1\r\n") !=
        std::string::npos);
  CHECK(response.ends_with("\r\n\r\n"));
  // Not origin form (a proxy's absolute form, OPTIONS *): to the site's root.
  CHECK(https_redirect_response("h", "GET http://evil.test/ HTTP/1.1\r\n\r\n")
            .find("Location: https://h/\r\n") != std::string::npos);
  CHECK(https_redirect_response("h", "OPTIONS * HTTP/1.1\r\n\r\n").find("Location: https://h/\r\n") !=
        std::string::npos);
}
