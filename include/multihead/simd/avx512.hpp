// SIMD primitives for AVX-512F: 16 floats per vector, 32 zmm registers, mask registers.
// The same operations and exp algorithm as generic.hpp (see there for the contract).
#pragma once

#include "avx2.hpp"

#if defined(MULTIHEAD_HAS_AVX512)
#include <immintrin.h>

namespace multihead {
inline namespace MULTIHEAD_ISA_NAMESPACE {
namespace simd {

struct Avx512Ops {
  static constexpr const char* name = "avx512";
  using V = __m512;
  // 48-row blocks: 3 × 8 = 24 accumulators, 3 Q vectors and a broadcast of the 32 registers.
  // Tiles of 32 or 128 keys measured the same as 64.
  static constexpr int W = 16, NV = 3, MRJ = 8, MRC = 8, BC = 64;

  static V load(const float* p) { return _mm512_load_ps(p); }
  static void store(float* p, V v) { _mm512_store_ps(p, v); }
  static V set1(float x) { return _mm512_set1_ps(x); }
  static V broadcast(const float* p) { return _mm512_set1_ps(*p); }
  static V zero() { return _mm512_setzero_ps(); }
  static V fma(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
  static V mul(V a, V b) { return _mm512_mul_ps(a, b); }
  static V add(V a, V b) { return _mm512_add_ps(a, b); }
  static V sub(V a, V b) { return _mm512_sub_ps(a, b); }
  static V max(V a, V b) { return _mm512_max_ps(a, b); }
  static V mask_after(float key, V limit, V x) {
    const __mmask16 after = _mm512_cmp_ps_mask(_mm512_set1_ps(key), limit, _CMP_GT_OQ);
    return _mm512_mask_mov_ps(x, after, _mm512_set1_ps(negative_infinity));
  }
  static V neg_inf_to_zero(V x) {
    const __mmask16 is_inf = _mm512_cmp_ps_mask(x, _mm512_set1_ps(negative_infinity), _CMP_EQ_OQ);
    return _mm512_mask_mov_ps(x, is_inf, _mm512_setzero_ps());
  }
  static V exp(V x) {
    using namespace exp_constants;
    x = _mm512_max_ps(x, _mm512_set1_ps(-104.0f));  // -inf → -104 → exactly 0 below
    const V n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(log2e)),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    V r = _mm512_fnmadd_ps(n, _mm512_set1_ps(ln2_hi), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(ln2_lo), r);
    const V p = exp_polynomial<Avx512Ops>(r);
    return _mm512_scalef_ps(p, n);  // p · 2^n, overflow and underflow handled by the hardware
  }
};

}  // namespace simd
}  // namespace MULTIHEAD_ISA_NAMESPACE
}  // namespace multihead
#endif  // MULTIHEAD_HAS_AVX512
