// Logging to stderr: "<program>: <level>: message". One line per event.
//
// Network garbage is the sender's fault: log it with log_warn_limited so that a remote
// sender cannot flood the log.
#pragma once

#include <glib.h>

namespace natfwd::log {

enum class Level { kError = 0, kWarn = 1, kInfo = 2, kDebug = 3 };

// Sets the program name and level; routes GLib/libnice messages through the same
// filter. NATFWD_DEBUG=1 forces kDebug; NATFWD_DEBUG=all adds the libraries' own
// debug output (very verbose: libnice logs every datagram).
void init(const char* program, Level level);
bool enabled(Level level);

void error(const char* format, ...) G_GNUC_PRINTF(1, 2);
void warn(const char* format, ...) G_GNUC_PRINTF(1, 2);
void info(const char* format, ...) G_GNUC_PRINTF(1, 2);
void debug(const char* format, ...) G_GNUC_PRINTF(1, 2);
// At most a few lines per key per minute; the rest are counted and summarised.
void warn_limited(const char* key, const char* format, ...) G_GNUC_PRINTF(2, 3);

// The program's one "ready" line (or any other contract line) on stdout, flushed.
void ready(const char* format, ...) G_GNUC_PRINTF(1, 2);

}  // namespace natfwd::log
