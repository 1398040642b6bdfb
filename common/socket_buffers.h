// Kernel settings for the sockets that carry tunnel data: UDP buffer sizes, and the
// congestion control of TURN-over-TCP and published visitors' connections.
//
// The system default (~208 KiB) overflows at 100+ MB/s bursts: the receive queue drops
// datagrams, which QUIC's congestion control reads as congestion (NOTES-transport.md:
// 32 MB/s with default buffers). Past net.core.[rw]mem_max only the *FORCE options
// work, and they need CAP_NET_ADMIN; without it the kernel's maximum is used.
#pragma once

namespace natfwd {

// What a socket carrying a QUIC tunnel asks for (the selected ICE socket, our connected
// receive socket, a punched path's socket): libnice leaves ~208 KiB, QUIC needs a few
// MiB (NOTES-transport.md).
inline constexpr int kTunnelSocketBufferBytes = 8 << 20;

// Asks for `bytes` of receive and send buffer on `fd`; returns the receive buffer the
// kernel granted, in the same unit as `bytes` (getsockopt reports double), or -1.
int raise_socket_buffers(int fd, int bytes);

}  // namespace natfwd

namespace natfwd {

// TURN over TCP carries a whole tunnel in one TCP connection; with loss, CUBIC (the
// usual default) collapses it to ~1 MB/s (scripts/bench). Asks for BBR on `fd`;
// returns false, changing nothing, where the kernel lacks it or does not allow it to
// this process (net.ipv4.tcp_allowed_congestion_control, else CAP_NET_ADMIN).
bool prefer_bbr(int fd);

}  // namespace natfwd
