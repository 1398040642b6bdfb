// Outgoing UDP datagrams of one wakeup toward one socket, sent together: one
// sendmmsg for the lot, and runs of consecutive datagrams to the same destination with
// the same size (the last of a run may be shorter) as one message with UDP generic
// segmentation offload (UDP_SEGMENT, Linux 4.18; the kernel cuts it back into the
// datagrams). The datagrams on the wire are the same as with one sendto each.
//
// The send itself is a function argument, so that how a batch is split on a partial
// send or an error is tested without sockets (test/unit/test_datagram_batch.cpp).
#pragma once

#include <sys/socket.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <span>
#include <vector>

namespace natfwd::net {

// How the per-datagram paths talk to the kernel; NATFWD_UDP_IO picks one (see
// udp_io_mode_from_environment) so that each fallback can be run on purpose.
enum class UdpIoMode {
  kSingle,  // recvfrom/sendto, one datagram per system call
  kBatch,   // recvmmsg/sendmmsg
  kGso,     // recvmmsg/sendmmsg, and UDP_SEGMENT for runs to one destination
};

// NATFWD_UDP_IO=single|batch|gso; unset or anything else means gso, or batch on a
// kernel without UDP_SEGMENT.
UdpIoMode udp_io_mode_from_environment();

class DatagramBatch {
 public:
  // Sends msgs (all of them, or a prefix); returns how many went, or -errno when the
  // first one failed: the contract of sendmmsg(2).
  using SendFn = std::function<int(std::span<mmsghdr>)>;

  // Datagrams queued before a flush; the caller flushes when this many are queued.
  static constexpr size_t kMaxDatagrams = 64;
  // UDP_MAX_SEGMENTS in linux/udp.h.
  static constexpr size_t kMaxSegments = 64;
  // A GSO message is one IP datagram before segmentation: its UDP payload must fit in
  // 65535 bytes less the IPv6 (40) and UDP (8) headers, the smaller of both families.
  static constexpr size_t kMaxGsoBytes = 65535 - 40 - 8;

  struct Outcome {
    size_t sent = 0;     // datagrams the kernel took
    size_t dropped = 0;  // datagrams lost to a full socket or an error
    int last_error = 0;  // errno of the last failure, 0 if none
  };

  explicit DatagramBatch(UdpIoMode mode = UdpIoMode::kGso) : mode_(mode) {}

  UdpIoMode mode() const { return mode_; }
  bool empty() const { return entries_.empty(); }
  size_t size() const { return entries_.size(); }
  bool full() const { return entries_.size() >= kMaxDatagrams; }

  // Forgets what is queued (its socket is closing).
  void clear() {
    entries_.clear();
    bytes_.clear();
  }

  // Copies `bytes` for the next flush; `to` as filled by to_sockaddr.
  void add(const sockaddr_storage& to, socklen_t to_length, std::span<const std::byte> bytes);
  // The same for one datagram given in pieces, joined in the copy.
  void add(const sockaddr_storage& to, socklen_t to_length,
           std::span<const std::span<const std::byte>> pieces);

  // Sends everything queued through `send` and empties the batch. A full socket
  // (EAGAIN, ENOBUFS) drops the rest, as UDP may; any other error drops only the
  // datagram (or GSO run) it names. A GSO run the kernel refuses is sent again
  // datagram by datagram; when the refusal is for good (EIO: the device cannot
  // checksum; ENOPROTOOPT), this batch stops using GSO, when it is for this run only
  // (EINVAL, EMSGSIZE: a segment over the path MTU), it keeps it.
  Outcome flush(const SendFn& send);
  // The same through sendmmsg(fd, ..., MSG_DONTWAIT).
  Outcome flush(int fd);

 private:
  struct Entry {
    sockaddr_storage to;
    socklen_t to_length;
    size_t offset;  // into bytes_
    size_t size;
  };
  // One sendmmsg slot: entries [first, first + count), segmented when count > 1.
  struct Message {
    size_t first;
    size_t count;
  };

  // Slots for entries [from, end); entries before `singles_until` are not grouped.
  std::vector<Message> plan(size_t from, size_t singles_until) const;
  bool same_destination(const Entry& a, const Entry& b) const;

  UdpIoMode mode_;
  std::vector<Entry> entries_;
  std::vector<std::byte> bytes_;
  // Scratch kept between flushes so that a steady flow allocates nothing.
  std::vector<mmsghdr> headers_;
  std::vector<iovec> iovecs_;
  std::vector<std::byte> controls_;
};

}  // namespace natfwd::net
