#pragma once

#include <string>

namespace natfwd {

// Where a program keeps its keys when --state-dir is not given:
//   root:  /var/lib/natfwd/<program>
//   users: $XDG_STATE_HOME/natfwd/<program>  (default ~/.local/state/natfwd/<program>)
std::string default_state_dir(const std::string& program);

}  // namespace natfwd
