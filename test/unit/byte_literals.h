// Byte vectors written as lists of numbers, for codec test vectors.
#pragma once

#include <cstddef>
#include <initializer_list>
#include <vector>

namespace natfwd::test {

inline std::vector<std::byte> bytes(std::initializer_list<int> values) {
  std::vector<std::byte> out;
  for (int v : values) out.push_back(static_cast<std::byte>(v));
  return out;
}

}  // namespace natfwd::test
