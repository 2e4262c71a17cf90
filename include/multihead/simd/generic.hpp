// SIMD primitives, generic version: what every other ISA file specialises.
//
// An "Ops" struct gives the kernels a vector type V of W floats and the handful of operations
// they need (loads that widen bf16 / fp16, fma, max, exp, lane selection, lane reductions, bulk
// widening). It holds primitives only: how the kernels block their tiles for the ISA's register
// file lives beside the tiles (attention/blocking.hpp). The generic version is plain loops over small arrays, which compilers vectorise for the
// baseline (SSE2 on x86-64); it is correct for every input, and the reference for the others.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>

#include "../core/isa.hpp"
#include "../storage/half.hpp"
#include "convert.hpp"

namespace multihead {
inline namespace MULTIHEAD_ISA_NAMESPACE {
namespace simd {

// exp(x) for every path: n = round(x·log2 e), r = x − n·ln 2 by a two-constant Cody–Waite
// reduction (|r| ≤ ln2/2), e^r by a degree-6 polynomial fitted on that interval
// (|error| < 2e-9), and the result e^r · 2^n.
// Accuracy: at most 2 ULP from the correctly rounded exp for x in [-87.3, 88.3], the range of
// normal results (tests/simd/test_simd.cpp sweeps it on every ISA). Below it the result is 0 or
// subnormal (absolute error < 1.2e-38), and exp(-inf) is exactly 0, which masked scores need.
// On (88.3, ln FLT_MAX ≈ 88.72] the result is +inf or within 2 ULP (the generic and AVX2
// versions overflow early, from about 88.38, where n rounds to 128); above it, +inf. The
// kernels pass arguments ≤ 0, or NaN: exp(NaN) is NaN on every path, which is how a NaN score
// reaches its row's output (attention/modifiers.hpp, "Non-finite values").
namespace exp_constants {
constexpr float c1 = 1.0000000377162138f;
constexpr float c2 = 0.50000000471177577f;
constexpr float c3 = 0.16666415514653275f;
constexpr float c4 = 0.041666352896775157f;
constexpr float c5 = 0.0083751263981533357f;
constexpr float c6 = 0.0013941108433972675f;
constexpr float log2e = 1.44269504088896341f;
constexpr float ln2_hi = 0.693359375f;     // 9 significant bits, so n·ln2_hi is exact
constexpr float ln2_lo = -2.12194440e-4f;  // ln 2 − ln2_hi
}  // namespace exp_constants

// e^r ≈ 1 + r·(c1 + r·(c2 + … + r·c6)) on |r| ≤ ln2/2, by Horner's rule on any Ops' vectors.
template <class Ops>
typename Ops::V exp_polynomial(typename Ops::V r) {
  using namespace exp_constants;
  typename Ops::V p = Ops::set1(c6);
  for (const float c : {c5, c4, c3, c2, c1, 1.0f}) p = Ops::fma(p, r, Ops::set1(c));
  return p;
}

constexpr float negative_infinity = -std::numeric_limits<float>::infinity();

inline float exp_scalar(float x) {
  using namespace exp_constants;
  const bool nan = x != x;  // computed on 0 instead: a NaN must not reach the int conversion
  x = nan ? 0.0f : std::min(std::max(x, -88.0f), 88.7f);  // -inf → -88 → n = -127 → exactly 0
  // Round to nearest with the 1.5·2^23 trick: no libm call, no SSE4.1 needed.
  const float n = (x * log2e + 12582912.0f) - 12582912.0f;
  float r = x - n * ln2_hi;
  r = r - n * ln2_lo;
  float p = c6;
  p = p * r + c5;
  p = p * r + c4;
  p = p * r + c3;
  p = p * r + c2;
  p = p * r + c1;
  p = p * r + 1.0f;
  // 2^n from its bits: n = -127 gives a zero exponent field, 0.0f; n = 128 gives +inf.
  const std::int32_t bits = (static_cast<std::int32_t>(n) + 127) << 23;
  float two_n;
  std::memcpy(&two_n, &bits, sizeof two_n);
  return nan ? std::numeric_limits<float>::quiet_NaN() : p * two_n;
}

struct GenericOps {
  static constexpr const char* name = "generic";
  // Four lanes, one SSE register on baseline x86-64: the compiler keeps the tiles' eight
  // accumulators in registers and vectorises each lane loop (eight lanes spilled, 2× slower).
  static constexpr int W = 4;
  struct V {
    float v[W];
  };

  static V load(const float* p) {
    V r;
    for (int i = 0; i < W; ++i) r.v[i] = p[i];
    return r;
  }
  static V loadu(const float* p) { return load(p); }  // any alignment
  static void in_register(V&) {}  // see avx512.hpp
  // W cached bf16 / fp16 values, widened to float.
  template <class Half>
  static V loadu(const Half* p) {
    V r;
    for (int i = 0; i < W; ++i) r.v[i] = to_float(p[i]);
    return r;
  }
  // 2·W bf16 values as two vectors: the even-indexed ones and the odd-indexed ones. The wide
  // ISAs split them so without a lane-crossing shuffle (avx512.hpp); the order is theirs.
  static void loadu_pairs(const bf16* p, V& even, V& odd) {
    for (int i = 0; i < W; ++i) {
      even.v[i] = to_float(p[2 * i]);
      odd.v[i] = to_float(p[2 * i + 1]);
    }
  }
  // W signed bytes as floats (q8's levels, storage/quantized.hpp).
  static V load_i8(const std::int8_t* p) {
    V r;
    for (int i = 0; i < W; ++i) r.v[i] = static_cast<float>(p[i]);
    return r;
  }
  // The low (shift 0) or high (shift 4) nibbles of W bytes as floats (q4's levels).
  static V load_u4(const std::uint8_t* p, int shift) {
    V r;
    for (int i = 0; i < W; ++i) r.v[i] = static_cast<float>((p[i] >> shift) & 15);
    return r;
  }
  // n stored values from p widened into out (simd/convert.hpp): what a kernel does with rows it
  // cannot read in place.
  template <class S>
  static void widen(const S* p, float* out, std::int64_t n) {
    convert(p, out, n);
  }
  static void store(float* p, V a) {
    for (int i = 0; i < W; ++i) p[i] = a.v[i];
  }
  static void storeu(float* p, V a) { store(p, a); }  // any alignment
  static V set1(float x) {
    V r;
    for (int i = 0; i < W; ++i) r.v[i] = x;
    return r;
  }
  static V broadcast(const float* p) { return set1(*p); }
  static V broadcast(const bf16* p) { return set1(to_float(*p)); }  // a block's scale
  static V zero() { return set1(0.0f); }
  static V fma(V a, V b, V c) {
    for (int i = 0; i < W; ++i) c.v[i] += a.v[i] * b.v[i];
    return c;
  }
  static V mul(V a, V b) {
    for (int i = 0; i < W; ++i) a.v[i] *= b.v[i];
    return a;
  }
  static V add(V a, V b) {
    for (int i = 0; i < W; ++i) a.v[i] += b.v[i];
    return a;
  }
  static V sub(V a, V b) {
    for (int i = 0; i < W; ++i) a.v[i] -= b.v[i];
    return a;
  }
  static V max(V a, V b) {
    for (int i = 0; i < W; ++i) a.v[i] = a.v[i] < b.v[i] ? b.v[i] : a.v[i];
    return a;
  }
  // a > b ? y : x, lane by lane (false for NaN lanes).
  static V select_greater(V a, V b, V x, V y) {
    for (int i = 0; i < W; ++i)
      if (a.v[i] > b.v[i]) x.v[i] = y.v[i];
    return x;
  }
  // x == -inf ? 0 : x: a row that has seen no key must not compute -inf − (-inf) = NaN.
  static V neg_inf_to_zero(V x) {
    for (int i = 0; i < W; ++i)
      if (x.v[i] == negative_infinity) x.v[i] = 0.0f;
    return x;
  }
  [[gnu::always_inline]] static V exp(V x) {
    for (int i = 0; i < W; ++i) x.v[i] = exp_scalar(x.v[i]);
    return x;
  }
  // The sum and the maximum of the lanes.
  // Lane 0.
  static float first(V a) { return a.v[0]; }
  static float reduce_add(V a) {
    float s = a.v[0];
    for (int i = 1; i < W; ++i) s += a.v[i];
    return s;
  }
  static float reduce_max(V a) {
    float m = a.v[0];
    for (int i = 1; i < W; ++i) m = m < a.v[i] ? a.v[i] : m;
    return m;
  }
  // out[0..3] = the lane sums of a, b, c, d (the ISA versions share the shuffles among them).
  static void reduce4(V a, V b, V c, V d, float* out) {
    out[0] = reduce_add(a);
    out[1] = reduce_add(b);
    out[2] = reduce_add(c);
    out[3] = reduce_add(d);
  }
};

}  // namespace simd
}  // namespace MULTIHEAD_ISA_NAMESPACE
}  // namespace multihead
