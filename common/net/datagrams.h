// Draining a non-blocking UDP socket: recvmmsg for up to kBatch datagrams per system
// call, or plain recvfrom (UdpIoMode::kSingle). The per-datagram paths (STUN, TURN
// relaying) skip GSocketAddress, see socket_address.h.
#pragma once

#include <sys/socket.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstddef>
#include <cstring>
#include <memory>
#include <span>

#include <sys/uio.h>

#include "log.h"
#include "net/datagram_batch.h"

namespace natfwd::net {

// Reads up to `max_datagrams` datagrams (a bound per wakeup, so that one busy socket
// cannot monopolise the main loop) into `buffer` and hands each to
// `on_datagram(bytes, from, from_length)`, which returns false to stop early. Errors
// other than "nothing more" are ICMP reports on earlier sends (ECONNREFUSED): not ours
// to fix, so they end the batch with a debug line under `what`.
template <typename OnDatagram>
void receive_datagrams(int fd, std::span<std::byte> buffer, int max_datagrams,
                       const char* what, OnDatagram&& on_datagram) {
  for (int i = 0; i < max_datagrams; ++i) {
    sockaddr_storage from{};
    socklen_t from_length = sizeof from;
    const ssize_t n = recvfrom(fd, buffer.data(), buffer.size(), MSG_DONTWAIT,
                               reinterpret_cast<sockaddr*>(&from), &from_length);
    if (n < 0) {
      if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
        log::debug("%s: receive: %s", what, std::strerror(errno));
      return;
    }
    if (!on_datagram(buffer.first(static_cast<size_t>(n)), from, from_length)) return;
  }
}

// receive_datagrams with recvmmsg: one system call returns up to kBatch datagrams.
// Each slot holds a whole UDP payload (64 KiB); the pages of slots a burst never
// reaches are never touched, so they cost address space, not memory.
class DatagramReader {
 public:
  static constexpr size_t kBatch = 32;
  static constexpr size_t kSlotBytes = 65536;

  explicit DatagramReader(UdpIoMode mode) : mode_(mode) {
    const size_t slots = mode_ == UdpIoMode::kSingle ? 1 : kBatch;
    // Not zeroed: zeroing would touch every page.
    buffer_ = std::make_unique_for_overwrite<std::byte[]>(slots * kSlotBytes);
    size_ = slots * kSlotBytes;
    if (mode_ == UdpIoMode::kSingle) return;
    for (size_t i = 0; i < kBatch; ++i) {
      iovecs_[i] = iovec{buffer_.get() + i * kSlotBytes, kSlotBytes};
      headers_[i].msg_hdr.msg_iov = &iovecs_[i];
      headers_[i].msg_hdr.msg_iovlen = 1;
    }
  }

  // As receive_datagrams: up to `max_datagrams`, each to `on_datagram(bytes, from,
  // from_length)`, which returns false to stop early (the rest of a batch already read
  // is then dropped: the caller stops only when the socket's owner went away).
  template <typename OnDatagram>
  void read(int fd, int max_datagrams, const char* what, OnDatagram&& on_datagram) {
    if (mode_ == UdpIoMode::kSingle) {
      receive_datagrams(fd, std::span(buffer_.get(), size_), max_datagrams, what, on_datagram);
      return;
    }
    for (int done = 0; done < max_datagrams;) {
      const size_t want = std::min(kBatch, static_cast<size_t>(max_datagrams - done));
      for (size_t i = 0; i < want; ++i) {
        headers_[i].msg_hdr.msg_name = &from_[i];
        headers_[i].msg_hdr.msg_namelen = sizeof from_[i];
      }
      const int n = recvmmsg(fd, headers_.data(), static_cast<unsigned>(want), MSG_DONTWAIT,
                             nullptr);
      if (n < 0) {
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
          log::debug("%s: receive: %s", what, std::strerror(errno));
        return;
      }
      for (int i = 0; i < n; ++i) {
        const auto bytes = std::span<std::byte>(buffer_.get(), size_).subspan(
            static_cast<size_t>(i) * kSlotBytes, headers_[i].msg_len);
        if (!on_datagram(bytes, from_[i], headers_[i].msg_hdr.msg_namelen)) return;
      }
      done += n;
      if (static_cast<size_t>(n) < want) return;  // drained
    }
  }

 private:
  UdpIoMode mode_;
  std::unique_ptr<std::byte[]> buffer_;
  size_t size_ = 0;
  std::array<mmsghdr, kBatch> headers_{};
  std::array<iovec, kBatch> iovecs_{};
  std::array<sockaddr_storage, kBatch> from_{};
};

}  // namespace natfwd::net
