#include "byte_queue.h"

#include <algorithm>
#include <cstring>
#include <stdexcept>

namespace natfwd {

ByteQueue::ByteQueue(size_t block_size) : block_size_(block_size) {
  if (block_size_ == 0) throw std::invalid_argument("ByteQueue: block size 0");
}

ByteQueue::Block ByteQueue::take_block() {
  Block block;
  if (!spares_.empty()) {
    block.bytes = std::move(spares_.back());
    spares_.pop_back();
  } else {
    block.bytes = std::make_unique_for_overwrite<std::byte[]>(block_size_);  // not zeroed
  }
  return block;
}

void ByteQueue::give_back(Block& block) {
  if (spares_.size() < kMaxSpareBlocks) spares_.push_back(std::move(block.bytes));
}

void ByteQueue::append(std::span<const std::byte> data) {
  while (!data.empty()) {
    if (blocks_.empty() || blocks_.back().used == block_size_) blocks_.push_back(take_block());
    Block& last = blocks_.back();
    const size_t n = std::min(data.size(), block_size_ - last.used);
    std::memcpy(last.bytes.get() + last.used, data.data(), n);
    last.used += n;
    size_ += n;
    data = data.subspan(n);
  }
}

size_t ByteQueue::front(std::span<std::span<const std::byte>> out) const {
  size_t count = 0;
  size_t skip = front_offset_;
  for (const Block& block : blocks_) {
    if (count == out.size()) break;
    if (block.used > skip) {
      out[count++] = std::span<const std::byte>(block.bytes.get() + skip, block.used - skip);
    }
    skip = 0;
  }
  return count;
}

void ByteQueue::consume(size_t n) {
  n = std::min(n, size_);
  size_ -= n;
  while (n > 0) {
    Block& first = blocks_.front();
    const size_t available = first.used - front_offset_;
    if (n < available) {
      front_offset_ += n;
      return;
    }
    n -= available;
    front_offset_ = 0;
    give_back(first);
    blocks_.pop_front();
  }
}

void ByteQueue::clear() { consume(size_); }

size_t ByteQueue::capacity() const {
  return (blocks_.size() + spares_.size()) * block_size_;
}

}  // namespace natfwd
