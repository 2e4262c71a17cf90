// The SIMD primitives of the ISA this translation unit is compiled for (see isa.hpp):
// simd::Ops is Avx512Ops, Avx2Ops or GenericOps.
#pragma once

#include "avx512.hpp"

namespace multihead {
inline namespace MULTIHEAD_ISA_NAMESPACE {
namespace simd {

#if defined(MULTIHEAD_HAS_AVX512)
using Ops = Avx512Ops;
#elif defined(MULTIHEAD_HAS_AVX2)
using Ops = Avx2Ops;
#else
using Ops = GenericOps;
#endif

}  // namespace simd
}  // namespace MULTIHEAD_ISA_NAMESPACE
}  // namespace multihead
