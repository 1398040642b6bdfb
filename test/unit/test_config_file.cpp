// The config file parser: groups, keys, values and the line of every error, without I/O.
#include <catch2/catch.hpp>

#include "config_file.h"

using namespace natfwd::config;

namespace {

const ConfigSchema& schema() {
  static const ConfigSchema s = {
      {"main",
       false,
       {
           {"relay", ValueKind::kText,
            [](const std::string& v) { return v.find(':') == std::string::npos ? "'" + v + "' has no port" : ""; }},
           {"force-relay", ValueKind::kSwitch, nullptr},
           {"serve", ValueKind::kList, nullptr},
       }},
      {"serve", true, {{"target", ValueKind::kText, nullptr, true}, {"port", ValueKind::kText, nullptr}}},
  };
  return s;
}

std::string error_of(std::string_view text) {
  auto parsed = parse_config_text("f.conf", text, schema());
  REQUIRE(std::holds_alternative<std::string>(parsed));
  return std::get<std::string>(parsed);
}

ConfigFile parsed(std::string_view text) {
  auto result = parse_config_text("f.conf", text, schema());
  if (auto* e = std::get_if<std::string>(&result)) FAIL(*e);
  return std::get<ConfigFile>(result);
}

}  // namespace

TEST_CASE("a good file gives its sections, values and lines in order") {
  const auto file = parsed(
      "# comment\n"
      "\n"
      "[main]\n"
      "relay = vps.example:3478  \n"
      "force-relay=true\n"
      "serve = a:1;b:2;\n"
      "[serve ssh]\n"
      "  target = buffalo:22\n");
  REQUIRE(file.sections.size() == 2);
  const Section& main = file.sections[0];
  CHECK(main.group == "main");
  CHECK(main.label.empty());
  CHECK(main.line == 3);
  REQUIRE(main.values.size() == 3);
  CHECK(main.values[0].values == std::vector<std::string>{"vps.example:3478"});
  CHECK(main.values[0].line == 4);
  CHECK(main.find("force-relay")->values[0] == "true");
  CHECK(main.find("serve")->values == std::vector<std::string>{"a:1", "b:2"});
  CHECK(file.sections[1].group == "serve");
  CHECK(file.sections[1].label == "ssh");
  CHECK(file.sections[1].find("target")->line == 8);
  CHECK(file.sections[1].find("port") == nullptr);
}

TEST_CASE("an empty file or one of comments only has no sections") {
  CHECK(parsed("").sections.empty());
  CHECK(parsed("# nothing\n\n   # here\n").sections.empty());
}

TEST_CASE("every error is one line naming the file, the line and the key") {
  CHECK(error_of("[main]\n\nrelay = nowhere\n") == "f.conf:3: key 'relay': 'nowhere' has no port");
  CHECK(error_of("[main]\nforce-relay = yes\n") == "f.conf:2: key 'force-relay': give true or false");
  CHECK(error_of("[main]\nrelay =\n") == "f.conf:2: key 'relay': no value");
  CHECK(error_of("[main]\nserve = ;\n") == "f.conf:2: key 'serve': no value");
  CHECK_THAT(error_of("[main]\nrelai = x:1\n"),
             Catch::StartsWith("f.conf:2: unknown key 'relai' in [main] (known: relay, force-relay, serve)"));
  CHECK_THAT(error_of("[main]\nrelay = a:1\nrelay = b:2\n"),
             Catch::StartsWith("f.conf:3: key 'relay' repeated (first on line 2)"));
  CHECK_THAT(error_of("relay = a:1\n"), Catch::StartsWith("f.conf:1: key 'relay' comes before any group"));
  for (const std::string& message :
       {error_of("[main]\nrelay = a:1\n[main]\n"), error_of("[serve a]\ntarget=x\n[serve a]\ntarget=y\n")})
    CHECK_THAT(message, Catch::StartsWith("f.conf:3: group [") && Catch::Contains("repeated (first on line 1)"));
}

