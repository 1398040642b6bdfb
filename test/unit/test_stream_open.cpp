// The stream-open header codec (proto/stream_open.h): round trips, every prefix of a
// valid header needs more, named bad vectors, the size limit.
#include <catch2/catch.hpp>

#include "byte_literals.h"

#include "stream_open.h"

using namespace natfwd;
using namespace natfwd::wire;

namespace {

using natfwd::test::bytes;

// A frame around raw payload bytes (not necessarily a valid message).
std::vector<std::byte> frame_of(const std::vector<std::byte>& payload) {
  std::vector<std::byte> out;
  encode_frame(payload, out);
  return out;
}

template <typename Message>
std::vector<std::byte> frame_of_message(const Message& message) {
  std::vector<std::byte> out;
  encode_message(message, out);
  return out;
}

}  // namespace

TEST_CASE("stream open: a target survives a round trip, stream data after it is left") {
  auto header = encode_stream_open(HostPort{"db.internal", 5432});
  const size_t header_size = header.size();
  header.push_back(std::byte{'x'});
  auto decoded = decode_stream_open(header);
  REQUIRE(decoded.status == DecodeStatus::kComplete);
  CHECK(decoded.consumed == header_size);
  CHECK_FALSE(decoded.request.is_pairing());
  CHECK(decoded.request.target == HostPort{"db.internal", 5432});
}

TEST_CASE("stream open: a pairing request survives a round trip") {
  auto decoded = decode_stream_open(encode_pair_request("s3cret"));
  REQUIRE(decoded.status == DecodeStatus::kComplete);
  CHECK(decoded.request.is_pairing());
  CHECK(decoded.request.pair_secret == "s3cret");
}

TEST_CASE("stream open result: status and detail survive a round trip") {
  auto header = encode_stream_open_result(static_cast<int>(StreamStatus::kNotServed),
                                          "127.0.0.1:9 is not in --serve");
  auto decoded = decode_stream_open_result(header);
  REQUIRE(decoded.status == DecodeStatus::kComplete);
  CHECK(decoded.consumed == header.size());
  CHECK(decoded.result == static_cast<int>(StreamStatus::kNotServed));
  CHECK(decoded.detail == "127.0.0.1:9 is not in --serve");
}

TEST_CASE("stream open: every proper prefix of a valid header needs more") {
  for (const auto& header : {encode_stream_open(HostPort{"::1", 22}), encode_pair_request("abc"),
                             encode_stream_open_result(0, "")}) {
    for (size_t n = 0; n < header.size(); ++n) {
      std::span<const std::byte> prefix(header.data(), n);
      INFO("prefix of " << n << " of " << header.size() << " bytes");
      CHECK(decode_stream_open(prefix).status == DecodeStatus::kNeedMore);
      CHECK(decode_stream_open_result(prefix).status == DecodeStatus::kNeedMore);
    }
  }
}

TEST_CASE("stream open: named bad vectors are invalid with a reason") {
  StreamOpen no_port;
  no_port.set_host("example.org");
  StreamOpen port_too_big;
  port_too_big.set_host("example.org");
  port_too_big.set_port(65536);
  StreamOpen bad_host;
  bad_host.set_host("a b");
  bad_host.set_port(80);
  StreamOpen empty_host;
  empty_host.set_port(80);
  struct Vector {
    const char* name;
    std::vector<std::byte> input;
    std::string_view reason;
  };
  const std::vector<Vector> vectors = {
      {"wrong magic", bytes({0x16, 0x03, 0x01}), "bad frame magic"},
      {"wrong version", bytes({0xC5, 'F', 9}), "unsupported frame version"},
      {"reserved byte set", bytes({0xC5, 'F', 1, 1}), "reserved bits set"},
      {"not a protobuf", frame_of(bytes({0xff, 0xff, 0xff})), "malformed stream header"},
      {"no port", frame_of_message(no_port), "malformed target"},
      {"port above 65535", frame_of_message(port_too_big), "malformed target"},
      {"host with a space", frame_of_message(bad_host), "malformed target"},
      {"empty host", frame_of_message(empty_host), "malformed target"},
  };
  for (const auto& v : vectors) {
    INFO(v.name);
    auto decoded = decode_stream_open(v.input);
    CHECK(decoded.status == DecodeStatus::kInvalid);
    CHECK(decoded.error == v.reason);
    CHECK(decoded.consumed == 0);
  }
  auto answer = decode_stream_open_result(frame_of(bytes({0xff, 0xff, 0xff})));
  CHECK(answer.status == DecodeStatus::kInvalid);
  CHECK(answer.error == "malformed answer");
}

TEST_CASE("stream open: a header above the limit is refused from its length alone") {
  // Only the 8-byte frame header: the decoder must not wait for 4097 payload bytes.
  auto at_limit = bytes({0xC5, 'F', 1, 0, 0, 0, 0x10, 0x00});
  auto above = bytes({0xC5, 'F', 1, 0, 0, 0, 0x10, 0x01});
  static_assert(kMaxStreamHeaderPayload == 0x1000);
  CHECK(decode_stream_open(at_limit).status == DecodeStatus::kNeedMore);
  CHECK(decode_stream_open(above).status == DecodeStatus::kInvalid);
  CHECK(decode_stream_open(above).error == "frame too large");
  CHECK(decode_stream_open_result(above).status == DecodeStatus::kInvalid);
}

TEST_CASE("stream open result: a long detail is cut so the answer fits the limit") {
  const std::string detail(3 * kMaxStreamHeaderPayload, 'e');
  auto header = encode_stream_open_result(static_cast<int>(StreamStatus::kConnectFailed), detail);
  CHECK(header.size() <= kFrameHeaderSize + kMaxStreamHeaderPayload);
  auto decoded = decode_stream_open_result(header);
  REQUIRE(decoded.status == DecodeStatus::kComplete);
  CHECK(decoded.detail == detail.substr(0, kMaxStreamOpenDetail));
}

TEST_CASE("stream status: names for the log") {
  CHECK(std::string(stream_status_text(static_cast<int>(StreamStatus::kNotServed))) ==
        "not served");
  CHECK(std::string(stream_status_text(99)) == "refused");
}

TEST_CASE("stream open result: a long detail is cut at a character boundary") {
  std::string detail;
  while (detail.size() < 2 * kMaxStreamOpenDetail) detail += "\xC3\xA9";  // é
  detail = "x" + detail;  // so the byte limit falls inside a character
  auto decoded =
      decode_stream_open_result(encode_stream_open_result(static_cast<int>(StreamStatus::kOk), detail));
  REQUIRE(decoded.status == DecodeStatus::kComplete);
  CHECK(decoded.detail.size() == kMaxStreamOpenDetail - 1);
  CHECK(detail.compare(0, decoded.detail.size(), decoded.detail) == 0);
}
