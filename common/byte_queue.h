// A FIFO of bytes in fixed-size blocks: appending copies once, consuming from the
// front moves nothing, and bytes never move while queued, so pointers to them stay
// valid until they are consumed (ngtcp2 keeps pointers into a stream's unacknowledged
// bytes). Memory stays within two blocks of what is queued; emptied blocks go to a
// pool shared by this thread's queues of the same block size.
//
// Users: a stream's bytes waiting for a slow reader (StreamBridge; a flat buffer with a
// moving front either holds what was already written or moves what is left, up to the
// 16 MiB stream window for every MiB written), and a QUIC stream's bytes until the
// remote acknowledges them (quic::SendBuffer).
#pragma once

#include <cstddef>
#include <deque>
#include <memory>
#include <span>

namespace natfwd {

class ByteQueue {
 public:
  static constexpr size_t kDefaultBlockSize = 64 * 1024;
  // Emptied blocks a thread keeps for reuse, per block size. A steady stream then
  // allocates nothing: blocks freed to the heap and taken back fresh cost relayed
  // tunnels 30 % in scripts/bench. Shared by the thread's queues so that an idle queue
  // holds no memory at all, however much it carried before.
  static constexpr size_t kPoolBytes = 1 << 20;

  explicit ByteQueue(size_t block_size = kDefaultBlockSize);
  ~ByteQueue();
  ByteQueue(ByteQueue&&) noexcept = default;
  ByteQueue& operator=(ByteQueue&&) = delete;
  ByteQueue(const ByteQueue&) = delete;
  ByteQueue& operator=(const ByteQueue&) = delete;

  void append(std::span<const std::byte> data);
  // Fills `out` with contiguous pieces, in order, starting `skip` bytes after the front,
  // and returns how many it used; together they hold min(size() - skip, what fits in
  // out.size() blocks). Constant time in `skip`.
  size_t front(std::span<std::span<const std::byte>> out, size_t skip = 0) const;
  // Drops `n` bytes (at most size()) from the front.
  void consume(size_t n);
  void clear();

  size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  size_t block_size() const { return block_size_; }
  // Bytes in this queue's blocks, queued or not yet filled (for tests and memory
  // accounting).
  size_t capacity() const { return blocks_.size() * block_size_; }
  // Bytes in this thread's pool of emptied blocks of `block_size`.
  static size_t pooled_bytes(size_t block_size);

 private:
  struct Block {
    std::unique_ptr<std::byte[]> bytes;
    size_t used = 0;  // bytes written into it
  };

  size_t block_size_;
  // Every block but the last is full, so a byte's block is found by division.
  std::deque<Block> blocks_;
  size_t front_offset_ = 0;  // bytes consumed from blocks_.front()
  size_t size_ = 0;
};

}  // namespace natfwd
