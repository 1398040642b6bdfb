#include "log.h"

#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <mutex>
#include <string>

#include <sys/stat.h>
#include <unistd.h>

namespace natfwd::log {
namespace {

const char* g_program = "natfwd";
Level g_level = Level::kInfo;
bool g_journal = false;

void write_line(Level level, std::string_view message) {
  const std::string line = format_line(g_program, level, message, g_journal) + "\n";
  // One write per line so that lines from concurrent processes do not interleave.
  fwrite(line.data(), 1, line.size(), stderr);
}

void vwrite(Level level, const char* format, va_list args) {
  if (!enabled(level)) return;
  gchar* message = g_strdup_vprintf(format, args);
  write_line(level, message);
  g_free(message);
}

bool stderr_is_journal() {
  struct stat status {};
  if (fstat(STDERR_FILENO, &status) != 0) return false;
  return journal_stream_matches(g_getenv("JOURNAL_STREAM"), status.st_dev, status.st_ino);
}

GLogWriterOutput glib_writer(GLogLevelFlags flags, const GLogField* fields, gsize n_fields,
                             gpointer) {
  if (flags & G_LOG_LEVEL_DEBUG && g_strcmp0(g_getenv("G_MESSAGES_DEBUG"), "all") != 0)
    return G_LOG_WRITER_HANDLED;
  const char* domain = "glib";
  const char* message = "";
  for (gsize i = 0; i < n_fields; ++i) {
    if (g_strcmp0(fields[i].key, "GLIB_DOMAIN") == 0 && fields[i].length < 0)
      domain = static_cast<const char*>(fields[i].value);
    if (g_strcmp0(fields[i].key, "MESSAGE") == 0 && fields[i].length < 0)
      message = static_cast<const char*>(fields[i].value);
  }
  const Level level = library_level(flags, message);
  if (!enabled(level)) return G_LOG_WRITER_HANDLED;
  write_line(level, std::string("[") + domain + "] " + message);
  return G_LOG_WRITER_HANDLED;
}

}  // namespace

Level library_level(GLogLevelFlags flags, std::string_view message) {
  if (flags & (G_LOG_LEVEL_ERROR | G_LOG_LEVEL_CRITICAL)) return Level::kError;
  if (flags & G_LOG_LEVEL_WARNING) {
    // A library's complaint that an operation failed because we cancelled it (libnice:
    // "Can't resolve STUN server: Operation was cancelled" when an agent goes while it
    // resolves) is our own doing, nothing for an operator to act on.
    constexpr std::string_view kCancelled = "Operation was cancelled";
    if (message.size() >= kCancelled.size() &&
        message.substr(message.size() - kCancelled.size()) == kCancelled)
      return Level::kDebug;
    return Level::kWarn;
  }
  if (flags & G_LOG_LEVEL_MESSAGE) return Level::kInfo;
  return Level::kDebug;
}

std::string format_line(std::string_view program, Level level, std::string_view message,
                        bool journal) {
  // sd-daemon(3) priorities, as syslog's: LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG.
  static const char* const kJournalPrefixes[] = {"<3>", "<4>", "<6>", "<7>"};
  static const char* const kNames[] = {"error", "warning", "info", "debug"};
  const int index = static_cast<int>(level);
  if (journal) return kJournalPrefixes[index] + std::string(message);
  return std::string(program) + ": " + kNames[index] + ": " + std::string(message);
}

bool journal_stream_matches(const char* journal_stream, dev_t device, ino_t inode) {
  if (!journal_stream || !*journal_stream) return false;
  unsigned long long stream_device = 0, stream_inode = 0;
  char rest = 0;
  if (sscanf(journal_stream, "%llu:%llu%c", &stream_device, &stream_inode, &rest) != 2)
    return false;
  return stream_device == static_cast<unsigned long long>(device) &&
         stream_inode == static_cast<unsigned long long>(inode);
}

void init(const char* program, Level level) {
  g_program = program;
  g_level = level;
  g_journal = stderr_is_journal();
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

LineLimiter::Decision LineLimiter::on_line(const std::string& key, gint64 now_us) {
  Decision decision;
  Window& window = windows_[key];
  if (window.count == 0 || now_us - window.start_us > 60 * G_USEC_PER_SEC) {
    if (window.count > kLinesPerMinute) decision.suppressed_before = window.count - kLinesPerMinute;
    window = Window{now_us, 0};
  }
  decision.write = ++window.count <= kLinesPerMinute;
  return decision;
}

void warn_limited(const char* key, const char* format, ...) {
  // The relay's data-plane shards log from their own threads.
  static std::mutex mutex;
  static LineLimiter limiter;
  LineLimiter::Decision decision;
  {
    std::lock_guard lock(mutex);
    decision = limiter.on_line(key, g_get_monotonic_time());
  }
  if (decision.suppressed_before > 0)
    warn("%s: %d more like this in the last minute", key, decision.suppressed_before);
  if (!decision.write) return;
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