TEST_CASE("syntax and group errors name their line too") {
  CHECK_THAT(error_of("[main]\nrelay\n"), Catch::StartsWith("f.conf:2: 'relay' is not 'key = value'"));
  CHECK_THAT(error_of("[main\n"), Catch::StartsWith("f.conf:1: '[main' is not a [group] line"));
  CHECK_THAT(error_of("#\n[other]\n"),
             Catch::StartsWith("f.conf:2: unknown group [other] (known: [main], [serve NAME])"));
  CHECK(error_of("[serve]\ntarget = x:1\n") == "f.conf:1: [serve] needs a name, e.g. [serve ssh]");
  CHECK(error_of("[main x]\n") == "f.conf:1: [main] takes no name (write [main])");
  CHECK(error_of("[main]\n[serve ssh]\nport = 2222\n") == "f.conf:2: [serve ssh] needs key 'target'");
}

TEST_CASE("a value with a trailing comment is a bad value, not silently cut") {
  CHECK_THAT(error_of("[main]\nrelay = vps # mine\n"), Catch::StartsWith("f.conf:2: key 'relay'"));
}

TEST_CASE("the command line scan finds long, short and positional arguments") {
  const std::vector<FlagSpec> flags = {{"relay", 0, true}, {"local", 'L', true}, {"verbose", 'v', false},
                                       {"config", 0, true}, {"help", 'h', false}};
  auto scan = scan_command_line({"peer", "--relay", "a:1", "-L2222:h:22", "-v", "-L", "0:h:1",
                                 "--config=/x.conf", "home", "--", "--odd"},
                                flags);
  CHECK(scan.flags == std::set<std::string>{"relay", "local", "verbose", "config"});
  CHECK(scan.positionals == std::vector<std::string>{"home", "--odd"});
  CHECK(scan.config_path == "/x.conf");
  CHECK_FALSE(scan.help);
  CHECK(scan_command_line({"peer", "--config", "/y"}, flags).config_path == "/y");
  scan = scan_command_line({"peer", "-vL", "0:h:1", "home"}, flags);
  CHECK(scan.flags == std::set<std::string>{"verbose", "local"});
  CHECK(scan.positionals == std::vector<std::string>{"home"});
  CHECK(scan_command_line({"peer", "-vL0:h:1"}, flags).positionals.empty());
  CHECK(scan_command_line({"peer", "-vh"}, flags).help);
  CHECK(scan_command_line({"peer", "-h"}, flags).help);
  CHECK(scan_command_line({"peer", "--help-all"}, flags).help);
  // An unknown flag is recorded and left for the option parser to refuse.
  CHECK(scan_command_line({"peer", "--bogus", "x"}, flags).positionals == std::vector<std::string>{"x"});
}

TEST_CASE("the file's arguments go first; a repeatable flag on the command line replaces its list") {
  const std::vector<FileArgument> from_file = {{"relay", "a:1", false}, {"force-relay", "", false},
                                               {"serve", "h:1", true},  {"serve", "h:2", true},
                                               {"", "home", false}};
  const std::vector<FlagSpec> flags = {{"relay", 0, true}, {"serve", 0, true}, {"force-relay", 0, false}};
  auto words = file_argument_words(from_file, scan_command_line({"p"}, flags), false);
  CHECK(words == std::vector<std::string>{"--relay=a:1", "--force-relay", "--serve=h:1", "--serve=h:2", "home"});
  words = file_argument_words(from_file, scan_command_line({"p", "--serve", "h:3", "--relay", "b:2"}, flags), true);
  // --relay stays: GOption takes the last value, the command line's.
  CHECK(words == std::vector<std::string>{"--relay=a:1", "--force-relay"});
}

TEST_CASE("a missing default file is empty; a missing --config FILE is an error") {
  std::string used;
  CommandLineScan none;
  auto result = load_config_file(none, "/nonexistent/natfwd/x.conf", schema(), used);
  REQUIRE(std::holds_alternative<ConfigFile>(result));
  CHECK(std::get<ConfigFile>(result).sections.empty());
  CommandLineScan given;
  given.config_path = "/nonexistent/natfwd/x.conf";
  result = load_config_file(given, "/other", schema(), used);
  REQUIRE(std::holds_alternative<std::string>(result));
  CHECK(std::get<std::string>(result) == "--config: /nonexistent/natfwd/x.conf: no such file");
}
