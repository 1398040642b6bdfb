#include "send_buffer.h"

#include <algorithm>

namespace natfwd::quic {

size_t SendBuffer::append(std::span<const std::byte> data) {
  const size_t taken = std::min(data.size(), free_space());
  bytes_.append(data.first(taken));
  end_ += taken;
  return taken;
}

size_t SendBuffer::unsent_vecs(ngtcp2_vec* out, size_t max) const {
  constexpr size_t kMostPieces = 16;
  std::span<const std::byte> pieces[kMostPieces];
  const size_t count = bytes_.front(std::span(pieces, std::min(max, kMostPieces)),
                                    static_cast<size_t>(sent_ - acked_));
  for (size_t i = 0; i < count; ++i) {
    // ngtcp2_vec.base is non-const, but ngtcp2 only reads stream data.
    out[i].base = reinterpret_cast<uint8_t*>(const_cast<std::byte*>(pieces[i].data()));
    out[i].len = pieces[i].size();
  }
  return count;
}

void SendBuffer::mark_sent(size_t n) { sent_ = std::min<uint64_t>(sent_ + n, end_); }

void SendBuffer::acknowledge_to(uint64_t offset) {
  const uint64_t acked = std::clamp(offset, acked_, sent_);
  bytes_.consume(static_cast<size_t>(acked - acked_));
  acked_ = acked;
}

}  // namespace natfwd::quic
