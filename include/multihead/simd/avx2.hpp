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
  // 3 × 4 = 12 accumulators, 3 Q vectors and a broadcast fill the 16 registers; 24-row blocks
  // need 1.5× less K/V traffic per flop than 16-row ones (measured faster than 2 × 6 and 4 × 3).
  static constexpr int W = 8, NV = 3, MRJ = 4, MRC = 4, BC = 64;

  static V load(const float* p) { return _mm256_load_ps(p); }
  static void store(float* p, V v) { _mm256_store_ps(p, v); }
  static V set1(float x) { return _mm256_set1_ps(x); }
  static V broadcast(const float* p) { return _mm256_broadcast_ss(p); }
  static V zero() { return _mm256_setzero_ps(); }
  static V fma(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
  static V mul(V a, V b) { return _mm256_mul_ps(a, b); }
  static V add(V a, V b) { return _mm256_add_ps(a, b); }
  static V sub(V a, V b) { return _mm256_sub_ps(a, b); }
  static V max(V a, V b) { return _mm256_max_ps(a, b); }
  static V mask_after(float key, V limit, V x) {
    const V after = _mm256_cmp_ps(_mm256_set1_ps(key), limit, _CMP_GT_OQ);
    return _mm256_blendv_ps(x, _mm256_set1_ps(negative_infinity), after);
  }
  static V neg_inf_to_zero(V x) {
    const V is_inf = _mm256_cmp_ps(x, _mm256_set1_ps(negative_infinity), _CMP_EQ_OQ);
    return _mm256_andnot_ps(is_inf, x);
  }
  static V exp(V x) {
    using namespace exp_constants;
    x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-88.0f)), _mm256_set1_ps(88.7f));
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
};

}  // namespace simd
}  // namespace MULTIHEAD_ISA_NAMESPACE
}  // namespace multihead
#endif  // MULTIHEAD_HAS_AVX2
