#pragma once

#include <gio/gio.h>

namespace natfwd {

// Closes a TCP connection with RST instead of FIN (SO_LINGER with a zero timeout), so
// that the other end sees a failure, never a clean EOF that looks like a complete
// transfer. Does not drop the caller's reference.
void reset_connection(GSocketConnection* connection);
void reset_socket(GSocket* socket);

}  // namespace natfwd
