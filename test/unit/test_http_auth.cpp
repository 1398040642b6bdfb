// Basic auth of `peer --publish http:PORT,auth=FILE` (peer/serving/htpasswd.h,
// peer/serving/http_auth_gate.h): password hashes against vectors made by `openssl
// passwd` and libxcrypt, the htpasswd file, Authorization values, and the gate's
// request framing on a keep-alive connection.
#include <catch2/catch.hpp>

#include <string>

#include "serving/htpasswd.h"
#include "serving/http_auth_gate.h"

using namespace natfwd;
using Kind = HttpAuthGate::Action::Kind;

namespace {

const auto kNow = std::chrono::steady_clock::time_point{} + std::chrono::hours(1);

// "secret" in every supported form.
const char* const kSecretHashes[] = {
    "$apr1$abcdefgh$h9FWgUz3n9YxylKLlR5SQ/",  // openssl passwd -apr1 -salt abcdefgh
    "$2b$05$abcdefghijklmnopqrstuuOQiyCxlgf/oeuTqixKmWdcYUh4Hjl0a",
    "$2y$05$abcdefghijklmnopqrstuuOQiyCxlgf/oeuTqixKmWdcYUh4Hjl0a",  // htpasswd -B's prefix
    "$5$saltsalt$0IyaXrmV7.sGNS6tirgqHLqX/G.FBvgkYA.lpPdS5sA",
    "$6$saltsalt$TVLlQcbpFVof5W3Yz4DTP6gRstiNuHwwTt6GLc1E5n0U0aDehy0S5knV8wiOQSpT0Y77vwPZN."
    "Pq.H91p5hVO1",
    "{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ=",  // htpasswd -s
};

std::vector<HttpAuthGate::Action> feed(HttpAuthGate& gate, const std::string& text) {
  return gate.receive(std::as_bytes(std::span(text.data(), text.size())));
}

HttpAuthGate alice_gate(int* checks = nullptr) {
  return HttpAuthGate(
      [checks](const std::optional<std::pair<std::string, std::string>>& credentials) {
        if (checks) ++*checks;
        return credentials && credentials->first == "alice" && credentials->second == "secret"
                   ? HttpAuthGate::Check::kAccepted
                   : HttpAuthGate::Check::kRejected;
      },
      "home");
}

const std::string kGood = "GET / HTTP/1.1\r\nHost: home.share.test\r\n"
                          "Authorization: Basic YWxpY2U6c2VjcmV0\r\n\r\n";
const std::string kNone = "GET / HTTP/1.1\r\nHost: home.share.test\r\n\r\n";

}  // namespace

TEST_CASE("password hashes: apr1, bcrypt, SHA-crypt, {SHA} verify the right password only") {
  for (const char* hash : kSecretHashes) {
    INFO(hash);
    CHECK(is_supported_password_hash(hash));
    CHECK(verify_password_hash(hash, "secret"));
    CHECK_FALSE(verify_password_hash(hash, "Secret"));
    CHECK_FALSE(verify_password_hash(hash, ""));
  }
  // More vectors of openssl passwd -apr1: a short salt, an empty password.
  CHECK(apr1_md5_crypt("p@ss w0rd", "xy") == "$apr1$xy$XHcTUdQ1KwrXWJgh.uAz41");
  CHECK(apr1_md5_crypt("", "12345678") == "$apr1$12345678$sHuPAw7VA9xjRbJz7zKV7/");
  CHECK(verify_password_hash("$apr1$xy$XHcTUdQ1KwrXWJgh.uAz41", "p@ss w0rd"));
  // Plain text, DES-crypt and garbage are not hashes this peer accepts.
  CHECK_FALSE(is_supported_password_hash("secret"));
  CHECK_FALSE(is_supported_password_hash("abJnggxhB/yWI"));
  CHECK_FALSE(verify_password_hash("secret", "secret"));
  CHECK_FALSE(verify_password_hash("$6$broken", "secret"));
  CHECK_FALSE(verify_password_hash("$2b$05$abcdefghijklmnopqrstuuOQiyCxlgf/oeuTqixKmWdcYUh4Hjl0a",
                                   std::string("secret\0x", 8)));
}

