#include <catch2/catch.hpp>

#include <algorithm>
#include <array>
#include <span>
#include <vector>

#include "byte_queue.h"

using natfwd::ByteQueue;

namespace {

std::vector<std::byte> counting(size_t n, size_t start = 0) {
  std::vector<std::byte> bytes(n);
  for (size_t i = 0; i < n; ++i) bytes[i] = static_cast<std::byte>((start + i) & 0xff);
  return bytes;
}

// Everything the queue holds, front to back, read through front().
std::vector<std::byte> contents(const ByteQueue& queue) {
  std::vector<std::span<const std::byte>> pieces(queue.size() + 1);
  const size_t n = queue.front(pieces);
  std::vector<std::byte> out;
  for (size_t i = 0; i < n; ++i) out.insert(out.end(), pieces[i].begin(), pieces[i].end());
  return out;
}

}  // namespace

TEST_CASE("byte queue: bytes come out in order across blocks") {
  ByteQueue queue(8);
  const auto data = counting(30);
  queue.append(std::span(data).first(5));
  queue.append(std::span(data).subspan(5, 20));
  queue.append(std::span(data).subspan(25));
  CHECK(queue.size() == 30);
  CHECK(contents(queue) == data);

  std::array<std::span<const std::byte>, 2> two;
  REQUIRE(queue.front(two) == 2);
  CHECK(two[0].size() == 8);
  CHECK(two[1].size() == 8);
  CHECK(two[1][0] == std::byte{8});
}

TEST_CASE("byte queue: consuming part of a block and across blocks") {
  ByteQueue queue(8);
  const auto data = counting(30);
  queue.append(data);
  queue.consume(3);
  std::array<std::span<const std::byte>, 1> one;
  REQUIRE(queue.front(one) == 1);
  CHECK(one[0].size() == 5);
  CHECK(one[0][0] == std::byte{3});

  queue.consume(13);  // into the third block
  CHECK(queue.size() == 14);
  CHECK(contents(queue) == std::vector<std::byte>(data.begin() + 16, data.end()));

  queue.consume(100);  // more than is there: empties it
  CHECK(queue.empty());
  CHECK(queue.front(one) == 0);
}

TEST_CASE("byte queue: pieces from a point past the front") {
  ByteQueue queue(8);
  const auto data = counting(30);
  queue.append(data);
  queue.consume(3);  // front block: bytes 3..7
  std::array<std::span<const std::byte>, 3> three;

  REQUIRE(queue.front(three, 2) == 3);  // from byte 5: 5..7, 8..15, 16..23
  CHECK(three[0].size() == 3);
  CHECK(three[0][0] == std::byte{5});
  CHECK(three[1].size() == 8);
  CHECK(three[2][0] == std::byte{16});

  REQUIRE(queue.front(three, 21) == 1);  // from byte 24: the last block's 6 bytes
  CHECK(three[0].size() == 6);
  CHECK(three[0][0] == std::byte{24});
  CHECK(queue.front(three, 27) == 0);  // nothing past the end
  CHECK(queue.front(three, 100) == 0);
}

TEST_CASE("byte queue: memory stays within two blocks of what is queued") {
  // A slow reader behind a fast writer: 4 MiB appended and consumed in steps, 1 MiB
  // or less waiting at any time.
  ByteQueue queue;  // 64 KiB blocks
  const auto chunk = counting(1300);
  size_t appended = 0, consumed = 0, most = 0;
  while (appended < (4u << 20)) {
    queue.append(chunk);
    appended += chunk.size();
    if (queue.size() > (1u << 20)) {
      queue.consume(200 * 1024);
      consumed += 200 * 1024;
    }
    most = std::max(most, queue.capacity());
    // At most: the front block's consumed part and the back block's unfilled part.
    REQUIRE(queue.capacity() <= queue.size() + 2 * ByteQueue::kDefaultBlockSize);
  }
  CHECK(queue.size() == appended - consumed);
  CHECK(most <= (1u << 20) + 3 * ByteQueue::kDefaultBlockSize);
  CHECK(ByteQueue::pooled_bytes(ByteQueue::kDefaultBlockSize) <= ByteQueue::kPoolBytes);
}

TEST_CASE("byte queue: emptied blocks go to the thread's pool, not to the heap") {
  // A block size no other test uses, so this thread's shelf for it starts empty.
  constexpr size_t kBlock = 24;
  const auto data = counting(kBlock);
  REQUIRE(ByteQueue::pooled_bytes(kBlock) == 0);
  {
    ByteQueue queue(kBlock);
    for (int i = 0; i < 100; ++i) {
      queue.append(data);
      CHECK(contents(queue) == data);
      queue.consume(kBlock);
      CHECK(queue.empty());
      CHECK(queue.capacity() == 0);  // an empty queue holds nothing
      CHECK(ByteQueue::pooled_bytes(kBlock) == kBlock);  // one block, going round
    }

    // A backlog of 20 blocks, written out: the pool keeps them all (well under its
    // bound), and a second queue takes from it.
    for (int i = 0; i < 20; ++i) queue.append(data);
    CHECK(queue.capacity() == 20 * kBlock);
    CHECK(ByteQueue::pooled_bytes(kBlock) == 0);
    queue.clear();
    CHECK(ByteQueue::pooled_bytes(kBlock) == 20 * kBlock);

    ByteQueue other(kBlock);
    other.append(counting(3 * kBlock));
    CHECK(ByteQueue::pooled_bytes(kBlock) == 17 * kBlock);
    // `other` goes out of scope holding 3 blocks: they return to the pool.
  }
  CHECK(ByteQueue::pooled_bytes(kBlock) == 20 * kBlock);
}

TEST_CASE("byte queue: the pool is bounded") {
  constexpr size_t kBlock = 64 * 1024 + 8;  // again a size of this test's own
  {
    ByteQueue queue(kBlock);
    queue.append(std::vector<std::byte>(40 * kBlock));
    queue.clear();
  }
  CHECK(ByteQueue::pooled_bytes(kBlock) <= ByteQueue::kPoolBytes);
  CHECK(ByteQueue::pooled_bytes(kBlock) > ByteQueue::kPoolBytes - kBlock);
}
