// A UDP socket beside one of libnice's: bound to the same local address and port and
// connected to one remote. Linux delivers a datagram to the bound socket that matches
// it best, and a connected one matches its remote exactly, so every datagram from that
// remote lands on the twin while datagrams from anyone else still reach libnice; what
// the twin sends leaves from the same address and port, through the same NAT mapping.
//
// Linux lets a socket bind a UDP address in use only when it and every socket already
// there have SO_REUSEADDR. GLib binds libnice's sockets with it off, and it is turned
// on there only around the twin's bind, so that no stranger can join later (a newer
// unconnected socket would take the datagrams from everyone else). The twin keeps it
// on, so that a further twin of the same socket can still be made: a TURN bridge's
// upstream (turn_udp_bridge.h) and a connected receiver (connected_receiver.h) share
// one libnice socket.
#pragma once

#include <sys/socket.h>

#include <string>

namespace natfwd {

// The twin of libnice's socket `ice_fd`, connected to `remote`, non-blocking: a
// descriptor for the caller to own, or -1 and `why_not` says which step the kernel
// refused and why.
int open_twin_socket(int ice_fd, const sockaddr_storage& remote, std::string& why_not);

}  // namespace natfwd