TEST_CASE("htpasswd files: user:hash lines, comments, errors with file:line") {
  Htpasswd users = Htpasswd::parse(
      "# made with openssl passwd\nalice:$apr1$abcdefgh$h9FWgUz3n9YxylKLlR5SQ/\r\n\n"
      "bob:{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ=\n", "users");
  CHECK(users.users() == 2);
  CHECK(users.verify("alice", "secret", kNow) == Htpasswd::Verdict::kAccepted);
  CHECK(users.verify("bob", "secret", kNow) == Htpasswd::Verdict::kAccepted);
  CHECK(users.verify("alice", "wrong", kNow) == Htpasswd::Verdict::kRejected);
  CHECK(users.verify("carol", "secret", kNow) == Htpasswd::Verdict::kRejected);
  CHECK_THROWS_WITH(Htpasswd::parse("alice:secret\n", "users"),
                    Catch::Contains("users:1") && Catch::Contains("alice"));
  CHECK_THROWS_WITH(Htpasswd::parse("# nobody\n", "users"), Catch::Contains("no user"));
  CHECK_THROWS_WITH(Htpasswd::parse("ok:{SHA}x\nnocolon\n", "users"), Catch::Contains("users:2"));
  CHECK_THROWS_WITH(Htpasswd::load("/nonexistent/htpasswd"), Catch::Contains("/nonexistent"));
}

TEST_CASE("htpasswd: unknown credentials are checked at a bounded rate, known ones always") {
  Htpasswd users = Htpasswd::parse("alice:{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ=\n", "users");
  CHECK(users.verify("alice", "secret", kNow) == Htpasswd::Verdict::kAccepted);
  for (int i = 0; i < static_cast<int>(Htpasswd::kChecksPerMinute) - 1; ++i)
    CHECK(users.verify("alice", "guess" + std::to_string(i), kNow) ==
          Htpasswd::Verdict::kRejected);
  CHECK(users.verify("alice", "one more", kNow) == Htpasswd::Verdict::kBusy);
  // Remembered credentials cost no check.
  CHECK(users.verify("alice", "secret", kNow) == Htpasswd::Verdict::kAccepted);
  CHECK(users.verify("alice", "one more", kNow + std::chrono::seconds(1)) ==
        Htpasswd::Verdict::kRejected);
}

TEST_CASE("Authorization values: the Basic scheme, base64 of user:password") {
  using Pair = std::pair<std::string, std::string>;
  CHECK(parse_basic_credentials("Basic YWxpY2U6c2VjcmV0") == Pair{"alice", "secret"});
  CHECK(parse_basic_credentials("basic   YWxpY2U6d3Jvbmc=") == Pair{"alice", "wrong"});
  // The password may hold colons (RFC 7617 section 2: the user id may not).
  CHECK(parse_basic_credentials("BASIC Ym9iOnBhOnNz") == Pair{"bob", "pa:ss"});
  CHECK_FALSE(parse_basic_credentials("Bearer YWxpY2U6c2VjcmV0"));
  CHECK_FALSE(parse_basic_credentials("Basic"));
  CHECK_FALSE(parse_basic_credentials("Basic YWxpY2U"));       // not a multiple of 4
  CHECK_FALSE(parse_basic_credentials("Basic YWxp!2U6c2VjcmV0"));
  CHECK_FALSE(parse_basic_credentials("Basic YWxpY2U="));      // "alice": no colon
}

TEST_CASE("gate: a first request without credentials gets 401 with the realm, not the target") {
  HttpAuthGate gate = alice_gate();
  const auto actions = feed(gate, kNone);
  REQUIRE(actions.size() == 1);
  CHECK(actions[0].kind == Kind::kAnswer);
  CHECK(actions[0].bytes.starts_with("HTTP/1.1 401 Unauthorized\r\n"));
  CHECK(actions[0].bytes.find("\r\nWWW-Authenticate: Basic realm=\"home\", charset=\"UTF-8\"\r\n") !=
        std::string::npos);
  CHECK(gate.done());
  CHECK(feed(gate, kGood).empty());
}

TEST_CASE("gate: every prefix of a request waits; the whole one goes unchanged") {
  for (size_t n = 0; n < kGood.size(); ++n) {
    HttpAuthGate gate = alice_gate();
    INFO("prefix of " << n);
    CHECK(feed(gate, kGood.substr(0, n)).empty());
    const auto actions = feed(gate, kGood.substr(n));
    REQUIRE(actions.size() == 1);
    CHECK(actions[0].kind == Kind::kForward);
    CHECK(actions[0].bytes == kGood);
  }
}

