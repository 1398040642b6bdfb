#include "relay_config_file.h"

#include "relay_options.h"

namespace natfwd::relay {
namespace {

using config::KeySpec;
using config::ValueKind;

// Checks a value exactly as the command line would: parse_relay_options on
// "--KEY=VALUE" alone, its message without the "--KEY: " the file's error replaces.
std::function<std::string(const std::string&)> checked_as_flag(const std::string& key) {
  return [key](const std::string& value) -> std::string {
    std::string flag = "--" + key + "=" + value;
    std::string program = "relay";
    char* argv[] = {program.data(), flag.data(), nullptr};
    RelayOptions options;
    std::string error;
    if (parse_relay_options(2, argv, options, error)) return {};
    const std::string prefix = "--" + key + ": ";
    if (error.rfind(prefix, 0) == 0) error = error.substr(prefix.size());
    return error;
  };
}

KeySpec text(const std::string& key) { return {key, ValueKind::kText, checked_as_flag(key)}; }
KeySpec list(const std::string& key) { return {key, ValueKind::kList, checked_as_flag(key)}; }
KeySpec on_off(const std::string& key) { return {key, ValueKind::kSwitch, nullptr}; }

}  // namespace

const config::ConfigSchema& relay_config_schema() {
  static const config::ConfigSchema schema = {
      {"relay",
       false,
       {
           text("listen"),
           text("state-dir"),
           on_off("verbose"),
           text("max-peers-per-address"),
           text("max-registrations-per-minute"),
           text("max-new-names-per-hour"),
           text("max-sessions-per-minute"),
           text("name-expiry"),
           text("tls-listen"),
           // --cert and --key go together: checked together by the option parser.
           {"cert", ValueKind::kText, nullptr},
           {"key", ValueKind::kText, nullptr},
           text("auth-secret-file"),
           text("realm"),
           list("turn-server"),
           on_off("no-turn"),
           list("allow-peer"),
           text("max-allocations-per-user"),
           text("max-allocations-per-address"),
           text("max-allocations"),
           text("threads"),
           text("bandwidth-cap"),
           list("relay-address"),
           text("relay-ports"),
           text("alternate-address"),
           text("alternate-port"),
           text("metrics"),
           text("publish-domain"),
           text("publish-http"),
           list("allow-publisher"),
           list("publish-address"),
           text("publish-ports"),
           text("publish-max-visitors"),
           text("publish-max-visitors-total"),
           text("publish-max-new-visitors-per-minute"),
           text("publish-max-new-visitors-per-minute-total"),
           text("publish-bandwidth-cap"),
           text("publish-bandwidth-cap-total"),
       }},
  };
  return schema;
}

const std::vector<config::FlagSpec>& relay_flags() {
  static const std::vector<config::FlagSpec> flags = [] {
    std::vector<config::FlagSpec> all;
    for (const KeySpec& key : relay_config_schema()[0].keys)
      all.push_back({key.name, 0, key.kind != ValueKind::kSwitch});
    for (auto& flag : all) {
      if (flag.long_name == "listen") flag.short_name = 'l';
      if (flag.long_name == "verbose") flag.short_name = 'v';
    }
    all.push_back({"config", 0, true});
    all.push_back({"help", 'h', false});
    all.push_back({"version", 0, false});
    return all;
  }();
  return flags;
}

std::vector<config::FileArgument> relay_file_arguments(const config::ConfigFile& file) {
  std::vector<config::FileArgument> arguments;
  for (const config::Section& section : file.sections)
    config::append_flag_arguments(section, relay_config_schema()[0], arguments);
  return arguments;
}

bool relay_arguments_with_config(int argc, char** argv, std::vector<std::string>& args,
                                 std::string& error) {
  args.assign(argv, argv + argc);
  const config::CommandLineScan command_line = config::scan_command_line(args, relay_flags());
  if (command_line.help) return true;
  std::string path;
  auto loaded =
      config::load_config_file(command_line, kDefaultRelayConfigPath, relay_config_schema(), path);
  if (auto* message = std::get_if<std::string>(&loaded)) {
    error = *message;
    return false;
  }
  const std::vector<std::string> words = config::file_argument_words(
      relay_file_arguments(std::get<config::ConfigFile>(loaded)), command_line, false);
  args.insert(args.begin() + 1, words.begin(), words.end());
  return true;
}

}  // namespace natfwd::relay
