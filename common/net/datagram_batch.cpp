#include "net/datagram_batch.h"

#include <netinet/in.h>
#include <netinet/udp.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string_view>

namespace natfwd::net {
namespace {

#ifndef UDP_SEGMENT
constexpr int UDP_SEGMENT = 103;  // linux/udp.h, kernel 4.18
#endif

bool is_full_socket(int error) {
  return error == EAGAIN || error == EWOULDBLOCK || error == ENOBUFS;
}

// The kernel will never segment on this socket: no checksum offload on the route
// (EIO), no such option (ENOPROTOOPT).
bool is_gso_unavailable(int error) { return error == EIO || error == ENOPROTOOPT; }
// The kernel will not segment this run: a segment larger than the path MTU allows
// (GSO never fragments), say toward a client whose datagrams exceed it.
bool is_gso_refused_for_run(int error) { return error == EINVAL || error == EMSGSIZE; }

// UDP_SEGMENT is known to the kernel (4.18 and later). An older kernel would ignore the
// control message and send a run as one large datagram, so it is asked first.
bool kernel_has_udp_gso() {
  const int fd = socket(AF_INET, SOCK_DGRAM, 0);
  if (fd < 0) return false;
  int segment = 0;
  socklen_t length = sizeof segment;
  const bool known = getsockopt(fd, SOL_UDP, UDP_SEGMENT, &segment, &length) == 0;
  close(fd);
  return known;
}

}  // namespace

UdpIoMode udp_io_mode_from_environment() {
  const char* value = std::getenv("NATFWD_UDP_IO");
  const std::string_view text = value ? value : "";
  if (text == "single") return UdpIoMode::kSingle;
  if (text == "batch") return UdpIoMode::kBatch;
  static const bool has_gso = kernel_has_udp_gso();
  return has_gso ? UdpIoMode::kGso : UdpIoMode::kBatch;
}

void DatagramBatch::add(const sockaddr_storage& to, socklen_t to_length,
                        std::span<const std::byte> bytes) {
  entries_.push_back(Entry{to, to_length, bytes_.size(), bytes.size()});
  bytes_.insert(bytes_.end(), bytes.begin(), bytes.end());
}

void DatagramBatch::add(const sockaddr_storage& to, socklen_t to_length,
                        std::span<const std::span<const std::byte>> pieces) {
  const size_t offset = bytes_.size();
  for (const auto& piece : pieces) bytes_.insert(bytes_.end(), piece.begin(), piece.end());
  entries_.push_back(Entry{to, to_length, offset, bytes_.size() - offset});
}

bool DatagramBatch::same_destination(const Entry& a, const Entry& b) const {
  return a.to_length == b.to_length && std::memcmp(&a.to, &b.to, a.to_length) == 0;
}

std::vector<DatagramBatch::Message> DatagramBatch::plan(size_t from, size_t singles_until) const {
  std::vector<Message> messages;
  for (size_t i = from; i < entries_.size();) {
    Message message{i, 1};
    const Entry& head = entries_[i];
    if (mode_ == UdpIoMode::kGso && head.size > 0 && i >= singles_until) {
      size_t total = head.size;
      // Every segment but the last has the head's size; a shorter one ends the run.
      while (message.count < kMaxSegments && i + message.count < entries_.size()) {
        const Entry& previous = entries_[i + message.count - 1];
        const Entry& next = entries_[i + message.count];
        if (previous.size != head.size || next.size == 0 || next.size > head.size ||
            total + next.size > kMaxGsoBytes || !same_destination(head, next))
          break;
        total += next.size;
        ++message.count;
      }
    }
    messages.push_back(message);
    i += message.count;
  }
  return messages;
}

DatagramBatch::Outcome DatagramBatch::flush(const SendFn& send) {
  Outcome outcome;
  size_t next = 0;           // first entry not yet sent or dropped
  size_t singles_until = 0;  // entries before this go one by one (a refused run)
  while (next < entries_.size()) {
    const auto messages = plan(next, singles_until);
    headers_.assign(messages.size(), mmsghdr{});
    iovecs_.assign(messages.size(), iovec{});
    controls_.assign(messages.size() * CMSG_SPACE(sizeof(uint16_t)), std::byte{0});
    for (size_t m = 0; m < messages.size(); ++m) {
      const Entry& head = entries_[messages[m].first];
      size_t length = 0;
      for (size_t k = 0; k < messages[m].count; ++k) length += entries_[messages[m].first + k].size;
      // A run's datagrams were added one after another: their bytes are contiguous.
      iovecs_[m] = iovec{bytes_.data() + head.offset, length};
      msghdr& header = headers_[m].msg_hdr;
      header.msg_name = const_cast<sockaddr_storage*>(&head.to);
      header.msg_namelen = head.to_length;
      header.msg_iov = &iovecs_[m];
      header.msg_iovlen = 1;
      if (messages[m].count > 1) {
        header.msg_control = controls_.data() + m * CMSG_SPACE(sizeof(uint16_t));
        header.msg_controllen = CMSG_SPACE(sizeof(uint16_t));
        cmsghdr* control = CMSG_FIRSTHDR(&header);
        control->cmsg_level = SOL_UDP;
        control->cmsg_type = UDP_SEGMENT;
        control->cmsg_len = CMSG_LEN(sizeof(uint16_t));
        const auto segment = static_cast<uint16_t>(head.size);
        std::memcpy(CMSG_DATA(control), &segment, sizeof segment);
      }
    }
    size_t m = 0;
    bool replan = false;
    while (m < messages.size()) {
      const int result = send(std::span(headers_).subspan(m));
      if (result > 0) {
        for (int k = 0; k < result; ++k) outcome.sent += messages[m + k].count;
        m += static_cast<size_t>(result);
        continue;
      }
      // sendmmsg never returns 0 for a non-empty vector; if a sender does, treat it
      // as a full socket rather than spin.
      const int error = result < 0 ? -result : EAGAIN;
      if (error == EINTR) continue;
      outcome.last_error = error;
      if (is_full_socket(error)) {
        outcome.dropped += entries_.size() - messages[m].first;
        break;
      }
      if (messages[m].count > 1 && (is_gso_unavailable(error) || is_gso_refused_for_run(error))) {
        if (is_gso_unavailable(error)) mode_ = UdpIoMode::kBatch;
        next = messages[m].first;
        singles_until = next + messages[m].count;
        replan = true;
        break;
      }
      outcome.dropped += messages[m].count;  // this destination's problem, not the rest's
      ++m;
    }
    if (!replan) next = entries_.size();
  }
  entries_.clear();
  bytes_.clear();
  return outcome;
}

DatagramBatch::Outcome DatagramBatch::flush(int fd) {
  if (mode_ == UdpIoMode::kSingle)
    return flush([fd](std::span<mmsghdr> messages) {
      return sendmsg(fd, &messages[0].msg_hdr, MSG_DONTWAIT) < 0 ? -errno : 1;
    });
  return flush([fd](std::span<mmsghdr> messages) {
    const int sent = sendmmsg(fd, messages.data(), static_cast<unsigned>(messages.size()),
                              MSG_DONTWAIT);
    return sent < 0 ? -errno : sent;
  });
}

}  // namespace natfwd::net
