// Per-stream send buffer: the bytes a stream accepted from the application and the
// remote has not acknowledged yet.
//
// ngtcp2 does not copy stream data: the STREAM frames it builds (and rebuilds on loss)
// point into the memory we hand it, until acked_stream_data_offset reports the bytes
// acknowledged or the stream is closed. So bytes must never move once handed out:
// they live in fixed-size chunks that are only ever appended to or dropped whole.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <span>

#include <ngtcp2/ngtcp2.h>

namespace natfwd::quic {

class SendBuffer {
 public:
  // `capacity`: at most this many bytes wait to be sent. Bytes already sent and not yet
  // acknowledged are held too but not counted: the congestion window and the remote's
  // flow-control window bound them for the whole connection, and counting them per
  // stream would cap one stream's rate at capacity / RTT.
  explicit SendBuffer(size_t capacity) : capacity_(capacity) {}

  // Copies as much of `data` as fits; returns the number of bytes taken.
  size_t append(std::span<const std::byte> data);

  size_t capacity() const { return capacity_; }
  size_t free_space() const { return capacity_ - unsent(); }
  // Bytes held: accepted from the application and not yet acknowledged.
  size_t held() const { return static_cast<size_t>(end_ - acked_); }
  // Bytes not yet handed to ngtcp2.
  size_t unsent() const { return static_cast<size_t>(end_ - sent_); }
  // Stream offset of the next byte to hand to ngtcp2.
  uint64_t sent_offset() const { return sent_; }

  // Fills up to `max` vectors describing the unsent bytes in order; returns the count.
  size_t unsent_vecs(ngtcp2_vec* out, size_t max) const;
  // `n` more bytes were put in STREAM frames by ngtcp2.
  void mark_sent(size_t n);
  // Every byte below stream offset `offset` is acknowledged: release whole chunks.
  void acknowledge_to(uint64_t offset);

 private:
  // 16 KiB: a packet spans at most two chunks, and an idle stream holding a few bytes
  // does not pin much memory.
  static constexpr size_t kChunkSize = 16 * 1024;
  struct Chunk {
    std::unique_ptr<std::byte[]> bytes;  // kChunkSize bytes, never reallocated
    size_t size = 0;                     // filled so far; all but the last chunk are full
  };

  size_t capacity_;
  std::deque<Chunk> chunks_;
  uint64_t base_ = 0;   // stream offset of chunks_.front().bytes[0]
  uint64_t acked_ = 0;  // everything below is acknowledged
  uint64_t sent_ = 0;   // everything below was handed to ngtcp2
  uint64_t end_ = 0;    // everything below was accepted from the application
};

}  // namespace natfwd::quic
