// Which instruction set this translation unit was compiled for.
//
// The ISA is the consumer's choice, made with compiler flags (-mavx2 -mfma, -march=x86-64-v4,
// -march=native, ...); the library never adds -march itself. This header maps the compiler's
// macros to multihead's own switches, each level implying the ones below:
//   MULTIHEAD_HAS_AVX512  (__AVX512F__, needs AVX2 and FMA too)
//   MULTIHEAD_HAS_AVX2    (__AVX2__ and __FMA__)
// and the extensions some primitives use where present, without changing the ISA namespace:
//   MULTIHEAD_HAS_AVX512BF16  (__AVX512BF16__ in an AVX-512 build: float → bf16 in one instruction)
//   MULTIHEAD_HAS_F16C        (__F16C__: fp16 ↔ float in hardware; implied by AVX-512)
// Define MULTIHEAD_NO_SIMD to force the generic path whatever the flags say. This is the one
// header that reads the compiler's feature macros; everything else reads these.
//
// Everything in multihead lives in an inline namespace named after the ISA (multihead::avx512,
// multihead::avx2, multihead::generic), so translation units compiled for different ISAs can be
// linked into one program without breaking the one-definition rule.
#pragma once

#if !defined(MULTIHEAD_NO_SIMD) && defined(__AVX2__) && defined(__FMA__)
#define MULTIHEAD_HAS_AVX2 1
#endif

#if defined(MULTIHEAD_HAS_AVX2) && defined(__AVX512F__)
#define MULTIHEAD_HAS_AVX512 1
#endif

#if defined(MULTIHEAD_HAS_AVX512) && defined(__AVX512BF16__)
#define MULTIHEAD_HAS_AVX512BF16 1
#endif

#if !defined(MULTIHEAD_NO_SIMD) && (defined(__F16C__) || defined(MULTIHEAD_HAS_AVX512))
#define MULTIHEAD_HAS_F16C 1
#endif

#if defined(__AVX512F__) && !defined(__AVX2__)
#error "multihead: __AVX512F__ without __AVX2__ is an inconsistent set of compiler flags"
#endif

#if defined(MULTIHEAD_HAS_AVX512)
#define MULTIHEAD_ISA_NAMESPACE avx512
#elif defined(MULTIHEAD_HAS_AVX2)
#define MULTIHEAD_ISA_NAMESPACE avx2
#else
#define MULTIHEAD_ISA_NAMESPACE generic
#endif

// GCC 12's AVX-512 intrinsic headers initialise their "undefined" vectors as `__m512 __Y = __Y;`,
// and -Wall then warns wherever such an intrinsic is inlined into a caller, hundreds of times
// through multihead's kernels and Eigen's (GCC bug 105593, fixed in GCC 13). Those warnings are
// matched to where the intrinsic is written, so they are silenced by including the intrinsic
// headers once here, before anything else does: multihead's headers include this one before
// Eigen. (A program that includes Eigen or <immintrin.h> before multihead sees them again.)
#if defined(__x86_64__) || defined(__i386__)
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ < 13
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop
#else
#include <immintrin.h>
#endif
#endif

namespace multihead {
inline namespace MULTIHEAD_ISA_NAMESPACE {

// The name of the path compiled into this translation unit: "avx512", "avx2" or "generic".
constexpr const char* isa_name() noexcept {
#if defined(MULTIHEAD_HAS_AVX512)
  return "avx512";
#elif defined(MULTIHEAD_HAS_AVX2)
  return "avx2";
#else
  return "generic";
#endif
}

}  // namespace MULTIHEAD_ISA_NAMESPACE
}  // namespace multihead
