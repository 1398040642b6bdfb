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

TEST_CASE("byte queue: memory stays within a few blocks of what is queued") {
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
    // At most: the front block's consumed part, the back block's unfilled part, the
    // spares.
    REQUIRE(queue.capacity() <=
            queue.size() + (2 + ByteQueue::kMaxSpareBlocks) * ByteQueue::kDefaultBlockSize);
  }
  CHECK(queue.size() == appended - consumed);
  CHECK(most <= (1u << 20) + (3 + ByteQueue::kMaxSpareBlocks) * ByteQueue::kDefaultBlockSize);
}

TEST_CASE("byte queue: a steady stream reuses its emptied blocks") {
  ByteQueue queue(16);
  const auto data = counting(16);
  for (int i = 0; i < 100; ++i) {
    queue.append(data);
    CHECK(contents(queue) == data);
    queue.consume(16);
    CHECK(queue.empty());
    CHECK(queue.capacity() == 16);  // the spare, nothing more
  }
  queue.append(std::span(data).first(4));
  queue.clear();
  CHECK(queue.empty());

  // A backlog of 20 blocks, written out: only kMaxSpareBlocks stay.
  for (int i = 0; i < 20; ++i) queue.append(data);
  CHECK(queue.capacity() == 20 * 16);
  queue.clear();
  CHECK(queue.capacity() == ByteQueue::kMaxSpareBlocks * 16);
}
