// SIMD primitives for AVX2 + FMA: 8 floats per vector, 16 ymm registers.
// The same operations and exp algorithm as generic.hpp (see there for the contract).
#pragma once

#include "generic.hpp"

#if defined(MULTIHEAD_HAS_AVX2)
#include <immintrin.h>

namespace multihead {
inline namespace MULTIHEAD_ISA_NAMESPACE {
namespace simd {

struct Avx2Ops {
  static constexpr const char* name = "avx2";
  using V = __m256;
  static constexpr int W = 8;

  static V load(const float* p) { return _mm256_load_ps(p); }
  static V loadu(const float* p) { return _mm256_loadu_ps(p); }
  // Pins a loaded vector to a register: GCC otherwise folds a reused load into every FMA that
  // reads it, and the extra loads, not the FMAs, then bound the row-major decode tiles.
  static void in_register(V& x) { asm("" : "+v"(x)); }
  static V loadu(const bf16* p) {  // bf16 is the top half of a float
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
  }
  // 2·W bf16 values as two vectors, the even-indexed and the odd-indexed (see avx512.hpp).
  static void loadu_pairs(const bf16* p, V& even, V& odd) {
    const __m256i x = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
    even = _mm256_castsi256_ps(_mm256_slli_epi32(x, 16));
    odd = _mm256_castsi256_ps(_mm256_and_si256(x, _mm256_set1_epi32(int(0xFFFF0000u))));
  }
  static V load_i8(const std::int8_t* p) {  // see generic.hpp
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
  }
  static V load_u4(const std::uint8_t* p, int shift) {
    const __m256i x = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
    return _mm256_cvtepi32_ps(
        _mm256_and_si256(_mm256_srlv_epi32(x, _mm256_set1_epi32(shift)), _mm256_set1_epi32(15)));
  }
  static V loadu(const fp16* p) {
#if defined(MULTIHEAD_HAS_F16C)
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
#else
    return _mm256_setr_ps(to_float(p[0]), to_float(p[1]), to_float(p[2]), to_float(p[3]),
                          to_float(p[4]), to_float(p[5]), to_float(p[6]), to_float(p[7]));
#endif
  }
  template <class S>
  static void widen(const S* p, float* out, std::int64_t n) {
    convert(p, out, n);
  }
  static void store(float* p, V v) { _mm256_store_ps(p, v); }
  static void storeu(float* p, V v) { _mm256_storeu_ps(p, v); }
  static V set1(float x) { return _mm256_set1_ps(x); }
  // A bf16 in every lane: the 16 bits in both halves of each word, the low half cleared.
  static V broadcast(const bf16* p) {
    const __m256i x = _mm256_set1_epi16(static_cast<short>(p->bits));
    return _mm256_castsi256_ps(_mm256_and_si256(x, _mm256_set1_epi32(int(0xFFFF0000u))));
  }
  static V broadcast(const float* p) { return _mm256_broadcast_ss(p); }
  static V zero() { return _mm256_setzero_ps(); }
  static V fma(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
  static V mul(V a, V b) { return _mm256_mul_ps(a, b); }
  static V add(V a, V b) { return _mm256_add_ps(a, b); }
  static V sub(V a, V b) { return _mm256_sub_ps(a, b); }
  static V max(V a, V b) { return _mm256_max_ps(a, b); }
  static V select_greater(V a, V b, V x, V y) {
    return _mm256_blendv_ps(x, y, _mm256_cmp_ps(a, b, _CMP_GT_OQ));
  }
  static V neg_inf_to_zero(V x) {
    const V is_inf = _mm256_cmp_ps(x, _mm256_set1_ps(negative_infinity), _CMP_EQ_OQ);
    return _mm256_andnot_ps(is_inf, x);
  }
  [[gnu::always_inline]] static V exp(V x) {
    using namespace exp_constants;
    // max and min return their second operand when either is NaN: x last, so NaN stays NaN (its
    // exponent bits below come out as 1.0f's, and p is NaN).
    x = _mm256_min_ps(_mm256_set1_ps(88.7f), _mm256_max_ps(_mm256_set1_ps(-88.0f), x));
    const V n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(log2e)),
                                _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    V r = _mm256_fnmadd_ps(n, _mm256_set1_ps(ln2_hi), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(ln2_lo), r);
    const V p = exp_polynomial<Avx2Ops>(r);
    // 2^n from its bits: n = -127 → 0.0f, n = 128 → +inf.
    const __m256i exponent = _mm256_slli_epi32(
        _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(exponent));
  }
  static float first(V a) { return _mm256_cvtss_f32(a); }
  static float reduce_add(V a) {
    __m128 x = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    x = _mm_add_ps(x, _mm_movehl_ps(x, x));
    return _mm_cvtss_f32(_mm_add_ss(x, _mm_movehdup_ps(x)));
  }
  static float reduce_max(V a) {
    __m128 x = _mm_max_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    x = _mm_max_ps(x, _mm_movehl_ps(x, x));
    return _mm_cvtss_f32(_mm_max_ss(x, _mm_movehdup_ps(x)));
  }
  static void reduce4(V a, V b, V c, V d, float* out) {
    // Per 128-bit half: [a, b, c, d] partial sums after two rounds of pairwise adds.
    const V abcd = _mm256_hadd_ps(_mm256_hadd_ps(a, b), _mm256_hadd_ps(c, d));
    _mm_storeu_ps(out, _mm_add_ps(_mm256_castps256_ps128(abcd), _mm256_extractf128_ps(abcd, 1)));
  }
};

}  // namespace simd
}  // namespace MULTIHEAD_ISA_NAMESPACE
}  // namespace multihead
#endif  // MULTIHEAD_HAS_AVX2
