#include "openssl_handles.h"

#include <openssl/err.h>

namespace natfwd {

std::string openssl_error_text(const char* when_none) {
  const unsigned long code = ERR_get_error();
  ERR_clear_error();
  if (code == 0) return when_none;
  char text[256];
  ERR_error_string_n(code, text, sizeof text);
  return text;
}

}  // namespace natfwd
