// `peer netcheck [--relay HOST:PORT] [--json] ...`: see netcheck_command.cpp.
#pragma once

namespace natfwd::netcheck {

// argv[0] is "netcheck". Returns the exit status; exits 2 itself on a usage error.
int netcheck_command(int argc, char** argv);

}  // namespace natfwd::netcheck
