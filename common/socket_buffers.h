// Kernel socket buffer sizes for the UDP sockets that carry tunnel data.
//
// The system default (~208 KiB) overflows at 100+ MB/s bursts: the receive queue drops
// datagrams, which QUIC's congestion control reads as congestion (NOTES-transport.md:
// 32 MB/s with default buffers). Past net.core.[rw]mem_max only the *FORCE options
// work, and they need CAP_NET_ADMIN; without it the kernel's maximum is used.
#pragma once

namespace natfwd {

// Asks for `bytes` of receive and send buffer on `fd`; returns the receive buffer the
// kernel granted, in the same unit as `bytes` (getsockopt reports double), or -1.
int raise_socket_buffers(int fd, int bytes);

}  // namespace natfwd
