#include <catch2/catch.hpp>

#include <array>
#include <cstring>
#include <span>
#include <vector>

#include "send_buffer.h"

using natfwd::quic::SendBuffer;

namespace {

std::vector<std::byte> counting(size_t n, size_t start = 0) {
  std::vector<std::byte> bytes(n);
  for (size_t i = 0; i < n; ++i) bytes[i] = static_cast<std::byte>((start + i) % 251);
  return bytes;
}

// The unsent bytes as ngtcp2 would see them, up to `max_vecs` vectors.
std::vector<std::byte> unsent(const SendBuffer& buffer, size_t max_vecs = 64) {
  std::vector<ngtcp2_vec> vecs(max_vecs);
  const size_t n = buffer.unsent_vecs(vecs.data(), vecs.size());
  std::vector<std::byte> out;
  for (size_t i = 0; i < n; ++i) {
    const auto* base = reinterpret_cast<const std::byte*>(vecs[i].base);
    out.insert(out.end(), base, base + vecs[i].len);
  }
  return out;
}

}  // namespace

TEST_CASE("send buffer: takes what fits in its capacity of unsent bytes") {
  SendBuffer buffer(50'000);
  const auto data = counting(80'000);
  CHECK(buffer.append(data) == 50'000);
  CHECK(buffer.free_space() == 0);
  CHECK(buffer.append(data) == 0);
  CHECK(unsent(buffer) == std::vector<std::byte>(data.begin(), data.begin() + 50'000));

  // Sent but unacknowledged bytes are held but do not count against the capacity.
  buffer.mark_sent(20'000);
  CHECK(buffer.unsent() == 30'000);
  CHECK(buffer.held() == 50'000);
  CHECK(buffer.free_space() == 20'000);
  CHECK(buffer.append(std::span(data).subspan(50'000)) == 20'000);
  CHECK(buffer.held() == 70'000);
}

TEST_CASE("send buffer: vectors start at the next unsent byte and span blocks") {
  SendBuffer buffer(1 << 20);
  const auto data = counting(3 * SendBuffer::kBlockSize + 100);
  buffer.append(data);
  buffer.mark_sent(1000);
  CHECK(buffer.sent_offset() == 1000);

  std::array<ngtcp2_vec, 2> two;
  REQUIRE(buffer.unsent_vecs(two.data(), two.size()) == 2);
  CHECK(two[0].len == SendBuffer::kBlockSize - 1000);
  CHECK(std::memcmp(two[0].base, data.data() + 1000, two[0].len) == 0);
  CHECK(two[1].len == SendBuffer::kBlockSize);
  CHECK(unsent(buffer) == std::vector<std::byte>(data.begin() + 1000, data.end()));

  buffer.mark_sent(data.size());  // more than is there: everything
  CHECK(buffer.unsent() == 0);
  CHECK(buffer.unsent_vecs(two.data(), two.size()) == 0);
}

TEST_CASE("send buffer: bytes handed to ngtcp2 stay put until acknowledged") {
  SendBuffer buffer(1 << 20);
  const auto data = counting(5 * SendBuffer::kBlockSize);
  buffer.append(std::span(data).first(2 * SendBuffer::kBlockSize));
  std::array<ngtcp2_vec, 8> vecs;
  REQUIRE(buffer.unsent_vecs(vecs.data(), vecs.size()) == 2);
  const uint8_t* second_block = vecs[1].base;
  buffer.mark_sent(2 * SendBuffer::kBlockSize);

  // More appended, the first block acknowledged: the second, sent and unacknowledged
  // (ngtcp2 may rebuild a frame from it after a loss), is where it was, unchanged.
  buffer.append(std::span(data).subspan(2 * SendBuffer::kBlockSize));
  buffer.acknowledge_to(SendBuffer::kBlockSize);
  CHECK(buffer.held() == 4 * SendBuffer::kBlockSize);
  CHECK(std::memcmp(second_block, data.data() + SendBuffer::kBlockSize,
                    SendBuffer::kBlockSize) == 0);
  CHECK(unsent(buffer) ==
        std::vector<std::byte>(data.begin() + 2 * SendBuffer::kBlockSize, data.end()));
}

TEST_CASE("send buffer: acknowledgements release memory, never past what was sent") {
  SendBuffer buffer(1 << 20);
  const auto data = counting(4 * SendBuffer::kBlockSize + 10);
  buffer.append(data);
  buffer.mark_sent(SendBuffer::kBlockSize + 5);

  buffer.acknowledge_to(data.size());  // beyond what was sent: only up to sent_offset
  CHECK(buffer.held() == data.size() - (SendBuffer::kBlockSize + 5));
  CHECK(buffer.block_bytes() == 4 * SendBuffer::kBlockSize);

  buffer.acknowledge_to(100);  // an older acknowledgement changes nothing
  CHECK(buffer.held() == data.size() - (SendBuffer::kBlockSize + 5));

  buffer.mark_sent(data.size());
  buffer.acknowledge_to(data.size());
  CHECK(buffer.held() == 0);
  CHECK(buffer.block_bytes() == 0);  // an idle stream holds no memory

  // The stream goes on from where it was.
  buffer.append(counting(10));
  CHECK(buffer.sent_offset() == data.size());
  CHECK(unsent(buffer) == counting(10));
}
