// Quantized KV storage: blocks of 32 consecutive values of a row (along the head dim), each with
// its own scale, as engines keep their caches to stretch memory (llama.cpp's q8_0 and q4_1).
//
//   q8   x ≈ scale·q,         q an int8 in [−127, 127]        34 bytes per 32 values (1.06 B)
//   q4   x ≈ min + scale·q,   q a 4-bit integer in [0, 15]    20 bytes per 32 values (0.63 B)
//
// A row of n values takes ceil(n / 32) blocks; the last one's unused values are zero. Scales and
// minimums are bf16, which widens with a shift and covers float's range. Encoding rounds the
// scale (and q4's minimum) to bf16 first, in the direction that keeps every value of the block
// in range, and quantizes against the rounded numbers, so the error of each value is at most
// half a step: |x − decode(x)| ≤ scale / 2, with scale ≤ (1 + 2^-7) · max|x| / 127 for q8 and
// (1 + 2^-7) · (max x − min x + 2^-7 · |min x|) / 15 for q4 (bf16 keeps 8 significant bits).
// q8 is symmetric: at 8 bits a zero point gains little. q4 keeps the minimum: with 16 levels,
// a block whose values are all positive (or skewed by an outlier) would otherwise lose half of
// them.
//
// Non-finite values: a block holding a NaN or an infinity is stored with a NaN scale, so the
// whole block decodes to NaN; a row that attends to that key or value gets NaN
// (attention/modifiers.hpp, "Non-finite values"), as it would from the value itself. Values
// within 2 % of the largest float may decode to ±inf (the rounded-up scale times the top level).
// Codec<q8> and Codec<q4> (codec.hpp) read them inside the kernels; nothing here is ISA-specific.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <type_traits>

#include "half.hpp"

namespace multihead {
inline namespace MULTIHEAD_ISA_NAMESPACE {

struct q8 {
  static constexpr int kValues = 32;
  bf16 scale;
  std::int8_t q[kValues];
};

// Byte i holds value i in its low nibble and value i + 16 in its high nibble, so that 16
// consecutive values are the low (or the high) nibbles of 16 consecutive bytes.
struct q4 {
  static constexpr int kValues = 32;
  bf16 scale;
  bf16 min;
  std::uint8_t q[kValues / 2];
};

static_assert(sizeof(q8) == 34 && std::is_trivial_v<q8> && std::is_standard_layout_v<q8>);
static_assert(sizeof(q4) == 20 && std::is_trivial_v<q4> && std::is_standard_layout_v<q4>);

template <class T>
constexpr bool is_quantized_v = std::is_same_v<T, q8> || std::is_same_v<T, q4>;
// What a cache can store: the value types (is_storage_type_v, half.hpp) and the quantized
// formats. Kernels over K/V views take the value types only.
template <class T>
constexpr bool is_cache_storage_v = is_storage_type_v<T> || is_quantized_v<T>;

namespace detail {

constexpr std::uint16_t kBf16Nan = 0x7fc0;

// x rounded to a bf16 no smaller (up = true) or no larger than x; x finite. Past the largest
// finite bf16 (beyond which to_bf16 gives ±inf), that largest one: a value there is clamped.
inline bf16 bf16_toward(float x, bool up) {
  bf16 h = to_bf16(x);
  if ((h.bits & 0x7fff) == 0x7f80) return bf16{static_cast<std::uint16_t>((h.bits & 0x8000) | 0x7f7f)};
  const float back = to_float(h);
  if (up ? back >= x : back <= x) return h;
  // One step away from zero when moving outward, toward zero when inward; the sign decides.
  const bool outward = (x > 0) == up;
  h.bits = static_cast<std::uint16_t>(outward ? h.bits + 1 : h.bits - 1);
  return h;
}

// The n ≤ 32 values x as one block (the rest zero).
inline void encode_block(const float* x, int n, q8& block) {
  float largest = 0.0f;
  bool finite = true;
  for (int i = 0; i < n; ++i) {
    finite = finite && std::isfinite(x[i]);
    largest = std::max(largest, std::abs(x[i]));
  }
  std::fill(block.q, block.q + q8::kValues, std::int8_t{0});
  if (!finite) {
    block.scale = bf16{kBf16Nan};
    return;
  }
  block.scale = bf16_toward(largest / 127.0f, true);
  const float scale = to_float(block.scale);
  if (scale == 0.0f) return;  // all zero, or too small for any scale: zeros
  // The quotient rather than a product by 1/scale: x / scale ≤ 127 exactly when |x| ≤ 127·scale.
  for (int i = 0; i < n; ++i)
    block.q[i] = static_cast<std::int8_t>(
        std::min(std::max(std::nearbyint(x[i] / scale), -127.0f), 127.0f));
}

inline void encode_block(const float* x, int n, q4& block) {
  float lo = x[0], hi = x[0];
  bool finite = true;
  for (int i = 0; i < n; ++i) {
    finite = finite && std::isfinite(x[i]);
    lo = std::min(lo, x[i]);
    hi = std::max(hi, x[i]);
  }
  if (n < q4::kValues) {  // the padding zeros are values of the block too
    lo = std::min(lo, 0.0f);
    hi = std::max(hi, 0.0f);
  }
  std::fill(block.q, block.q + q4::kValues / 2, std::uint8_t{0});
  if (!finite) {
    block.scale = bf16{kBf16Nan};
    block.min = bf16{kBf16Nan};
    return;
  }
  block.min = bf16_toward(lo, false);
  const float min = to_float(block.min);
  // hi − min ≤ 2·FLT_MAX / 15 after the division, so it is computed in double.
  block.scale = bf16_toward(static_cast<float>((double(hi) - double(min)) / 15.0), true);
  const float scale = to_float(block.scale);
  std::uint8_t levels[q4::kValues] = {};
  for (int i = 0; i < q4::kValues; ++i) {
    const double value = i < n ? x[i] : 0.0;  // value − min may exceed FLT_MAX
    levels[i] = scale == 0.0f ? 0
                              : static_cast<std::uint8_t>(std::min(
                                    std::max(std::nearbyint((value - min) / scale), 0.0), 15.0));
  }
  for (int i = 0; i < q4::kValues / 2; ++i)
    block.q[i] = static_cast<std::uint8_t>(levels[i] | (levels[i + 16] << 4));
}

inline float decode_value(const q8& block, int i) { return to_float(block.scale) * block.q[i]; }

inline float decode_value(const q4& block, int i) {
  const int level = i < 16 ? block.q[i] & 15 : block.q[i - 16] >> 4;
  return to_float(block.min) + to_float(block.scale) * static_cast<float>(level);
}

}  // namespace detail
}  // namespace MULTIHEAD_ISA_NAMESPACE
}  // namespace multihead
