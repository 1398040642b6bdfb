// `peer invite --qr`: the invite code as a QR code a phone camera reads off the
// terminal. libqrencode makes the symbol (ISO/IEC 18004, byte mode, error correction
// level L, the smallest version that holds the text); this file only draws it.
//
// Drawn as `qrencode -t UTF8` does, for a terminal with light text on a dark
// background: a light module is a full block and a dark one a space, two module rows
// per text line with the Unicode half blocks, and a light quiet zone of `margin`
// modules on every side (ISO/IEC 18004 section 9.1 asks for 4; 2 reads fine off a
// screen and keeps the code small). No I/O: text in, lines out.
#pragma once

#include <string>
#include <vector>

namespace natfwd {

// The QR modules of `text`, row by row, true for dark. Throws std::runtime_error when
// libqrencode cannot encode it (too long for any version, out of memory).
std::vector<std::vector<bool>> qr_modules(const std::string& text);

// `modules` (square) drawn with half blocks inside a light quiet zone: `margin`
// columns left and right, `margin` / 2 text lines (two module rows each) above and
// below, as `qrencode -t UTF8 -m MARGIN` draws it. Each text line ends in '\n'.
std::string draw_qr_utf8(const std::vector<std::vector<bool>>& modules, int margin);

// Both: what `peer invite --qr` prints under the code.
std::string qr_code_utf8(const std::string& text, int margin);

}  // namespace natfwd
