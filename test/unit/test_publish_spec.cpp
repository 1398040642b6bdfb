// --publish specs (peer/publish/publish_spec.h): the forms the README shows, the
// default host, and named bad specs.
#include <catch2/catch.hpp>

#include "config/peer_options.h"
#include "publish/publish_spec.h"

using namespace natfwd;

TEST_CASE("--publish http:PORT defaults to 127.0.0.1; http:HOST:PORT names the host") {
  auto a = std::get<PublishSpec>(parse_publish_spec("http:8000"));
  CHECK(a.kind == PublishSpec::Kind::kHttp);
  CHECK(a.target == HostPort{"127.0.0.1", 8000});
  auto b = std::get<PublishSpec>(parse_publish_spec("http:wiki.lan:80"));
  CHECK(b.target == HostPort{"wiki.lan", 80});
  auto c = std::get<PublishSpec>(parse_publish_spec("http:[fd00::5]:8080"));
  CHECK(c.target == HostPort{"fd00::5", 8080});
  CHECK(std::string(publish_kind_name(a.kind)) == "http");
  auto d = std::get<PublishSpec>(parse_publish_spec("tls:8443"));
  CHECK(d.kind == PublishSpec::Kind::kTls);
  CHECK(d.target == HostPort{"127.0.0.1", 8443});
  CHECK(std::string(publish_kind_name(d.kind)) == "tls");
  auto e = std::get<PublishSpec>(parse_publish_spec("tcp:22"));
  CHECK(e.kind == PublishSpec::Kind::kTcp);
  CHECK(e.public_port == 0);
  CHECK(e.target == HostPort{"127.0.0.1", 22});
  auto f = std::get<PublishSpec>(parse_publish_spec("tcp:20022:192.168.1.20:22"));
  CHECK(f.public_port == 20022);
  CHECK(f.target == HostPort{"192.168.1.20", 22});
  auto g = std::get<PublishSpec>(parse_publish_spec("tcp:20022:22"));
  CHECK(g.public_port == 20022);
  CHECK(g.target == HostPort{"127.0.0.1", 22});
  auto i = std::get<PublishSpec>(parse_publish_spec("tcp:nas.lan:22"));
  CHECK(i.public_port == 0);
  CHECK(i.target == HostPort{"nas.lan", 22});
  CHECK(std::holds_alternative<std::string>(parse_publish_spec("tcp:99999:22")));
  CHECK(std::holds_alternative<std::string>(parse_publish_spec("http:80:h:8000")));
}

TEST_CASE("--publish options follow the target after commas") {
  auto tcp = std::get<PublishSpec>(parse_publish_spec("tcp:2222:127.0.0.1:22,proxy-protocol"));
  CHECK(tcp.proxy_protocol);
  CHECK(tcp.public_port == 2222);
  CHECK(tcp.target == HostPort{"127.0.0.1", 22});
  auto tls = std::get<PublishSpec>(parse_publish_spec("tls:[fd00::5]:8443,proxy-protocol"));
  CHECK(tls.proxy_protocol);
  CHECK(tls.target == HostPort{"fd00::5", 8443});
  CHECK_FALSE(std::get<PublishSpec>(parse_publish_spec("tcp:22")).proxy_protocol);
  auto http = parse_publish_spec("http:8000,proxy-protocol");
  REQUIRE(std::holds_alternative<std::string>(http));
  CHECK(std::get<std::string>(http).find("X-Forwarded-For") != std::string::npos);
  auto unknown = parse_publish_spec("tcp:22,proxy");
  REQUIRE(std::holds_alternative<std::string>(unknown));
  CHECK(std::get<std::string>(unknown).find("'proxy' in 'tcp:22,proxy'") != std::string::npos);
  CHECK(std::holds_alternative<std::string>(parse_publish_spec("tcp:22,")));
  CHECK(std::holds_alternative<std::string>(parse_publish_spec("tcp:22,proxy-protocol,x")));
}

TEST_CASE("allow-from ranges are kept as written, several per publish") {
  auto spec = std::get<PublishSpec>(parse_publish_spec(
      "http:8000,allow-from=192.168.0.0/16,allow-from=2001:db8::/32,allow-from=203.0.113.9"));
  CHECK(spec.allow_from ==
        std::vector<std::string>{"192.168.0.0/16", "2001:db8::/32", "203.0.113.9"});
  auto both = std::get<PublishSpec>(
      parse_publish_spec("tcp:2222:22,allow-from=10.0.0.0/8,proxy-protocol"));
  CHECK(both.proxy_protocol);
  CHECK(both.allow_from == std::vector<std::string>{"10.0.0.0/8"});
  CHECK(std::get<PublishSpec>(parse_publish_spec("tls:8443")).allow_from.empty());
  for (const char* bad : {"http:80,allow-from=", "http:80,allow-from=10.0.0.0/33",
                          "http:80,allow-from=::/129", "http:80,allow-from=lan",
                          "http:80,allow-from=10.0.0.0/", "http:80,allow-from=10.0.0.0/8x"}) {
    INFO(bad);
    auto parsed = parse_publish_spec(bad);
    REQUIRE(std::holds_alternative<std::string>(parsed));
    CHECK(std::get<std::string>(parsed).find("not an address range") != std::string::npos);
  }
  std::string many = "http:80";
  for (int i = 0; i < 33; ++i) many += ",allow-from=10.0.0." + std::to_string(i);
  CHECK(std::holds_alternative<std::string>(parse_publish_spec(many)));
}

