// 16-bit storage types for KV caches and their scalar conversions to and from float: the
// definition every bulk and vector path (simd/convert.hpp, the Ops' widening loads) must match.
//
// bf16 (bfloat16) is the top half of a float: 8 exponent bits, 7 mantissa bits, the same range.
// fp16 is IEEE 754 binary16: 5 exponent bits, 10 mantissa bits, largest finite value 65504.
// Both are storage only: every kernel widens to float and computes in float.
//
// Contract, the same on every path (scalar, AVX-512 BF16, AVX-512F, AVX2, F16C), bit for bit:
//  - widening (bf16 → float, fp16 → float) is exact; a NaN stays a NaN of the same sign
//    (bf16 keeps its payload; fp16 NaNs come back quiet, as F16C returns them);
//  - narrowing (float → bf16, float → fp16) rounds to nearest, ties to even; values beyond the
//    largest finite one round to ±inf as IEEE says (|x| ≥ 65520 for fp16); ±inf and ±0 are exact;
//    fp16 subnormals are rounded correctly, and so are float subnormals to bf16 (which the
//    AVX-512 BF16 instruction flushes to zero, so that path patches them); a NaN becomes a quiet
//    NaN of the same sign with the top bits of its payload.
// Because every path gives the same bits, caches filled by different ISA builds are identical.
// (The avx512 namespace covers builds with and without AVX-512 BF16, and avx2 builds with and
// without F16C: their conversions differ in instructions, never in results.)
#pragma once

#include <cstdint>
#include <cstring>
#include <type_traits>

#include "../core/isa.hpp"

namespace multihead {
inline namespace MULTIHEAD_ISA_NAMESPACE {

// Raw bit patterns: trivial and standard-layout, so buffers of them can be memcpy'd and mapped.
struct bf16 {
  std::uint16_t bits;
};
struct fp16 {
  std::uint16_t bits;
};

static_assert(sizeof(bf16) == 2 && std::is_trivial_v<bf16> && std::is_standard_layout_v<bf16>);
static_assert(sizeof(fp16) == 2 && std::is_trivial_v<fp16> && std::is_standard_layout_v<fp16>);

// The element types a KV cache can store.
template <class T>
constexpr bool is_storage_type_v =
    std::is_same_v<T, float> || std::is_same_v<T, bf16> || std::is_same_v<T, fp16>;

namespace detail {

inline std::uint32_t float_bits(float x) {
  std::uint32_t u;
  std::memcpy(&u, &x, sizeof u);
  return u;
}

inline float bits_float(std::uint32_t u) {
  float x;
  std::memcpy(&x, &u, sizeof x);
  return x;
}

}  // namespace detail

// ---- scalar conversions: the definition every bulk path must match -----------------------------

inline float to_float(float x) { return x; }

inline float to_float(bf16 h) { return detail::bits_float(std::uint32_t{h.bits} << 16); }

inline bf16 to_bf16(float x) {
  const std::uint32_t u = detail::float_bits(x);
  if ((u & 0x7fffffffu) > 0x7f800000u)  // NaN: keep sign and top payload, set the quiet bit
    return bf16{static_cast<std::uint16_t>((u >> 16) | 0x0040u)};
  // Adding 0x7fff plus the lowest kept bit carries into the kept bits exactly when the dropped
  // half is above one half, or equal to it with an odd kept part: round to nearest even. A carry
  // out of the mantissa bumps the exponent, which also turns the largest values into ±inf.
  const std::uint32_t rounded = u + 0x7fffu + ((u >> 16) & 1u);
  return bf16{static_cast<std::uint16_t>(rounded >> 16)};
}

inline float to_float(fp16 h) {
  const std::uint32_t sign = std::uint32_t{h.bits & 0x8000u} << 16;
  const std::uint32_t exponent = (h.bits >> 10) & 0x1fu;
  const std::uint32_t mantissa = h.bits & 0x3ffu;
  if (exponent == 0x1f)  // inf, or NaN made quiet (as F16C does)
    return detail::bits_float(sign | 0x7f800000u | (mantissa != 0 ? 0x400000u : 0u) |
                              (mantissa << 13));
  if (exponent == 0) {  // zero or subnormal: mantissa · 2^-24, exact in float
    const float magnitude = static_cast<float>(mantissa) * 5.9604644775390625e-8f;
    return detail::bits_float(sign | detail::float_bits(magnitude));
  }
  return detail::bits_float(sign | ((exponent + 112) << 23) | (mantissa << 13));  // rebias 15 → 127
}

inline fp16 to_fp16(float x) {
  const std::uint32_t u = detail::float_bits(x);
  const auto sign = static_cast<std::uint16_t>((u >> 16) & 0x8000u);
  const std::uint32_t a = u & 0x7fffffffu;
  if (a >= 0x7f800000u) {  // inf stays inf; NaN keeps its top payload and is made quiet
    const std::uint32_t nan = a > 0x7f800000u ? 0x0200u | ((a >> 13) & 0x01ffu) : 0u;
    return fp16{static_cast<std::uint16_t>(sign | 0x7c00u | nan)};
  }
  if (a >= 0x38800000u) {  // at least 2^-14: a normal half, or rounds up to inf
    // Rebias the exponent (127 → 15) and drop 13 mantissa bits, rounding to nearest even; a carry
    // runs into the exponent, and from the largest exponent into 0x7c00 = inf.
    std::uint32_t h = (a - 0x38000000u) >> 13;
    const std::uint32_t dropped = a & 0x1fffu;
    if (dropped > 0x1000u || (dropped == 0x1000u && (h & 1u))) ++h;
    if (h > 0x7c00u) h = 0x7c00u;  // far beyond 65504 the rebiased exponent overflows
    return fp16{static_cast<std::uint16_t>(sign | h)};
  }
  if (a < 0x33000000u) return fp16{sign};  // at most 2^-25, half the smallest subnormal: ±0
  // A subnormal half, mantissa·2^-24: the float's significand (with its hidden bit) shifted
  // right by 126 − exponent, between 14 and 24 places, rounded to nearest even. Rounding up
  // from 0x3ff gives 0x400, the smallest normal half, which is the right encoding.
  const std::uint32_t shift = 126u - (a >> 23);
  const std::uint32_t significand = (a & 0x7fffffu) | 0x800000u;
  std::uint32_t h = significand >> shift;
  const std::uint32_t dropped = significand & ((1u << shift) - 1u);
  const std::uint32_t half = 1u << (shift - 1u);
  if (dropped > half || (dropped == half && (h & 1u))) ++h;
  return fp16{static_cast<std::uint16_t>(sign | h)};
}

// float → Storage for generic code: from_float<bf16>(x) is to_bf16(x).
template <class Storage>
Storage from_float(float x) {
  static_assert(is_storage_type_v<Storage>, "from_float: Storage must be float, bf16 or fp16");
  if constexpr (std::is_same_v<Storage, bf16>) {
    return to_bf16(x);
  } else if constexpr (std::is_same_v<Storage, fp16>) {
    return to_fp16(x);
  } else {
    return x;
  }
}

}  // namespace MULTIHEAD_ISA_NAMESPACE
}  // namespace multihead
