#include "invite/qr_code.h"

#include <qrencode.h>

#include <cerrno>
#include <cstring>
#include <memory>
#include <stdexcept>

namespace natfwd {
namespace {

// Light on a dark terminal: a light module is drawn, a dark one left blank.
constexpr const char* kBothLight = "\u2588";   // FULL BLOCK
constexpr const char* kUpperLight = "\u2580";  // UPPER HALF BLOCK
constexpr const char* kLowerLight = "\u2584";  // LOWER HALF BLOCK
constexpr const char* kBothDark = " ";

struct QrCodeFree {
  void operator()(QRcode* code) const { QRcode_free(code); }
};

}  // namespace

std::vector<std::vector<bool>> qr_modules(const std::string& text) {
  // Byte mode, case kept: the code is read back exactly (`peer pair` compares it).
  // Version 0 lets libqrencode take the smallest that holds the text.
  std::unique_ptr<QRcode, QrCodeFree> code(
      QRcode_encodeString(text.c_str(), 0, QR_ECLEVEL_L, QR_MODE_8, 1));
  if (!code)
    throw std::runtime_error("cannot make a QR code of " + std::to_string(text.size()) +
                             " characters: " + strerror(errno));
  const int width = code->width;
  std::vector<std::vector<bool>> modules(width, std::vector<bool>(width));
  for (int y = 0; y < width; ++y)
    for (int x = 0; x < width; ++x)
      modules[y][x] = (code->data[y * width + x] & 1) != 0;  // bit 0: dark
  return modules;
}

std::string draw_qr_utf8(const std::vector<std::vector<bool>>& modules, int margin) {
  const int width = static_cast<int>(modules.size());
  std::string light_line;
  for (int x = 0; x < width + 2 * margin; ++x) light_line += kBothLight;
  light_line += '\n';
  std::string side;
  for (int x = 0; x < margin; ++x) side += kBothLight;

  std::string out;
  for (int line = 0; line < margin / 2; ++line) out += light_line;
  for (int y = 0; y < width; y += 2) {
    out += side;
    for (int x = 0; x < width; ++x) {
      const bool upper_dark = modules[y][x];
      const bool lower_dark = y + 1 < width && modules[y + 1][x];  // below the last: quiet zone
      if (upper_dark && lower_dark) out += kBothDark;
      else if (upper_dark) out += kLowerLight;
      else if (lower_dark) out += kUpperLight;
      else out += kBothLight;
    }
    out += side;
    out += '\n';
  }
  for (int line = 0; line < margin / 2; ++line) out += light_line;
  return out;
}

std::string qr_code_utf8(const std::string& text, int margin) {
  return draw_qr_utf8(qr_modules(text), margin);
}

}  // namespace natfwd
