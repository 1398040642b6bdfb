// `peer invite --qr`: the drawing against qrencode's own, and the half blocks on a
// grid small enough to check by eye. No I/O.
#include <catch2/catch.hpp>

#include "invite/qr_code.h"

using namespace natfwd;

namespace {

// qrencode -t UTF8 -m 2 'home@gq4tkmbyhe3dqmzqgi2dmnbwgyzdiojr.b2ldzrzkwjt7lrguofhsqfbmqq+vps.example:3478' (qrencode 4.1.1)
constexpr const char* kQrencodeOutput =
    "█████████████████████████████████████████\n"
    "██ ▄▄▄▄▄ █▀ █▀▀██▄▄ ▄▄▀▀▀▄██▀▀▄█ ▄▄▄▄▄ ██\n"
    "██ █   █ █▀ ▄ ██▄█ ▀▄▄▀▄▀▄█▀▀█▀█ █   █ ██\n"
    "██ █▄▄▄█ █▀█ █▄   ▀█▄▄▄▄▄▄ ▄█▀ █ █▄▄▄█ ██\n"
    "██▄▄▄▄▄▄▄█▄█▄█ ▀▄▀▄█▄█▄▀▄█▄█ ▀▄█▄▄▄▄▄▄▄██\n"
    "██  ▄▄ █▄  ▄▄█▄█▄ ▀ █▀ ▀▄▀█ ▄█ ▄█ █▄█▄███\n"
    "██▀ ▄  ▀▄▀▀   ▄█▀█▀█ ▀▀▀ ▀ ▄ ▄  ▀▄██▄▄ ██\n"
    "██▀▀▀▄█ ▄▀▄  ▄▀▀▀▀▄▄▀▀ ▀  ▄ ▄▄▀ ▄ ▄▀▄█ ██\n"
    "██▀     ▄▄ ▄ █▀ ▄ ▄█▄▀▄  ▀█▄█▄ ██▀█▀█  ██\n"
    "██  ▀█▄ ▄▀▀  █▄█▄ ▀ ▀ ██▄▀█▄ ▄  ▄▀▄█▄▄▄██\n"
    "██▄▀ ▀  ▄ ▄ ▀ ▄█▀█▀███▄▀ ▀▀▄█▄█▀ ▄▄▄█  ██\n"
    "██    █ ▄█▄▀ ▄▀▀▀▀█▄█▀ ▀▄ ▄ █▄▀▄▄▄▄█▄▄███\n"
    "██▄█▀▀█ ▄▄ ▄▄█▀ ▄ ██ █▄▀▄▀ ▄▄▄▀ ▄ █▄█ ▄██\n"
    "██ ▀ █▄▀▄▄▄▄▄█▄█▄█▄ ▀▀ █▄ █▄▄█▀▄▄▀▄  ▄███\n"
    "██ █▄▄ █▄  ▄▀ ▄█▀▄ █▀█  █▀ ▄█  ▀▀█▀█▄▄ ██\n"
    "██▄██▄██▄█▀██▄▀▀▀▄▄▄▀ ▀▀ ▀█▄▀▀ ▄▄▄ ▄ ████\n"
    "██ ▄▄▄▄▄ █▄▄ █▀ ▄ ▀██▀█▀▀▀ ▄██ █▄█ ██  ██\n"
    "██ █   █ █  ▄█▄█▄▄▄ ▄▀▀▀  █ ▄ ▄▄ ▄  ▄▀ ██\n"
    "██ █▄▄▄█ █ █  ▄█▀▄▄▄ ▀▀ ▀█▄█▄▀▀▄▀ █▄▄▄ ██\n"
    "██▄▄▄▄▄▄▄█▄▄█▄███▄▄▄▄███▄█▄▄▄█████▄█▄▄▄██\n"
    "█████████████████████████████████████████\n";

}  // namespace

TEST_CASE("an invite code is drawn as qrencode -t UTF8 draws it, module for module") {
  const std::string code =
      "home@gq4tkmbyhe3dqmzqgi2dmnbwgyzdiojr.b2ldzrzkwjt7lrguofhsqfbmqq+vps.example:3478";
  CHECK(qr_code_utf8(code, 2) == kQrencodeOutput);
  // One character less is another symbol: the comparison is not of the frame alone.
  CHECK(qr_code_utf8(code.substr(1), 2) != kQrencodeOutput);
}

TEST_CASE("two module rows a line: light is drawn, dark left blank, quiet zone light") {
  // dark light dark
  // dark dark  light
  // light dark light   (the odd last row pairs with the quiet zone below it)
  const std::vector<std::vector<bool>> modules = {
      {true, false, true}, {true, true, false}, {false, true, false}};
  CHECK(draw_qr_utf8(modules, 0) ==
        " \u2580\u2584\n"
        "\u2588\u2584\u2588\n");
  CHECK(draw_qr_utf8(modules, 2) ==
        "\u2588\u2588\u2588\u2588\u2588\u2588\u2588\n"
        "\u2588\u2588 \u2580\u2584\u2588\u2588\n"
        "\u2588\u2588\u2588\u2584\u2588\u2588\u2588\n"
        "\u2588\u2588\u2588\u2588\u2588\u2588\u2588\n");
}
