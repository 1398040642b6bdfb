#include "state_dir.h"

#include <unistd.h>

#include <glib.h>

namespace natfwd {

std::string default_state_dir(const std::string& program) {
  if (geteuid() == 0) return "/var/lib/natfwd/" + program;
  const char* xdg = g_getenv("XDG_STATE_HOME");
  std::string base = (xdg && *xdg) ? xdg : std::string(g_get_home_dir()) + "/.local/state";
  return base + "/natfwd/" + program;
}

}  // namespace natfwd
