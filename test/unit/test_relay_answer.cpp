// What answered at a --relay address, from the first bytes it sent.
#include <catch2/catch.hpp>

#include <string>

#include "signaling/relay_answer.h"

using namespace natfwd;

TEST_CASE("a natfwd frame, or nothing yet, is no foreign protocol") {
  CHECK(foreign_protocol("") == "");
  CHECK(foreign_protocol("\xc5") == "");
  CHECK(foreign_protocol(std::string("\xc5" "F\x01\x00\x00\x00\x00\x10", 8)) == "");
}

TEST_CASE("servers that speak first or answer our bytes are named") {
  CHECK(foreign_protocol("SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n") ==
        "SSH ('SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3')");
  CHECK(foreign_protocol("HTTP/1.1 400 Bad Request\r\nServer: nginx\r\n") ==
        "HTTP ('HTTP/1.1 400 Bad Request')");
  CHECK(foreign_protocol(std::string("\x15\x03\x03\x00\x02\x02\x46", 7)) == "TLS");
  CHECK(foreign_protocol("220 mail.example.net ESMTP Postfix\r\n") ==
        "'220 mail.example.net ESMTP Postfix'");
  CHECK(foreign_protocol(std::string(60, 'a')) == "'" + std::string(40, 'a') + "...'");
  CHECK(foreign_protocol(std::string("\x00\x01\x02\x03\x04\x05\x06\x07\x08\x09", 10)) ==
        "binary data (00 01 02 03 04 05 06 07 ...)");
}

TEST_CASE("over TLS the raw bytes are judged only when TLS never got going") {
  FirstBytes sshd{"SSH-2.0-OpenSSH_9.2\r\n", ""};
  CHECK(bytes_to_judge(sshd, true) == "SSH-2.0-OpenSSH_9.2\r\n");
  FirstBytes https{std::string("\x16\x03\x03\x00\x7a", 5), "HTTP/1.1 400 Bad Request\r\n"};
  CHECK(bytes_to_judge(https, true) == "HTTP/1.1 400 Bad Request\r\n");
  // TLS 1.3 sends its encrypted handshake as application_data records (type 23).
  FirstBytes tls13{std::string("\x17\x03\x03\x00\xfa", 5), "<!DOCTYPE HTML>\n"};
  CHECK(bytes_to_judge(tls13, true) == "<!DOCTYPE HTML>\n");
  CHECK(foreign_protocol("<!DOCTYPE HTML>\n<html>") == "HTTP ('<!DOCTYPE HTML>')");
  FirstBytes plain{"SSH-2.0-x", ""};
  CHECK(bytes_to_judge(plain, false) == "SSH-2.0-x");
}
