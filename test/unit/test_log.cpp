// Log line formats: the usual "program: level: message", and the journald form.
#include <catch2/catch.hpp>

#include "log.h"

using natfwd::log::format_line;
using natfwd::log::journal_stream_matches;
using natfwd::log::Level;

TEST_CASE("log lines on a terminal or file keep the program and level words") {
  CHECK(format_line("relay", Level::kError, "cannot bind", false) == "relay: error: cannot bind");
  CHECK(format_line("peer", Level::kWarn, "x", false) == "peer: warning: x");
  CHECK(format_line("peer", Level::kInfo, "x", false) == "peer: info: x");
  CHECK(format_line("peer", Level::kDebug, "x", false) == "peer: debug: x");
}

TEST_CASE("log lines to the journal carry the sd-daemon priority and nothing else") {
  CHECK(format_line("relay", Level::kError, "cannot bind", true) == "<3>cannot bind");
  CHECK(format_line("relay", Level::kWarn, "garbage", true) == "<4>garbage");
  CHECK(format_line("relay", Level::kInfo, "stopping", true) == "<6>stopping");
  CHECK(format_line("relay", Level::kDebug, "[libnice] x", true) == "<7>[libnice] x");
}

TEST_CASE("JOURNAL_STREAM must name stderr's own device and inode") {
  CHECK(journal_stream_matches("8:12345", 8, 12345));
  CHECK_FALSE(journal_stream_matches("8:12345", 8, 12346));
  CHECK_FALSE(journal_stream_matches("9:12345", 8, 12345));
  CHECK_FALSE(journal_stream_matches(nullptr, 8, 12345));
  CHECK_FALSE(journal_stream_matches("", 8, 12345));
  CHECK_FALSE(journal_stream_matches("8:12345x", 8, 12345));
  CHECK_FALSE(journal_stream_matches("8", 8, 0));
  CHECK_FALSE(journal_stream_matches("garbage", 0, 0));
}

TEST_CASE("library messages: a failure we caused by cancelling is no warning") {
  using natfwd::log::library_level;
  CHECK(library_level(G_LOG_LEVEL_WARNING,
                      "Can't resolve STUN server: Operation was cancelled") == Level::kDebug);
  CHECK(library_level(G_LOG_LEVEL_WARNING, "Can't resolve STUN server: Name or service "
                                           "not known") == Level::kWarn);
  CHECK(library_level(G_LOG_LEVEL_CRITICAL, "assertion failed") == Level::kError);
  CHECK(library_level(G_LOG_LEVEL_MESSAGE, "hello") == Level::kInfo);
  CHECK(library_level(G_LOG_LEVEL_DEBUG, "packet") == Level::kDebug);
  CHECK(library_level(G_LOG_LEVEL_WARNING, "") == Level::kWarn);
}

TEST_CASE("a stranger per second costs five log lines a minute, then one count") {
  natfwd::log::LineLimiter limiter;
  const gint64 second = G_USEC_PER_SEC;
  int written = 0;
  for (int i = 0; i < 60; ++i) written += limiter.on_line("refused-peer", 1000 + i * second).write;
  CHECK(written == 5);
  // Other keys have their own budget.
  CHECK(limiter.on_line("tls-pending", 1000 + 30 * second).write);
  // The next minute starts with the count of what was left out, then writes again.
  const auto next = limiter.on_line("refused-peer", 1000 + 61 * second);
  CHECK(next.suppressed_before == 55);
  CHECK(next.write);
  const auto after = limiter.on_line("refused-peer", 1000 + 62 * second);
  CHECK(after.suppressed_before == 0);
}
