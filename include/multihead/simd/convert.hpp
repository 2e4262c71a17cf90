// Bulk conversions between float and the 16-bit storage types (storage/half.hpp), n elements
// at a time, by this ISA's instructions; the same bits as the scalar conversions on every path.
#pragma once

#include <cstdint>
#include <cstring>

#include "../core/isa.hpp"
#include "../storage/half.hpp"

namespace multihead {
inline namespace MULTIHEAD_ISA_NAMESPACE {

// ---- Bulk conversions of n elements -------------------------------------------------------------
// Any alignment; src and dst must not overlap. Each vector path handles whole vectors and leaves
// the remainder to the scalar functions above, which give the same bits. Its loop runs to
// n / W · W: bounded by i + W <= n instead, it made GCC 12 warn of undefined behaviour in the
// remainder loop wherever n is known at compile time.

inline void convert(const float* src, float* dst, std::int64_t n) {
  if (n > 0) std::memcpy(dst, src, static_cast<std::size_t>(n) * sizeof(float));
}

inline void convert(const float* src, bf16* dst, std::int64_t n) {
  std::int64_t i = 0;
#if defined(MULTIHEAD_HAS_AVX512BF16)
  // The instruction rounds to nearest even and quiets NaNs like to_bf16, but treats float
  // subnormals as zero; the rare vector holding one is redone with the integer path below.
  const __m512i abs_mask = _mm512_set1_epi32(0x7fffffff);
  const __m512i one = _mm512_set1_epi32(1), subnormal_max = _mm512_set1_epi32(0x7fffff);
  for (; i < n / 16 * 16; i += 16) {
    const __m512 x = _mm512_loadu_ps(src + i);
    const __m512i abs_minus_one =
        _mm512_sub_epi32(_mm512_and_si512(_mm512_castps_si512(x), abs_mask), one);
    // |x| − 1 < 0x7fffff (unsigned) exactly when 0 < |x| < 2^-126: a subnormal.
    if (_mm512_cmplt_epu32_mask(abs_minus_one, subnormal_max) != 0) {
      for (std::int64_t j = i; j < i + 16; ++j) dst[j] = to_bf16(src[j]);
      continue;
    }
    const __m256bh h = _mm512_cvtneps_pbh(x);
    std::memcpy(dst + i, &h, sizeof h);
  }
#elif defined(MULTIHEAD_HAS_AVX512)
  // to_bf16's integer rounding, 16 lanes at a time.
  const __m512i abs_mask = _mm512_set1_epi32(0x7fffffff), inf = _mm512_set1_epi32(0x7f800000);
  const __m512i one = _mm512_set1_epi32(1), bias = _mm512_set1_epi32(0x7fff);
  const __m512i quiet = _mm512_set1_epi32(0x40);
  for (; i < n / 16 * 16; i += 16) {
    const __m512i u = _mm512_loadu_si512(src + i);
    const __mmask16 nan = _mm512_cmpgt_epi32_mask(_mm512_and_si512(u, abs_mask), inf);
    const __m512i high = _mm512_srli_epi32(u, 16);
    const __m512i rounded = _mm512_srli_epi32(
        _mm512_add_epi32(u, _mm512_add_epi32(bias, _mm512_and_si512(high, one))), 16);
    const __m512i h = _mm512_mask_mov_epi32(rounded, nan, _mm512_or_si512(high, quiet));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + i), _mm512_cvtepi32_epi16(h));
  }
#elif defined(MULTIHEAD_HAS_AVX2)
  // to_bf16's integer rounding, 2 × 8 lanes at a time, packed to 16 bits.
  const __m256i abs_mask = _mm256_set1_epi32(0x7fffffff), inf = _mm256_set1_epi32(0x7f800000);
  const __m256i one = _mm256_set1_epi32(1), bias = _mm256_set1_epi32(0x7fff);
  const __m256i quiet = _mm256_set1_epi32(0x40);
  const auto round8 = [&](const float* p) {
    const __m256i u = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
    const __m256i nan = _mm256_cmpgt_epi32(_mm256_and_si256(u, abs_mask), inf);
    const __m256i high = _mm256_srli_epi32(u, 16);
    const __m256i rounded = _mm256_srli_epi32(
        _mm256_add_epi32(u, _mm256_add_epi32(bias, _mm256_and_si256(high, one))), 16);
    return _mm256_blendv_epi8(rounded, _mm256_or_si256(high, quiet), nan);
  };
  for (; i < n / 16 * 16; i += 16) {
    // Every lane is at most 0xffff, so the unsigned saturating pack is exact; it interleaves
    // 128-bit halves, which the permute puts back in order.
    const __m256i packed = _mm256_packus_epi32(round8(src + i), round8(src + i + 8));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + i),
                        _mm256_permute4x64_epi64(packed, 0xd8));
  }
#endif
  for (; i < n; ++i) dst[i] = to_bf16(src[i]);
}

inline void convert(const bf16* src, float* dst, std::int64_t n) {
  std::int64_t i = 0;
#if defined(MULTIHEAD_HAS_AVX512)
  for (; i < n / 16 * 16; i += 16) {
    const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + i));
    _mm512_storeu_si512(dst + i, _mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
  }
#elif defined(MULTIHEAD_HAS_AVX2)
  for (; i < n / 8 * 8; i += 8) {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + i),
                        _mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
  }
#endif
  for (; i < n; ++i) dst[i] = to_float(src[i]);
}

inline void convert(const float* src, fp16* dst, std::int64_t n) {
  std::int64_t i = 0;
#if defined(MULTIHEAD_HAS_AVX512)
  for (; i < n / 16 * 16; i += 16) {
    const __m256i h =
        _mm512_cvtps_ph(_mm512_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + i), h);
  }
#elif defined(MULTIHEAD_HAS_F16C)
  for (; i < n / 8 * 8; i += 8) {
    const __m128i h =
        _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i), h);
  }
#endif
  for (; i < n; ++i) dst[i] = to_fp16(src[i]);
}

inline void convert(const fp16* src, float* dst, std::int64_t n) {
  std::int64_t i = 0;
#if defined(MULTIHEAD_HAS_AVX512)
  for (; i < n / 16 * 16; i += 16)
    _mm512_storeu_ps(
        dst + i, _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + i))));
#elif defined(MULTIHEAD_HAS_F16C)
  for (; i < n / 8 * 8; i += 8)
    _mm256_storeu_ps(dst + i,
                     _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i))));
#endif
  for (; i < n; ++i) dst[i] = to_float(src[i]);
}

}  // namespace MULTIHEAD_ISA_NAMESPACE
}  // namespace multihead
