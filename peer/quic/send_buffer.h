// Per-stream send buffer: the bytes a stream accepted from the application and the
// remote has not acknowledged yet.
//
// ngtcp2 does not copy stream data: the STREAM frames it builds (and rebuilds on loss)
// point into the memory we hand it, until acked_stream_data_offset reports the bytes
// acknowledged or the stream is closed. A ByteQueue never moves queued bytes, so the
// acknowledged prefix is consumed from its front and the rest stays where ngtcp2 saw it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include <ngtcp2/ngtcp2.h>

#include "byte_queue.h"

namespace natfwd::quic {

class SendBuffer {
 public:
  // 16 KiB blocks: a packet spans at most two, and an idle stream holding a few bytes
  // does not pin much memory.
  static constexpr size_t kBlockSize = 16 * 1024;

  // `capacity`: at most this many bytes wait to be sent. Bytes already sent and not yet
  // acknowledged are held too but not counted: the congestion window and the remote's
  // flow-control window bound them for the whole connection, and counting them per
  // stream would cap one stream's rate at capacity / RTT.
  explicit SendBuffer(size_t capacity) : capacity_(capacity), bytes_(kBlockSize) {}

  // Copies as much of `data` as fits; returns the number of bytes taken.
  size_t append(std::span<const std::byte> data);

  size_t capacity() const { return capacity_; }
  size_t free_space() const { return capacity_ - unsent(); }
  // Bytes held: accepted from the application and not yet acknowledged.
  size_t held() const { return bytes_.size(); }
  // Bytes not yet handed to ngtcp2.
  size_t unsent() const { return static_cast<size_t>(end_ - sent_); }
  // Stream offset of the next byte to hand to ngtcp2.
  uint64_t sent_offset() const { return sent_; }
  // Memory in blocks (for tests).
  size_t block_bytes() const { return bytes_.capacity(); }

  // Fills up to `max` vectors describing the unsent bytes in order; returns the count.
  size_t unsent_vecs(ngtcp2_vec* out, size_t max) const;
  // `n` more bytes were put in STREAM frames by ngtcp2.
  void mark_sent(size_t n);
  // Every byte below stream offset `offset` is acknowledged: its memory is released.
  void acknowledge_to(uint64_t offset);

 private:
  size_t capacity_;
  ByteQueue bytes_;     // stream offsets [acked_, end_)
  uint64_t acked_ = 0;  // everything below is acknowledged
  uint64_t sent_ = 0;   // everything below was handed to ngtcp2
  uint64_t end_ = 0;    // everything below was accepted from the application
};

}  // namespace natfwd::quic