TEST_CASE("gate: keep-alive requests are each checked, bodies framed by Content-Length") {
  int checks = 0;
  HttpAuthGate gate = alice_gate(&checks);
  const std::string post = "POST /up HTTP/1.1\r\nHost: h\r\nAuthorization: Basic "
                           "YWxpY2U6c2VjcmV0\r\nContent-Length: 12\r\n\r\n";
  // A body that looks like a request head is body, not a request.
  auto actions = feed(gate, post + "GET / HTTP");
  REQUIRE(actions.size() == 1);
  CHECK(actions[0].bytes == post + "GET / HTTP");
  actions = feed(gate, "/1" + kGood);
  REQUIRE(actions.size() == 1);
  CHECK(actions[0].bytes == "/1" + kGood);
  CHECK(checks == 2);
  CHECK(gate.requests_forwarded() == 2);
  // A later request without credentials ends the target's input; nothing is answered
  // here (the target's responses to the earlier requests come first).
  actions = feed(gate, kNone);
  REQUIRE(actions.size() == 1);
  CHECK(actions[0].kind == Kind::kStop);
}

TEST_CASE("gate: chunked bodies are followed to the next request") {
  HttpAuthGate gate = alice_gate();
  const std::string head = "POST / HTTP/1.1\r\nHost: h\r\nAuthorization: Basic YWxpY2U6c2VjcmV0"
                           "\r\nTransfer-Encoding: gzip, chunked\r\n\r\n";
  const std::string body = "5;ext=1\r\nGET /\r\nA\r\n0123456789\r\n0\r\nX-Trailer: 1\r\n\r\n";
  const std::string all = head + body + kNone;
  std::string forwarded;
  bool stopped = false;
  // One byte at a time: the framing holds across every split.
  for (char c : all)
    for (const auto& action : feed(gate, std::string(1, c))) {
      if (action.kind == Kind::kForward) forwarded += action.bytes;
      if (action.kind == Kind::kStop) stopped = true;
    }
  CHECK(forwarded == head + body);
  CHECK(stopped);
}

TEST_CASE("gate: refused framings, more than one Authorization, Upgrade as a tunnel") {
  struct Row {
    const char* extra;
    int status;
  };
  const Row rows[] = {
      {"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n", 400},
      {"Transfer-Encoding: chunked, gzip\r\n", 400},
      {"Content-Length: 5\r\nContent-Length: 6\r\n", 400},
      {"Content-Length: -1\r\n", 400},
      {"Authorization: Basic YWxpY2U6c2VjcmV0\r\n", 400},  // a second one
  };
  for (const Row& row : rows) {
    INFO(row.extra);
    HttpAuthGate gate = alice_gate();
    const auto actions = feed(gate, "POST / HTTP/1.1\r\nHost: h\r\nAuthorization: Basic "
                                    "YWxpY2U6c2VjcmV0\r\n" + std::string(row.extra) + "\r\n");
    REQUIRE(actions.size() == 1);
    CHECK(actions[0].kind == Kind::kAnswer);
    CHECK(actions[0].bytes.starts_with("HTTP/1.1 " + std::to_string(row.status)));
  }
  HttpAuthGate gate = alice_gate();
  const std::string upgrade = "GET /ws HTTP/1.1\r\nHost: h\r\nAuthorization: Basic "
                              "YWxpY2U6c2VjcmV0\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n";
  auto actions = feed(gate, upgrade + "\x81\x05hello");
  REQUIRE(actions.size() == 1);
  CHECK(actions[0].bytes == upgrade + "\x81\x05hello");
  actions = feed(gate, kNone);  // not HTTP any more: passed through
  REQUIRE(actions.size() == 1);
  CHECK(actions[0].kind == Kind::kForward);
  // A busy verifier: 503, no challenge.
  HttpAuthGate busy([](const auto&) { return HttpAuthGate::Check::kBusy; }, "home");
  actions = feed(busy, kGood);
  REQUIRE(actions.size() == 1);
  CHECK(actions[0].bytes.starts_with("HTTP/1.1 503 "));
  CHECK(actions[0].bytes.find("WWW-Authenticate") == std::string::npos);
  // Garbage first: 400.
  HttpAuthGate bad = alice_gate();
  actions = feed(bad, std::string("\x16\x03\x01\x02\x00\r\n\r\n", 9));
  REQUIRE(actions.size() == 1);
  CHECK(actions[0].bytes.starts_with("HTTP/1.1 400 "));
}