TEST_CASE("bad --publish specs are refused with a message naming them") {
  for (const char* bad : {"", "8000", "http", "http:", "http:0", "http:99999", "http:x",
                          "http:a:b:c", "http:bad host:80", "ftp:21", "HTTP:80",
                          "tls:", "tls:a:b:c",
                          "http:[::1:80"}) {
    INFO(bad);
    auto r = parse_publish_spec(bad);
    REQUIRE(std::holds_alternative<std::string>(r));
    CHECK_FALSE(std::get<std::string>(r).empty());
  }
  CHECK(std::get<std::string>(parse_publish_spec("ftp:21")).find("ftp") != std::string::npos);
}

namespace {

PeerCommandLine parse_peer(std::vector<std::string> words) {
  words.insert(words.begin(), {"peer", "--relay", "127.0.0.1:3478", "--insecure-relay",
                               "--state-dir", "/nonexistent/state"});
  return parse_peer_command_line(words);
}

// The one line a command line that must be refused gets.
std::string usage_error_of(std::vector<std::string> words) {
  const PeerCommandLine parsed = parse_peer(std::move(words));
  REQUIRE(parsed.outcome == PeerCommandLine::Outcome::kUsageError);
  return parsed.error;
}

}  // namespace

TEST_CASE("peer --publish is typed, needs --name, and is enough to run") {
  PeerCommandLine ok = parse_peer({"--name", "home", "--publish", "http:8000"});
  INFO(ok.error);
  REQUIRE(ok.outcome == PeerCommandLine::Outcome::kRun);
  REQUIRE(ok.options.publishes.size() == 1);
  CHECK(ok.options.publishes[0].target == HostPort{"127.0.0.1", 8000});
  CHECK(ok.options.serves.empty());

  PeerCommandLine no_name = parse_peer({"--publish", "http:8000"});
  REQUIRE(no_name.outcome == PeerCommandLine::Outcome::kUsageError);
  CHECK(no_name.error.find("--publish needs --name") != std::string::npos);

  PeerCommandLine twice = parse_peer({"--name", "home", "--publish", "http:8000", "--publish",
                                      "http:8001"});
  REQUIRE(twice.outcome == PeerCommandLine::Outcome::kUsageError);
  CHECK(twice.error.find("one http service") != std::string::npos);

  PeerCommandLine bad = parse_peer({"--name", "home", "--publish", "ftp:21"});
  REQUIRE(bad.outcome == PeerCommandLine::Outcome::kUsageError);
  CHECK(bad.error.rfind("--publish ftp:21: ", 0) == 0);
}

TEST_CASE("--publish https: takes the certificate and key to serve; both are needed") {
  auto a = std::get<PublishSpec>(
      parse_publish_spec("https:8000,cert=/etc/home.crt,key=/etc/home.key,proxy-protocol"));
  CHECK(a.kind == PublishSpec::Kind::kHttps);
  CHECK(std::string(publish_kind_name(a.kind)) == "https");
  CHECK(a.target == HostPort{"127.0.0.1", 8000});
  CHECK(a.cert_file == "/etc/home.crt");
  CHECK(a.key_file == "/etc/home.key");
  CHECK(a.proxy_protocol);
  for (const char* bad : {"https:8000,cert=a.crt", "https:8000,key=a.key",
                          "https:8000,cert=,key=a.key", "tls:8443,cert=a.crt,key=a.key"}) {
    INFO(bad);
    auto r = parse_publish_spec(bad);
    REQUIRE(std::holds_alternative<std::string>(r));
  }
  CHECK(std::get<std::string>(parse_publish_spec("https:8000,cert=a.crt"))
            .find("cert=FILE,key=FILE together") != std::string::npos);
  // Neither file: the certificate comes from ACME.
  auto acme = std::get<PublishSpec>(parse_publish_spec("https:8000"));
  CHECK(acme.kind == PublishSpec::Kind::kHttps);
  CHECK(acme.cert_file.empty());
  CHECK(acme.key_file.empty());
}

