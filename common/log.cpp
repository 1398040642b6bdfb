#include "log.h"

#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>

namespace natfwd::log {
namespace {

const char* g_program = "natfwd";
Level g_level = Level::kInfo;

void vwrite(Level level, const char* format, va_list args) {
  if (!enabled(level)) return;
  static const char* const kNames[] = {"error", "warning", "info", "debug"};
  gchar* message = g_strdup_vprintf(format, args);
  // One fprintf per line so that lines from concurrent processes do not interleave.
  fprintf(stderr, "%s: %s: %s\n", g_program, kNames[static_cast<int>(level)], message);
  g_free(message);
}

GLogWriterOutput glib_writer(GLogLevelFlags flags, const GLogField* fields, gsize n_fields,
                             gpointer) {
  Level level = Level::kDebug;
  if (flags & G_LOG_LEVEL_DEBUG && g_strcmp0(g_getenv("G_MESSAGES_DEBUG"), "all") != 0)
    return G_LOG_WRITER_HANDLED;
  if (flags & (G_LOG_LEVEL_ERROR | G_LOG_LEVEL_CRITICAL)) level = Level::kError;
  else if (flags & G_LOG_LEVEL_WARNING) level = Level::kWarn;
  else if (flags & G_LOG_LEVEL_MESSAGE) level = Level::kInfo;
  if (!enabled(level)) return G_LOG_WRITER_HANDLED;
  const char* domain = "glib";
  const char* message = "";
  for (gsize i = 0; i < n_fields; ++i) {
    if (g_strcmp0(fields[i].key, "GLIB_DOMAIN") == 0 && fields[i].length < 0)
      domain = static_cast<const char*>(fields[i].value);
    if (g_strcmp0(fields[i].key, "MESSAGE") == 0 && fields[i].length < 0)
      message = static_cast<const char*>(fields[i].value);
  }
  static const char* const kNames[] = {"error", "warning", "info", "debug"};
  fprintf(stderr, "%s: %s: [%s] %s\n", g_program, kNames[static_cast<int>(level)], domain,
          message);
  return G_LOG_WRITER_HANDLED;
}

}  // namespace

void init(const char* program, Level level) {
  g_program = program;
  g_level = level;
  const char* debug_env = g_getenv("NATFWD_DEBUG");
  if (debug_env && *debug_env && g_strcmp0(debug_env, "0") != 0) g_level = Level::kDebug;
  // Library debug output (libnice logs every packet it cannot parse as STUN, which
  // includes every QUIC datagram) only when asked for by name: NATFWD_DEBUG=all.
  if (g_strcmp0(debug_env, "all") == 0) g_setenv("G_MESSAGES_DEBUG", "all", FALSE);
  g_log_set_writer_func(glib_writer, nullptr, nullptr);
}

bool enabled(Level level) { return static_cast<int>(level) <= static_cast<int>(g_level); }

#define NATFWD_LOG_FN(name, level)       \
  void name(const char* format, ...) {   \
    va_list args;                        \
    va_start(args, format);              \
    vwrite(level, format, args);         \
    va_end(args);                        \
  }
NATFWD_LOG_FN(error, Level::kError)
NATFWD_LOG_FN(warn, Level::kWarn)
NATFWD_LOG_FN(info, Level::kInfo)
NATFWD_LOG_FN(debug, Level::kDebug)
#undef NATFWD_LOG_FN

void warn_limited(const char* key, const char* format, ...) {
  struct Bucket {
    gint64 window_start_us = 0;
    int count = 0;
  };
  static std::map<std::string, Bucket> buckets;
  constexpr int kLinesPerMinute = 5;
  gint64 now = g_get_monotonic_time();
  Bucket& bucket = buckets[key];
  if (now - bucket.window_start_us > 60 * G_USEC_PER_SEC) {
    if (bucket.count > kLinesPerMinute)
      warn("%s: %d more like this in the last minute", key, bucket.count - kLinesPerMinute);
    bucket = Bucket{now, 0};
  }
  if (++bucket.count > kLinesPerMinute) return;
  va_list args;
  va_start(args, format);
  vwrite(Level::kWarn, format, args);
  va_end(args);
}

void ready(const char* format, ...) {
  va_list args;
  va_start(args, format);
  vfprintf(stdout, format, args);
  va_end(args);
  fputc('\n', stdout);
  fflush(stdout);
}

}  // namespace natfwd::log
