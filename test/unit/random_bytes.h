// Reproducible test payloads: the same seed gives the same bytes.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

namespace natfwd::test {

inline std::vector<std::byte> make_data(size_t size, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<std::byte> out(size);
  for (size_t i = 0; i < size; i += 8) {
    uint64_t v = rng();
    std::memcpy(out.data() + i, &v, std::min<size_t>(8, size - i));
  }
  return out;
}

}  // namespace natfwd::test
