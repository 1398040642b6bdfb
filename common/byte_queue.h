// A FIFO of bytes in fixed-size blocks: appending copies once, consuming from the
// front moves nothing, and memory stays within two blocks of what is queued, plus up
// to kMaxSpareBlocks emptied ones kept for reuse.
//
// For a stream's bytes waiting for a slow reader (a visitor on a phone, while home
// sends at the full stream window): a flat buffer with a moving front either holds
// what was already written or moves what is left, up to the 16 MiB window for every
// MiB written.
#pragma once

#include <cstddef>
#include <deque>
#include <memory>
#include <span>
#include <vector>

namespace natfwd {

class ByteQueue {
 public:
  static constexpr size_t kDefaultBlockSize = 64 * 1024;
  static constexpr size_t kMaxSpareBlocks = 8;

  explicit ByteQueue(size_t block_size = kDefaultBlockSize);

  void append(std::span<const std::byte> data);
  // Fills `out` with the front's contiguous pieces, in order, and returns how many it
  // used; together they hold min(size(), what fits in out.size() blocks).
  size_t front(std::span<std::span<const std::byte>> out) const;
  // Drops `n` bytes (at most size()) from the front.
  void consume(size_t n);
  void clear();

  size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  // Bytes held in blocks, queued, not yet filled or spare (for tests and memory
  // accounting).
  size_t capacity() const;

 private:
  struct Block {
    std::unique_ptr<std::byte[]> bytes;
    size_t used = 0;  // bytes written into it
  };

  Block take_block();
  void give_back(Block& block);

  size_t block_size_;
  std::deque<Block> blocks_;
  size_t front_offset_ = 0;  // bytes consumed from blocks_.front()
  size_t size_ = 0;
  // Emptied blocks kept for the next appends, up to kMaxSpareBlocks (one sendmsg's
  // worth), so a steady stream allocates nothing: blocks freed to the heap and taken
  // back fresh cost relayed tunnels 30 % in scripts/bench.
  std::vector<std::unique_ptr<std::byte[]>> spares_;
};

}  // namespace natfwd
