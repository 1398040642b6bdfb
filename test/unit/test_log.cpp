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
