// Logging to stderr: "<program>: <level>: message". One line per event.
// When stderr is the systemd journal (JOURNAL_STREAM names stderr's device and inode,
// see systemd.exec(5)), lines are "<N>message" instead: N is the sd-daemon(3) priority
// (3 error, 4 warning, 6 info, 7 debug), and the journal adds the time and the unit.
//
// Network garbage is the sender's fault: log it with log_warn_limited so that a remote
// sender cannot flood the log.
#pragma once

#include <glib.h>
#include <sys/types.h>

#include <map>
#include <string>
#include <string_view>

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
// How warn_limited decides, per key: the first kLinesPerMinute lines of a minute are
// written, the rest counted; the first line of the next minute is preceded by
// "KEY: N more like this in the last minute". Time is an argument (fake clock tests).
class LineLimiter {
 public:
  static constexpr int kLinesPerMinute = 5;
  struct Decision {
    bool write = false;
    int suppressed_before = 0;  // > 0: report this many suppressed lines first
  };
  Decision on_line(const std::string& key, gint64 now_us);

 private:
  struct Window {
    gint64 start_us = 0;
    int count = 0;
  };
  std::map<std::string, Window> windows_;
};

// At most a few lines per key per minute; the rest are counted and summarised.
void warn_limited(const char* key, const char* format, ...) G_GNUC_PRINTF(2, 3);

// One log line, without the newline; `journal` picks the journald form. Pure.
// The level a GLib or libnice log message is written at.
Level library_level(GLogLevelFlags flags, std::string_view message);

std::string format_line(std::string_view program, Level level, std::string_view message,
                        bool journal);
// Whether $JOURNAL_STREAM ("DEV:INODE", decimal) names this device and inode. Pure.
bool journal_stream_matches(const char* journal_stream, dev_t device, ino_t inode);

// The program's one "ready" line (or any other contract line) on stdout, flushed.
void ready(const char* format, ...) G_GNUC_PRINTF(1, 2);

}  // namespace natfwd::log
