// How the transposed tiles (column_tiles.hpp) multiply: one multiply-add per value in fp32
// (FloatProducts, every ISA), or one bf16 dot product per pair of values (Bf16PairProducts,
// AVX-512 BF16 builds), which does the work of two FMAs at the FMA's rate.
//
// A policy names what the micro-tiles read:
//   Element            an element of the packed operands — Qᵀ, the probabilities Pᵀ, and the V
//                      rows P·V broadcasts from: a float, or a 32-bit pair of bf16 values
//   Key                an element of the K rows Q·Kᵀ broadcasts from (read in place)
//   kStep              values per element along the reduction (1 or 2): Q·Kᵀ steps the head
//                      dim, P·V the keys, kStep at a time
//   load(const Element*), broadcast(const Key*), broadcast(const Element*), madd(acc, a, b)
// With pairs, Qᵀ pairs consecutive dims of a row, Pᵀ consecutive keys, and a V tile is
// interleaved by pairs of keys before P·V (element c of pair row j/2: V[j][c], V[j + 1][c]).
#pragma once

#include <cstdint>

#include "../simd/ops.hpp"
#include "../storage/half.hpp"

namespace multihead {
inline namespace MULTIHEAD_ISA_NAMESPACE {
namespace detail {

template <class Ops>
struct FloatProducts {
  using V = typename Ops::V;
  using Element = float;
  using Key = float;
  using Operand = V;
  static constexpr int kStep = 1;
  static V load(const float* p) { return Ops::load(p); }
  static V broadcast(const float* p) { return Ops::broadcast(p); }
  static V madd(V acc, V a, V b) { return Ops::fma(a, b, acc); }
};

#if defined(MULTIHEAD_HAS_AVX512BF16)
struct Bf16PairProducts {
  using Pairs = simd::Avx512Bf16Pairs;
  using V = Pairs::V;
  using Element = std::uint32_t;
  using Key = bf16;
  using Operand = Pairs::Pairs;
  static constexpr int kStep = 2;
  static Operand load(const std::uint32_t* p) { return Pairs::load(p); }
  static Operand broadcast(const bf16* p) { return Pairs::broadcast(p); }
  static Operand broadcast(const std::uint32_t* p) { return Pairs::broadcast(p); }
  static V madd(V acc, Operand a, Operand b) { return Pairs::dot(acc, a, b); }
};
inline constexpr bool kHasBf16Products = true;
#else
inline constexpr bool kHasBf16Products = false;
#endif

}  // namespace detail
}  // namespace MULTIHEAD_ISA_NAMESPACE
}  // namespace multihead
