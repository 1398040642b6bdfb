// `peer netcheck` output: lines for people, one JSON object for scripts. Pure
// functions of the report, so the formats are tested without a network.
#pragma once

#include <optional>
#include <string>

#include "netcheck/netcheck_runner.h"
#include "netcheck/path_verdict.h"

namespace natfwd::netcheck {

// `remote` and `verdict` are set for `peer netcheck NAME`.
struct RemoteSide {
  std::string name;
  SideFacts facts;
  PathVerdict verdict;
};

std::string format_text(const NetcheckOptions& options, const NetcheckReport& report,
                        const std::optional<RemoteSide>& remote);
std::string format_json(const NetcheckOptions& options, const NetcheckReport& report,
                        const std::optional<RemoteSide>& remote);

// A JSON string literal (RFC 8259 section 7).
std::string json_string(const std::string& text);

// Exit status of `peer netcheck`: 0 the relay was reached (UDP, TCP or the proxy), 1
// it was not reached at all or what answered is no natfwd relay; 2 is for usage errors, before anything runs.
int exit_status(const NetcheckReport& report);

}  // namespace natfwd::netcheck
