// relay.conf: keys are the relay's long flags, each value checked as the flag's.
#include <catch2/catch.hpp>

#include "relay_config_file.h"
#include "relay_options.h"

using namespace natfwd;
using namespace natfwd::relay;

namespace {

std::variant<config::ConfigFile, std::string> parse(std::string_view text) {
  return config::parse_config_text("relay.conf", text, relay_config_schema());
}

std::string error_of(std::string_view text) {
  auto result = parse(text);
  REQUIRE(std::holds_alternative<std::string>(result));
  return std::get<std::string>(result);
}

std::vector<std::string> words_of(std::string_view text, std::vector<std::string> command_line) {
  auto result = parse(text);
  if (auto* e = std::get_if<std::string>(&result)) FAIL(*e);
  command_line.insert(command_line.begin(), "relay");
  return config::file_argument_words(relay_file_arguments(std::get<config::ConfigFile>(result)),
                                     config::scan_command_line(command_line, relay_flags()), false);
}

// Parses the file's words followed by the command line, as main() does.
RelayOptions options_of(std::string_view text, std::vector<std::string> command_line) {
  std::vector<std::string> args = words_of(text, command_line);
  args.insert(args.begin(), "relay");
  args.insert(args.end(), command_line.begin(), command_line.end());
  std::vector<char*> argv;
  for (auto& arg : args) argv.push_back(arg.data());
  argv.push_back(nullptr);
  RelayOptions options;
  std::string error;
  INFO(error);
  REQUIRE(parse_relay_options(static_cast<int>(args.size()), argv.data(), options, error));
  return options;
}

}  // namespace

TEST_CASE("relay.conf values are checked as the flags are, with the line and key") {
  CHECK(error_of("[relay]\nlisten = 0.0.0.0:99999\n").rfind("relay.conf:2: key 'listen': ", 0) == 0);
  CHECK(error_of("[relay]\n\nmax-allocations = lots\n") ==
        "relay.conf:3: key 'max-allocations': 'lots' is not a number from 1 to 1000000");
  CHECK(error_of("[relay]\nmax-allocations-per-address = 0\n") ==
        "relay.conf:2: key 'max-allocations-per-address': '0' is not a number from 1 to 1000000");
  CHECK(error_of("[relay]\nallow-peer = 10.0.0.0/8;nonsense\n") ==
        "relay.conf:2: key 'allow-peer': 'nonsense' is not an address or CIDR range");
  CHECK(error_of("[relay]\nno-turn = maybe\n") == "relay.conf:2: key 'no-turn': give true or false");
  CHECK(error_of("[relay]\nlisten = 127.0.0.1:0\nmetrics-typo = 1\n").rfind("relay.conf:3: unknown key 'metrics-typo'", 0) == 0);
  CHECK(error_of("[peer]\n").rfind("relay.conf:1: unknown group [peer] (known: [relay])", 0) == 0);
}

TEST_CASE("relay.conf gives options; the command line overrides them") {
  const char* file =
      "[relay]\n"
      "listen = 127.0.0.1:0\n"
      "realm = example.org\n"
      "no-turn = false\n"
      "verbose = true\n"
      "turn-server = a.example:3478;b.example:3479\n"
      "relay-ports = 50000-50100\n"
      "max-allocations-per-address = 16\n";
  CHECK(RelayOptions{}.max_allocations_per_address == 128);
  RelayOptions options = options_of(file, {});
  CHECK(options.max_allocations_per_address == 16);
  CHECK(options.listen.to_string() == "127.0.0.1:0");
  CHECK(options.realm == "example.org");
  CHECK_FALSE(options.no_turn);
  CHECK(options.verbose);
  REQUIRE(options.turn_servers.size() == 2);
  CHECK(options.turn_servers[1].to_string() == "b.example:3479");
  CHECK(options.relay_port_min == 50000);

  options = options_of(file, {"--listen", "127.0.0.2:0", "--turn-server", "c.example:1"});
  CHECK(options.listen.to_string() == "127.0.0.2:0");
  REQUIRE(options.turn_servers.size() == 1);  // the command line's list replaces the file's
  CHECK(options.turn_servers[0].to_string() == "c.example:1");
  CHECK(options.realm == "example.org");
}

TEST_CASE("--relay-address: one IP of each family; [::] listens dual-stack") {
  RelayOptions options =
      options_of("[relay]\nrelay-address = 203.0.113.5;2001:db8::5\n", {"--listen", "[::]:3478"});
  CHECK(options.relay_ipv4 == "203.0.113.5");
  CHECK(options.relay_ipv6 == "2001:db8::5");
  CHECK(options.listen == HostPort{"::", 3478});
  CHECK(RelayOptions{}.relay_ipv4.empty());
  CHECK(RelayOptions{}.relay_ipv6.empty());
  CHECK(error_of("[relay]\nrelay-address = relay.example\n") ==
        "relay.conf:2: key 'relay-address': 'relay.example' is not an IP address of this host");
  CHECK(error_of("[relay]\nrelay-address = ::\n") ==
        "relay.conf:2: key 'relay-address': '::' is not an IP address of this host");
  std::vector<std::string> args = {"relay", "--relay-address", "203.0.113.5", "--relay-address",
                                   "203.0.113.6"};
  std::vector<char*> argv;
  for (auto& arg : args) argv.push_back(arg.data());
  argv.push_back(nullptr);
  std::string error;
  RelayOptions twice;
  REQUIRE_FALSE(parse_relay_options(static_cast<int>(args.size()), argv.data(), twice, error));
  CHECK(error ==
        "--relay-address: two IPv4 addresses (203.0.113.5, 203.0.113.6); give one of each "
        "family at most");
}

TEST_CASE("the shipped relay.conf.example loads") {
  config::FileText example = config::read_config_file(NATFWD_SOURCE_DIR "/dist/relay.conf.example");
  REQUIRE(example.found);
  auto result = parse(example.text);
  if (auto* e = std::get_if<std::string>(&result)) FAIL(*e);
  CHECK(options_of(example.text, {}).listen.to_string() == "0.0.0.0:3478");
}
