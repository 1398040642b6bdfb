#include "byte_queue.h"

#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <vector>

namespace natfwd {

namespace {

// This thread's emptied blocks, a shelf per block size, each up to kPoolBytes.
class BlockPool {
 public:
  BlockPool() = default;
  ~BlockPool();
  BlockPool(const BlockPool&) = delete;
  BlockPool& operator=(const BlockPool&) = delete;

  std::unique_ptr<std::byte[]> take(size_t block_size) {
    std::vector<std::unique_ptr<std::byte[]>>& shelf = shelf_for(block_size);
    if (shelf.empty()) return std::make_unique_for_overwrite<std::byte[]>(block_size);
    std::unique_ptr<std::byte[]> block = std::move(shelf.back());
    shelf.pop_back();
    return block;
  }

  void give(size_t block_size, std::unique_ptr<std::byte[]> block) {
    std::vector<std::unique_ptr<std::byte[]>>& shelf = shelf_for(block_size);
    if ((shelf.size() + 1) * block_size <= ByteQueue::kPoolBytes) shelf.push_back(std::move(block));
  }

  size_t bytes(size_t block_size) { return shelf_for(block_size).size() * block_size; }

 private:
  std::vector<std::unique_ptr<std::byte[]>>& shelf_for(size_t block_size) {
    for (Shelf& shelf : shelves_)
      if (shelf.block_size == block_size) return shelf.blocks;
    shelves_.push_back(Shelf{block_size, {}});
    return shelves_.back().blocks;
  }

  struct Shelf {
    size_t block_size;
    std::vector<std::unique_ptr<std::byte[]>> blocks;
  };
  std::deque<Shelf> shelves_;  // a handful of sizes; a deque keeps references stable
};

// Trivially destructible, so still readable while the thread's other objects are
// destroyed: a queue that outlives the pool frees its blocks instead.
thread_local bool pool_destroyed = false;

BlockPool::~BlockPool() { pool_destroyed = true; }

// This thread's pool, or null once it has been destroyed at thread exit.
BlockPool* this_thread_pool() {
  if (pool_destroyed) return nullptr;
  thread_local BlockPool pool;
  return &pool;
}

std::unique_ptr<std::byte[]> take_block(size_t block_size) {
  if (BlockPool* pool = this_thread_pool()) return pool->take(block_size);
  return std::make_unique_for_overwrite<std::byte[]>(block_size);
}

void give_block(size_t block_size, std::unique_ptr<std::byte[]> block) {
  if (BlockPool* pool = this_thread_pool()) pool->give(block_size, std::move(block));
}

}  // namespace

ByteQueue::ByteQueue(size_t block_size) : block_size_(block_size) {
  if (block_size_ == 0) throw std::invalid_argument("ByteQueue: block size 0");
}

ByteQueue::~ByteQueue() {
  for (Block& block : blocks_)
    if (block.bytes) give_block(block_size_, std::move(block.bytes));
}

void ByteQueue::append(std::span<const std::byte> data) {
  while (!data.empty()) {
    if (blocks_.empty() || blocks_.back().used == block_size_)
      blocks_.push_back(Block{take_block(block_size_), 0});
    Block& last = blocks_.back();
    const size_t n = std::min(data.size(), block_size_ - last.used);
    std::memcpy(last.bytes.get() + last.used, data.data(), n);
    last.used += n;
    size_ += n;
    data = data.subspan(n);
  }
}

size_t ByteQueue::front(std::span<std::span<const std::byte>> out, size_t skip) const {
  if (skip >= size_) return 0;
  const size_t position = front_offset_ + skip;
  size_t index = position / block_size_;
  size_t within = position % block_size_;
  size_t count = 0;
  while (count < out.size() && index < blocks_.size()) {
    const Block& block = blocks_[index];
    out[count++] = std::span<const std::byte>(block.bytes.get() + within, block.used - within);
    ++index;
    within = 0;
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
    give_block(block_size_, std::move(first.bytes));
    blocks_.pop_front();
  }
}

void ByteQueue::clear() { consume(size_); }

size_t ByteQueue::pooled_bytes(size_t block_size) {
  BlockPool* pool = this_thread_pool();
  return pool ? pool->bytes(block_size) : 0;
}

}  // namespace natfwd
