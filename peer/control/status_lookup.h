// Which running peers `peer status` asks. With --state-dir, that one; with --name NAME,
// the state dir natfwd-peer@NAME.service gives it (SERVICES/peer-NAME, SERVICES being
// /var/lib/natfwd); with neither, the default state dir, every peer-* beside it, and
// every SERVICES/peer-*, so that root on a home server finds its services without
// knowing their flags, and another user learns whose they are.
#pragma once

#include <optional>
#include <string>
#include <vector>

namespace natfwd {

struct StatusLookup {
  std::vector<std::string> state_dirs;  // in the order to ask
  bool explicit_dir = false;            // --state-dir or --name: only that one
};

inline constexpr const char* kServiceStateBase = "/var/lib/natfwd";

StatusLookup status_lookup(const std::optional<std::string>& state_dir,
                           const std::optional<std::string>& name,
                           const std::string& default_state_dir,
                           const std::string& services_base = kServiceStateBase);

// One line for a state dir whose peer this user may not ask (its dir or socket belong
// to another user): who owns it and the command that works; "" when not that case.
std::string status_permission_hint(const std::string& state_dir, int connect_errno);

}  // namespace natfwd