TEST_CASE("https without cert=/key= needs --acme-directory, an http(s) URL") {
  PeerCommandLine none = parse_peer({"--name", "home", "--publish", "https:8000"});
  REQUIRE(none.outcome == PeerCommandLine::Outcome::kUsageError);
  CHECK(none.error.find("cert=FILE,key=FILE") != std::string::npos);
  CHECK(none.error.find("--acme-directory URL") != std::string::npos);
  PeerCommandLine acme = parse_peer({"--name", "home", "--publish", "https:8000",
                                     "--acme-directory", "https://ca.test/dir",
                                     "--acme-email", "me@example.org"});
  REQUIRE(acme.outcome == PeerCommandLine::Outcome::kRun);
  CHECK(acme.options.acme_directory == "https://ca.test/dir");
  CHECK(acme.options.acme_email == "me@example.org");
  CHECK(acme.options.acme_ca_file.empty());
  for (const std::vector<std::string>& bad :
       {std::vector<std::string>{"--acme-directory", "ftp://ca.test/dir"},
        std::vector<std::string>{"--acme-directory", "https://ca.test/dir", "--acme-email",
                                 "nobody"},
        std::vector<std::string>{"--acme-directory", "https://ca.test/dir", "--acme-ca-file",
                                 "/nonexistent/ca.pem"}}) {
    std::vector<std::string> args = {"--name", "home", "--publish", "https:8000"};
    args.insert(args.end(), bad.begin(), bad.end());
    INFO(bad.back());
    CHECK(parse_peer(args).outcome == PeerCommandLine::Outcome::kUsageError);
  }
}

TEST_CASE("--publish auth=FILE: http and https (checked after home's TLS end), not with a PROXY header") {
  auto https = std::get<PublishSpec>(
      parse_publish_spec("https:8000,cert=a.crt,key=a.key,auth=/etc/natfwd/users"));
  CHECK(https.auth_file == "/etc/natfwd/users");
  CHECK(std::get<PublishSpec>(parse_publish_spec("http:8000,auth=users")).auth_file == "users");
  for (const char* bad : {"tls:8443,auth=users", "tcp:22,auth=users",
                          "https:8000,cert=a.crt,key=a.key,auth=users,proxy-protocol",
                          "https:8000,cert=a.crt,key=a.key,auth="}) {
    INFO(bad);
    REQUIRE(std::holds_alternative<std::string>(parse_publish_spec(bad)));
  }
  CHECK(std::get<std::string>(parse_publish_spec("tcp:22,auth=users")).find("http and https") !=
        std::string::npos);
}

TEST_CASE("tls and https both answer https://NAME.DOMAIN/: one of them per name") {
  CHECK(usage_error_of({"--name", "home", "--publish", "tls:8443", "--publish",
                        "https:8000,cert=a.crt,key=a.key"})
            .find("one tls or https service for NAME.DOMAIN") != std::string::npos);
  CHECK(usage_error_of({"--name", "home", "--publish", "tls:www.example.org=8443", "--publish",
                        "https:WWW.example.org=8000,cert=a.crt,key=a.key"})
            .find("one tls or https service for www.example.org") != std::string::npos);

  // Several sites from one home: NAME.DOMAIN and custom domains, each its own service.
  PeerCommandLine sites = parse_peer(
      {"--name", "home", "--publish", "https:8000,cert=a.crt,key=a.key", "--publish",
       "https:blog.example.org=8001,cert=b.crt,key=b.key", "--publish",
       "tls:shop.example.org=443", "--publish", "tls:wiki.example.org=443"});
  INFO(sites.error);
  CHECK(sites.outcome == PeerCommandLine::Outcome::kRun);

  CHECK(usage_error_of({"--name", "home", "--publish", "https:8000,cert=a.crt,key=a.key",
                        "--publish", "https:blog.example.org=8000,cert=b.crt,key=b.key"})
            .find("127.0.0.1:8000 is the target of two https publishes") != std::string::npos);

  CHECK(usage_error_of({"--name", "home", "--publish", "http:8000", "--publish",
                        "https:8000,cert=a.crt,key=a.key"})
            .find("published as https and as http") != std::string::npos);

  PeerCommandLine ok = parse_peer({"--name", "home", "--publish", "http:8080", "--publish",
                                   "https:8000,cert=a.crt,key=a.key"});
  INFO(ok.error);
  CHECK(ok.outcome == PeerCommandLine::Outcome::kRun);
}

TEST_CASE("--publish https:DOMAIN= and tls:DOMAIN= name a custom domain, lowercased") {
  auto a = std::get<PublishSpec>(parse_publish_spec(
      "https:WWW.Example.org=192.168.1.5:8000,cert=/etc/home.crt,key=/etc/home.key"));
  CHECK(a.kind == PublishSpec::Kind::kHttps);
  CHECK(a.custom_domain == "www.example.org");
  CHECK(a.target == HostPort{"192.168.1.5", 8000});
  auto b = std::get<PublishSpec>(parse_publish_spec("tls:shop.example.net.=8443,proxy-protocol"));
  CHECK(b.custom_domain == "shop.example.net");
  CHECK(b.target == HostPort{"127.0.0.1", 8443});
  CHECK(b.proxy_protocol);
  CHECK(std::get<PublishSpec>(parse_publish_spec("tls:8443")).custom_domain.empty());
  for (const char* bad : {"http:www.example.org=8000", "tcp:www.example.org=22",
                          "tls:=8443", "tls:localhost=8443", "tls:a_b.example=8443",
                          "tls:192.0.2.1=8443", "tls:www.example.org=", "tls:www.example.org=x"}) {
    INFO(bad);
    REQUIRE(std::holds_alternative<std::string>(parse_publish_spec(bad)));
  }
  CHECK(std::get<std::string>(parse_publish_spec("http:www.example.org=8000"))
            .find("tls and https") != std::string::npos);
}
