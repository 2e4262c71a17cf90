// The storage codec contract: how a kernel reads cached rows of one storage type. Kernels are
// written against Codec<S>, never against a concrete type, so that a new format (8-bit or 4-bit
// values with per-block scales) is one new codec here and no edit to a kernel.
//
//   using storage_type = S
//   static constexpr std::int64_t units(values)   elements of S that hold a row of `values`
//                                                 values: the unit of every row pointer, stride
//                                                 and group offset in a KV source (a quantized
//                                                 format's S is its block of values and scale)
//   static constexpr std::int64_t row_bytes(values)  bytes of such a row (prefetch, budgets)
//   static constexpr bool kScaled                 rows carry scales (per row, or per block of
//                                                 at most 32 values); widened values have them
//                                                 applied
//   template <class Ops> static V load(row, i)    values [i, i + W) of a row, i a multiple of
//                                                 Ops::W, widened to fp32 in registers
//   static constexpr bool kPairs                  load_pairs exists: 2·W values as the even- and
//   template <class Ops> load_pairs(row, i, even, odd)   the odd-indexed ones, i a multiple of 2·W
//                                                 (cheaper than two loads for bf16; the tiles
//                                                 order Q to match, row_tiles.hpp)
//   template <class Ops> static void widen(row, n, out)  the row's first n values into fp32 out
//   static bool finite(row, n)                    whether the row's first n values are all
//                                                 finite (no NaN, no ±inf): the kernels ask it
//                                                 of V rows that some query row must not see
//                                                 (attention/modifiers.hpp, non-finite values)
//   static void encode(x, n, row)                 quantized formats: n floats into a row of
//                                                 units(n) blocks (the plain types narrow with
//                                                 simd/convert.hpp instead)
// Ops is the ISA's primitives (simd/ops.hpp): a codec names no intrinsic itself.
#pragma once

#include <cstdint>
#include <algorithm>
#include <cstring>
#include <type_traits>

#include "half.hpp"
#include "quantized.hpp"

