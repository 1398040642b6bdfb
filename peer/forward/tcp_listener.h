// A listening TCP socket for -L and -D: BIND:PORT, non-blocking, SO_REUSEADDR.
#pragma once

#include <string>

#include <gio/gio.h>

#include "address.h"

namespace natfwd {

struct TcpListenResult {
  GSocket* socket = nullptr;  // owned by the caller; nullptr on failure
  std::string bound;          // "127.0.0.1:40123": the address really bound (PORT 0 resolved)
  std::string error;          // one sentence on failure
  bool bad_address = false;   // the failure is the user's spelling (exit 2), not the system
};

TcpListenResult listen_tcp(const HostPort& listen);

}  // namespace natfwd
