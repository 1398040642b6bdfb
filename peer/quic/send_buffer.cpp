#include "send_buffer.h"

#include <algorithm>
#include <cstring>

namespace natfwd::quic {

size_t SendBuffer::append(std::span<const std::byte> data) {
  size_t taken = std::min(data.size(), free_space());
  size_t done = 0;
  while (done < taken) {
    if (chunks_.empty() || chunks_.back().size == kChunkSize)
      chunks_.push_back(Chunk{std::make_unique<std::byte[]>(kChunkSize), 0});
    Chunk& tail = chunks_.back();
    size_t n = std::min(taken - done, kChunkSize - tail.size);
    std::memcpy(tail.bytes.get() + tail.size, data.data() + done, n);
    tail.size += n;
    done += n;
  }
  end_ += taken;
  return taken;
}

size_t SendBuffer::unsent_vecs(ngtcp2_vec* out, size_t max) const {
  size_t count = 0;
  uint64_t offset = sent_;
  while (count < max && offset < end_) {
    size_t index = static_cast<size_t>((offset - base_) / kChunkSize);
    size_t within = static_cast<size_t>((offset - base_) % kChunkSize);
    const Chunk& chunk = chunks_[index];
    // ngtcp2_vec.base is non-const, but ngtcp2 only reads stream data.
    out[count].base = reinterpret_cast<uint8_t*>(chunk.bytes.get() + within);
    out[count].len = chunk.size - within;
    offset += out[count].len;
    ++count;
  }
  return count;
}

void SendBuffer::mark_sent(size_t n) { sent_ = std::min<uint64_t>(sent_ + n, end_); }

void SendBuffer::acknowledge_to(uint64_t offset) {
  acked_ = std::max(acked_, std::min(offset, sent_));
  while (!chunks_.empty() && chunks_.front().size == kChunkSize &&
         base_ + kChunkSize <= acked_) {
    chunks_.pop_front();
    base_ += kChunkSize;
  }
  // A last, partly filled chunk that is entirely acknowledged: drop it too, so an idle
  // stream holds no memory. The next append starts a fresh chunk at base_ == end_.
  if (chunks_.size() == 1 && acked_ == end_ && base_ + chunks_.front().size == end_) {
    chunks_.clear();
    base_ = end_;
  }
}

}  // namespace natfwd::quic
