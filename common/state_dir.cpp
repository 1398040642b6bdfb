#include "state_dir.h"

#include <unistd.h>

#include <glib.h>

#include <cerrno>
#include <stdexcept>

#include "path_safety.h"

namespace natfwd {

std::string default_state_dir(const std::string& program) {
  if (geteuid() == 0) return "/var/lib/natfwd/" + program;
  const char* xdg = g_getenv("XDG_STATE_HOME");
  std::string base = (xdg && *xdg) ? xdg : std::string(g_get_home_dir()) + "/.local/state";
  return base + "/natfwd/" + program;
}

void open_state_dir(const std::string& dir) {
  if (g_mkdir_with_parents(dir.c_str(), 0700) != 0)
    throw std::runtime_error("cannot create state directory " + dir + ": " + g_strerror(errno));
  const std::string unsafe = unsafe_path_reason(dir, PathKind::kStateDir, "state dir");
  if (!unsafe.empty()) throw std::runtime_error(unsafe);
}

std::string write_private_file(const std::string& path, const std::string& text) {
  GError* error = nullptr;
  if (g_file_set_contents_full(path.c_str(), text.data(), static_cast<gssize>(text.size()),
                               G_FILE_SET_CONTENTS_CONSISTENT, 0600, &error))
    return {};
  std::string why = error ? error->message : "cannot write " + path;
  g_clear_error(&error);
  return why;
}

Identity load_identity(const std::string& dir) {
  open_state_dir(dir);
  return Identity::load_or_create(dir);
}

}  // namespace natfwd
