// The front door's SNI peek (relay/front_door/client_hello.h): a ClientHello that
// OpenSSL's s_client sent with -servername Home.Share.Test, every prefix of it, and
// named bad records.
#include <catch2/catch.hpp>

#include <string>
#include <vector>

#include "front_door/client_hello.h"

using namespace natfwd::relay::front_door;
using Status = ClientHelloSni::Status;

namespace {

// openssl s_client -tls1_3 -servername Home.Share.Test: its first record.
const char* const kHelloHex =
    "16030100f4010000f0030375f47f7d28517baacdf8e5d22eae07071ee5f88bdfb26800bbc95c6f82"
    "a162cd20ce1a6874fc493d3d8f3243b584c114cc8d341002b55914ea78121b51b8b1c31500081302"
    "1303130100ff0100009f00000014001200000f486f6d652e53686172652e54657374000b00040300"
    "0102000a00160014001d0017001e0019001801000101010201030104002300000016000000170000"
    "000d001e001c040305030603080708080809080a080b080408050806040105010601002b00030203"
    "04002d00020101003300260024001d00209f00cf3ebce2b6b2e1ff34d258e83316cb623b9b117137"
    "be28a5c32f6b0b861d";

std::vector<std::byte> from_hex(const std::string& hex) {
  std::vector<std::byte> out;
  for (size_t i = 0; i + 1 < hex.size(); i += 2)
    out.push_back(static_cast<std::byte>(std::stoi(hex.substr(i, 2), nullptr, 16)));
  return out;
}

ClientHelloSni parse(const std::vector<std::byte>& bytes) { return parse_client_hello_sni(bytes); }

}  // namespace

TEST_CASE("a real ClientHello gives its server name, lowercased") {
  const auto hello = from_hex(kHelloHex);
  const ClientHelloSni sni = parse(hello);
  REQUIRE(sni.status == Status::kComplete);
  CHECK(sni.server_name == "home.share.test");
  // Bytes after the first record (the next flight) change nothing.
  auto longer = hello;
  longer.resize(longer.size() + 100, std::byte{0x17});
  CHECK(parse(longer).server_name == "home.share.test");
}

TEST_CASE("every prefix of a ClientHello needs more") {
  const auto hello = from_hex(kHelloHex);
  for (size_t n = 0; n < hello.size(); ++n) {
    INFO("prefix of " << n << " bytes");
    CHECK(parse(std::vector<std::byte>(hello.begin(), hello.begin() + n)).status ==
          Status::kNeedMore);
  }
}

TEST_CASE("a ClientHello without the server_name extension has no name") {
  // Record and handshake headers, legacy_version, random, empty session id, one
  // cipher suite, null compression, no extensions.
  std::string hex = "160301002d" "01000029" "0303" + std::string(64, 'a') + "00" "00021301" "0100";
  const ClientHelloSni sni = parse(from_hex(hex));
  REQUIRE(sni.status == Status::kComplete);
  CHECK(sni.server_name.empty());
}

TEST_CASE("named bad records are invalid") {
  auto hello = from_hex(kHelloHex);
  SECTION("not a handshake record (HTTP)") {
    const std::string get = "GET / HTTP/1.1\r\n";
    CHECK(parse_client_hello_sni(std::as_bytes(std::span(get))).status == Status::kInvalid);
  }
  SECTION("SSL 2 style version byte") {
    hello[1] = std::byte{2};
    CHECK(parse(hello).status == Status::kInvalid);
  }
  SECTION("not a ClientHello") {
    hello[5] = std::byte{2};
    CHECK(parse(hello).status == Status::kInvalid);
  }
  SECTION("record longer than TLS allows") {
    hello[3] = std::byte{0x40};
    hello[4] = std::byte{0x01};
    CHECK(parse(hello).status == Status::kInvalid);
  }
  SECTION("handshake longer than its record") {
    hello[7] = std::byte{0xff};
    CHECK(parse(hello).status == Status::kInvalid);
  }
  SECTION("a server name with a byte no host name has") {
    const std::string name = "Home.Share.Test";
    const std::string hex(kHelloHex);
    std::string name_hex;
    for (char c : name) {
      char two[3];
      snprintf(two, sizeof two, "%02x", static_cast<unsigned char>(c));
      name_hex += two;
    }
    const size_t at = hex.find(name_hex) / 2;
    REQUIRE(at > 0);
    hello[at + 4] = std::byte{'/'};
    CHECK(parse(hello).status == Status::kInvalid);
  }
}
