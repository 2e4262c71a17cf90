// Reading a fuzzer's bytes as the values a user could pass: each read takes the next bytes of
// the input (zeros once it is used up), so that every input decodes to some call.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>

namespace fuzz {

class Input {
 public:
  Input(const std::uint8_t* data, std::size_t size) : data_(data), size_(size) {}

  template <class T>
  T raw() {
    T value{};
    const std::size_t n = std::min(sizeof(T), size_ - at_);
    std::memcpy(&value, data_ + at_, n);
    at_ += n;
    return value;
  }
  bool flag() { return raw<std::uint8_t>() & 1; }
  // Mostly small sizes in [lo, hi], sometimes any int64 (negative, huge, INT64_MAX): the edges
  // a checked size must survive.
  std::int64_t size(std::int64_t lo, std::int64_t hi) {
    const std::uint8_t kind = raw<std::uint8_t>();
    if (kind < 230) {  // in unsigned arithmetic: [lo, hi] may be any int64 range
      if (hi < lo) return lo;
      const std::uint64_t span = std::uint64_t(hi) - std::uint64_t(lo) + 1;  // 0: all of them
      const std::uint64_t pick = raw<std::uint16_t>();
      return std::int64_t(std::uint64_t(lo) + (span == 0 ? pick : pick % span));
    }
    if (kind < 240) return raw<std::int64_t>();
    const std::int64_t edges[] = {0, -1, 1, std::numeric_limits<std::int64_t>::max(),
                                  std::numeric_limits<std::int64_t>::min(), std::int64_t{1} << 32,
                                  std::int64_t{1} << 62, (std::int64_t{1} << 31) - 1};
    return edges[kind % 8];
  }
  // Mostly ordinary floats, sometimes any bits (NaN, ±inf, subnormal, huge).
  float number(float lo, float hi) {
    const std::uint8_t kind = raw<std::uint8_t>();
    if (kind < 220) return lo + (hi - lo) * float(raw<std::uint16_t>()) / 65535.0f;
    return raw<float>();
  }

 private:
  const std::uint8_t* data_;
  std::size_t size_, at_ = 0;
};

// A fuzzer's invariant: when it fails, abort (libFuzzer reports the crash with its input).
inline void check(bool holds, const char* invariant) {
  if (holds) return;
  std::fprintf(stderr, "invariant failed: %s\n", invariant);
  std::abort();
}

}  // namespace fuzz
