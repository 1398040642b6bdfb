// relay.conf: the relay's flags in a file (see dist/relay.conf.example and relay(1)).
//
//   [relay]
//   listen = 0.0.0.0:3478
//   turn-server = turn1.example:3478;turn2.example:3478
//
// Read from --config FILE, else /etc/natfwd/relay.conf (a missing default file is no
// error). Each key is a long flag; its value is checked as the flag's would be. The
// file's arguments go before the command line's, so a flag given there wins, and a
// repeatable flag given there (--turn-server, --allow-peer) replaces the file's list.
#pragma once

#include <string>
#include <variant>
#include <vector>

#include "config_file.h"

namespace natfwd::relay {

inline constexpr const char* kDefaultRelayConfigPath = "/etc/natfwd/relay.conf";

const config::ConfigSchema& relay_config_schema();
const std::vector<config::FlagSpec>& relay_flags();

std::vector<config::FileArgument> relay_file_arguments(const config::ConfigFile& file);

// argv with the config file's arguments after the program name. On a bad file (or a
// missing --config FILE) returns false with one line in `error`.
bool relay_arguments_with_config(int argc, char** argv, std::vector<std::string>& args,
                                 std::string& error);

}  // namespace natfwd::relay
