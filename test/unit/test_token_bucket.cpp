// The shared token bucket (relay rate limits per IP, TURN bandwidth cap) on a fake clock.
#include <catch2/catch.hpp>

#include <chrono>

#include "token_bucket.h"

using natfwd::TokenBucket;
using namespace std::chrono_literals;

namespace {
const TokenBucket::TimePoint kStart = TokenBucket::TimePoint{} + 1000s;
}

TEST_CASE("token bucket: starts full, refuses the excess without taking it") {
  TokenBucket bucket(10, 60s, kStart);
  for (int i = 0; i < 10; ++i) CHECK(bucket.take(1, kStart));
  CHECK_FALSE(bucket.take(1, kStart));
  // A refused take leaves the bucket as it was: the next token comes after 6 s, not later.
  CHECK_FALSE(bucket.take(1, kStart + 5s));
  CHECK(bucket.take(1, kStart + 6s));
  CHECK_FALSE(bucket.take(1, kStart + 6s));
}

TEST_CASE("token bucket: refills evenly and never beyond its capacity") {
  TokenBucket bucket(1000, 1s, kStart);
  CHECK(bucket.take(1000, kStart));
  CHECK_FALSE(bucket.take(600, kStart + 500ms));
  CHECK(bucket.take(500, kStart + 500ms));
  // An hour idle refills to 1000, not to 3.6 million.
  CHECK_FALSE(bucket.take(1001, kStart + 1h));
  CHECK(bucket.take(1000, kStart + 1h));
}

TEST_CASE("token bucket: time going backwards refills nothing") {
  TokenBucket bucket(2, 2s, kStart);
  CHECK(bucket.take(2, kStart + 10s));
  CHECK_FALSE(bucket.take(1, kStart));
  CHECK(bucket.take(1, kStart + 11s));
}

TEST_CASE("token bucket: full_at tells when it can be forgotten") {
  TokenBucket bucket(10, 60s, kStart);
  CHECK(bucket.full_at(kStart));
  CHECK(bucket.take(3, kStart));
  CHECK_FALSE(bucket.full_at(kStart));
  CHECK_FALSE(bucket.full_at(kStart + 17s));
  CHECK(bucket.full_at(kStart + 18s));
  CHECK(bucket.full_at(kStart + 1h));
}

TEST_CASE("token bucket: spend() may go into debt that the refill pays first") {
  TokenBucket bucket(1000, 1s, kStart);
  bucket.spend(1500, kStart);
  CHECK(bucket.available(kStart) == Approx(-500));
  CHECK(bucket.time_until(100, kStart).count() == Approx(0.6));
  CHECK_FALSE(bucket.take(1, kStart + 400ms));
  CHECK(bucket.available(kStart + 600ms) == Approx(100));
  // Asking for more than the capacity waits for a full bucket, not forever.
  CHECK(bucket.time_until(5000, kStart + 600ms).count() == Approx(0.9));
  CHECK(bucket.time_until(50, kStart + 600ms).count() == 0);
}
