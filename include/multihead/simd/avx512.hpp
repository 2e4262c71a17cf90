// SIMD primitives for AVX-512F: 16 floats per vector, 32 zmm registers, mask registers.
// The same operations and exp algorithm as generic.hpp (see there for the contract).
#pragma once

#include "avx2.hpp"

#if defined(MULTIHEAD_HAS_AVX512)
#include <immintrin.h>

#include <cstdint>
#include <cstring>

namespace multihead {
inline namespace MULTIHEAD_ISA_NAMESPACE {
namespace simd {

struct Avx512Ops {
  static constexpr const char* name = "avx512";
  using V = __m512;
  static constexpr int W = 16;

  static V load(const float* p) { return _mm512_load_ps(p); }
  static V loadu(const float* p) { return _mm512_loadu_ps(p); }
  // Pins a loaded vector to a register: GCC otherwise folds a reused load into every FMA that
  // reads it, and the extra loads, not the FMAs, then bound the row-major decode tiles.
  static void in_register(V& x) { asm("" : "+v"(x)); }
  static V loadu(const bf16* p) {  // bf16 is the top half of a float
    const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
  }
  // 2·W bf16 values as two float vectors without a lane-crossing shuffle: the even-indexed
  // ones (the low halves of the 32-bit words, shifted up) and the odd-indexed (the high halves).
  static void loadu_pairs(const bf16* p, V& even, V& odd) {
    const __m512i x = _mm512_loadu_si512(p);
    even = _mm512_castsi512_ps(_mm512_slli_epi32(x, 16));
    odd = _mm512_castsi512_ps(_mm512_and_si512(x, _mm512_set1_epi32(int(0xFFFF0000u))));
  }
  static V load_i8(const std::int8_t* p) {  // see generic.hpp
    return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
  }
  static V load_u4(const std::uint8_t* p, int shift) {
    const __m512i x = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    return _mm512_cvtepi32_ps(
        _mm512_and_si512(_mm512_srlv_epi32(x, _mm512_set1_epi32(shift)), _mm512_set1_epi32(15)));
  }
  static V loadu(const fp16* p) {
    return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  }
  template <class S>
  static void widen(const S* p, float* out, std::int64_t n) {
    convert(p, out, n);
  }
  static void store(float* p, V v) { _mm512_store_ps(p, v); }
  static void storeu(float* p, V v) { _mm512_storeu_ps(p, v); }
  static V set1(float x) { return _mm512_set1_ps(x); }
  static V broadcast(const float* p) { return _mm512_set1_ps(*p); }
  // A bf16 in every lane: the 16 bits in both halves of each word, the low half cleared.
  static V broadcast(const bf16* p) {
    const __m512i x = _mm512_set1_epi16(static_cast<short>(p->bits));
    return _mm512_castsi512_ps(_mm512_and_si512(x, _mm512_set1_epi32(int(0xFFFF0000u))));
  }
  static V zero() { return _mm512_setzero_ps(); }
  static V fma(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
  static V mul(V a, V b) { return _mm512_mul_ps(a, b); }
  static V add(V a, V b) { return _mm512_add_ps(a, b); }
  static V sub(V a, V b) { return _mm512_sub_ps(a, b); }
  static V max(V a, V b) { return _mm512_max_ps(a, b); }
  static V select_greater(V a, V b, V x, V y) {
    return _mm512_mask_mov_ps(x, _mm512_cmp_ps_mask(a, b, _CMP_GT_OQ), y);
  }
  static V neg_inf_to_zero(V x) {
    const __mmask16 is_inf = _mm512_cmp_ps_mask(x, _mm512_set1_ps(negative_infinity), _CMP_EQ_OQ);
    return _mm512_mask_mov_ps(x, is_inf, _mm512_setzero_ps());
  }
  [[gnu::always_inline]] static V exp(V x) {
    using namespace exp_constants;
    // -inf → -104 → exactly 0 below; x second, as max returns it when either is NaN: NaN stays.
    x = _mm512_max_ps(_mm512_set1_ps(-104.0f), x);
    const V n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(log2e)),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    V r = _mm512_fnmadd_ps(n, _mm512_set1_ps(ln2_hi), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(ln2_lo), r);
    const V p = exp_polynomial<Avx512Ops>(r);
    return _mm512_scalef_ps(p, n);  // p · 2^n, overflow and underflow handled by the hardware
  }
  static float first(V a) { return _mm512_cvtss_f32(a); }
  static float reduce_add(V a) { return _mm512_reduce_add_ps(a); }
  static float reduce_max(V a) { return _mm512_reduce_max_ps(a); }
  static void reduce4(V a, V b, V c, V d, float* out) {
    // Fold 512 → 128 bits per input, keeping the four apart in the four 128-bit lanes:
    // [a b c d] lane-wise partial sums, then the sum within each lane, then lanes 0, 4, 8, 12.
    const V ab = _mm512_add_ps(_mm512_shuffle_f32x4(a, b, 0x44), _mm512_shuffle_f32x4(a, b, 0xEE));
    const V cd = _mm512_add_ps(_mm512_shuffle_f32x4(c, d, 0x44), _mm512_shuffle_f32x4(c, d, 0xEE));
    V x = _mm512_add_ps(_mm512_shuffle_f32x4(ab, cd, 0x88), _mm512_shuffle_f32x4(ab, cd, 0xDD));
    x = _mm512_add_ps(x, _mm512_shuffle_ps(x, x, 0xB1));
    x = _mm512_add_ps(x, _mm512_shuffle_ps(x, x, 0x4E));
    const V sums = _mm512_permutexvar_ps(_mm512_setr_epi32(0, 4, 8, 12, 0, 4, 8, 12, 0, 4, 8, 12,
                                                           0, 4, 8, 12), x);
    _mm_storeu_ps(out, _mm512_castps512_ps128(sums));
  }
};

#if defined(MULTIHEAD_HAS_AVX512BF16)
// The bf16 dot product of AVX-512 BF16 (vdpbf16ps, twice the fp32 FMA's rate): vectors of 16
// pairs of bf16 values, pair i in 32-bit lane i (its first value in the low half, as two
// consecutive bf16 values lie in memory). dot(acc, a, b) adds a.first·b.first + a.second·b.second
// to each lane of acc: bf16 × bf16 products are exact in fp32 and each addition rounds to
// nearest even, as two fp32 FMAs would (subnormal inputs and results are taken as zero).
struct Avx512Bf16Pairs {
  using V = __m512;
  using Pairs = __m512i;
  static constexpr int W = 16;

  static Pairs load(const std::uint32_t* p) { return _mm512_load_si512(p); }
  static Pairs broadcast(const std::uint32_t* p) { return _mm512_set1_epi32(int(*p)); }
  static Pairs broadcast(const bf16* p) {  // the pair p[0], p[1]
    std::uint32_t pair;
    std::memcpy(&pair, p, sizeof pair);
    return _mm512_set1_epi32(int(pair));
  }
  static V dot(V acc, Pairs a, Pairs b) {
    return _mm512_dpbf16_ps(acc, reinterpret_cast<__m512bh&>(a), reinterpret_cast<__m512bh&>(b));
  }
  // first and second rounded to bf16 (nearest even; subnormals to zero) and paired lane by lane.
  static Pairs round_pairs(V first, V second) {
    const __m256bh a = _mm512_cvtneps_pbh(first), b = _mm512_cvtneps_pbh(second);
    return pair(reinterpret_cast<const __m256i&>(a), reinterpret_cast<const __m256i&>(b));
  }
  static void store(std::uint32_t* p, Pairs x) { _mm512_store_si512(p, x); }
  // W columns of two bf16 rows as pairs: out[c] = (first[c], second[c]).
  static void interleave(const bf16* first, const bf16* second, std::uint32_t* out) {
    _mm512_storeu_si512(out, pair(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(first)),
                                  _mm256_loadu_si256(reinterpret_cast<const __m256i*>(second))));
  }

 private:
  // 16 bf16 values of a and of b as pairs (a[i], b[i]): AVX-512F alone, no word shuffles.
  static Pairs pair(__m256i a, __m256i b) {
    return _mm512_or_si512(_mm512_cvtepu16_epi32(a), _mm512_slli_epi32(_mm512_cvtepu16_epi32(b), 16));
  }
};
#endif  // MULTIHEAD_HAS_AVX512BF16

}  // namespace simd
}  // namespace MULTIHEAD_ISA_NAMESPACE
}  // namespace multihead
#endif  // MULTIHEAD_HAS_AVX512