namespace multihead {
inline namespace MULTIHEAD_ISA_NAMESPACE {

template <class S>
struct Codec;

namespace detail {

// The bits of a float, bf16 or fp16 value (to test its exponent field).
inline std::uint32_t value_bits(float x) {
  std::uint32_t bits;
  std::memcpy(&bits, &x, sizeof bits);
  return bits;
}
inline std::uint32_t value_bits(bf16 x) { return x.bits; }
inline std::uint32_t value_bits(fp16 x) { return x.bits; }

// float, bf16 and fp16: one value per element, no scales, the ISA's widening loads.
template <class S, bool Pairs>
struct PlainCodec {
  using storage_type = S;
  static constexpr bool kScaled = false;
  static constexpr bool kPairs = Pairs;
  static constexpr std::int64_t units(std::int64_t values) { return values; }
  static constexpr std::int64_t row_bytes(std::int64_t values) {
    return values * std::int64_t(sizeof(S));
  }
  template <class Ops>
  static typename Ops::V load(const S* row, std::int64_t i) {
    return Ops::loadu(row + i);
  }
  template <class Ops>
  static void load_pairs(const S* row, std::int64_t i, typename Ops::V& even,
                         typename Ops::V& odd) {
    static_assert(Pairs, "load_pairs: this storage type has no paired load");
    Ops::loadu_pairs(row + i, even, odd);
  }
  template <class Ops>
  static void widen(const S* row, std::int64_t n, float* out) {
    Ops::widen(row, out, n);
  }
  // A value is not finite when its exponent field is all ones; the largest field of the row,
  // an integer reduction that compilers vectorise, says whether any is.
  static bool finite(const S* row, std::int64_t n) {
    constexpr std::uint32_t exponent = std::is_same_v<S, float>  ? 0x7f800000u
                                       : std::is_same_v<S, bf16> ? 0x7f80u
                                                                 : 0x7c00u;
    std::uint32_t largest = 0;
    for (std::int64_t i = 0; i < n; ++i) largest = std::max(largest, value_bits(row[i]) & exponent);
    return largest != exponent;
  }
};

// q8 and q4 (quantized.hpp): a row is ceil(n / 32) blocks; a load of W ≤ 32 values (i a
// multiple of W) falls inside one block and applies its scale (and minimum) in registers.
template <class B>
struct BlockCodec {
  using storage_type = B;
  static constexpr bool kScaled = true;
  static constexpr bool kPairs = false;
  static constexpr std::int64_t units(std::int64_t values) {
    return (values + B::kValues - 1) / B::kValues;
  }
  static constexpr std::int64_t row_bytes(std::int64_t values) {
    return units(values) * std::int64_t(sizeof(B));
  }
  // Whole blocks through the codec's decode_block (its scale broadcast once), the rest one value
  // at a time.
  template <class Ops>
  static void widen(const B* row, std::int64_t n, float* out) {
    const std::int64_t whole = n / B::kValues;
    for (std::int64_t b = 0; b < whole; ++b)
      Codec<B>::template decode_block<Ops>(row[b], out + b * B::kValues);
    for (std::int64_t i = whole * B::kValues; i < n; ++i)
      out[i] = decode_value(row[i / B::kValues], int(i % B::kValues));
  }
  // A block that held a non-finite value has a NaN scale (and minimum).
  static bool finite(const B* row, std::int64_t n) {
    for (std::int64_t b = 0; b < units(n); ++b)
      if ((row[b].scale.bits & 0x7f80u) == 0x7f80u) return false;
    return true;
  }
  static void encode(const float* x, std::int64_t n, B* row) {
    for (std::int64_t b = 0; b < units(n); ++b)
      encode_block(x + b * B::kValues, int(std::min<std::int64_t>(B::kValues, n - b * B::kValues)),
                   row[b]);
  }
};

}  // namespace detail

template <>
struct Codec<float> : detail::PlainCodec<float, false> {};
// bf16 is the top half of a float: a pair of values widens with a shift and a mask.
template <>
struct Codec<bf16> : detail::PlainCodec<bf16, true> {};
template <>
struct Codec<fp16> : detail::PlainCodec<fp16, false> {};

// x ≈ scale·level: the levels widened, times the block's scale.
template <>
struct Codec<q8> : detail::BlockCodec<q8> {
  template <class Ops>
  static typename Ops::V load(const q8* row, std::int64_t i) {
    const q8& block = row[i / q8::kValues];
    return Ops::mul(Ops::load_i8(block.q + i % q8::kValues), Ops::broadcast(&block.scale));
  }
  template <class Ops>
  static void decode_block(const q8& block, float* out) {  // the 32 values, to any alignment
    const typename Ops::V scale = Ops::broadcast(&block.scale);
    for (int i = 0; i < q8::kValues; i += Ops::W)
      Ops::storeu(out + i, Ops::mul(Ops::load_i8(block.q + i), scale));
  }
};
// x ≈ min + scale·level: values [o, o + W) of a block are the low nibbles of bytes o.. for
// o < 16, the high nibbles of bytes o − 16.. above.
template <>
struct Codec<q4> : detail::BlockCodec<q4> {
  template <class Ops>
  static typename Ops::V load(const q4* row, std::int64_t i) {
    const q4& block = row[i / q4::kValues];
    const int o = int(i % q4::kValues);
    return Ops::fma(Ops::load_u4(block.q + o % 16, o / 16 * 4), Ops::broadcast(&block.scale),
                    Ops::broadcast(&block.min));
  }
  template <class Ops>
  static void decode_block(const q4& block, float* out) {
    const typename Ops::V scale = Ops::broadcast(&block.scale), min = Ops::broadcast(&block.min);
    for (int i = 0; i < q4::kValues; i += Ops::W)
      Ops::storeu(out + i, Ops::fma(Ops::load_u4(block.q + i % 16, i / 16 * 4), scale, min));
  }
};

}  // namespace MULTIHEAD_ISA_NAMESPACE
}  // namespace multihead
