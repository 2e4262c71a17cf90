// How the tiles block their work for each ISA's register file: tuning, kept beside the tiles
// that use it rather than in the SIMD primitives (simd/), which say nothing of tiles.
//   NV   row vectors per query block of the transposed tiles (a block is NV·W rows)
//   MRJ  keys per Q·Kᵀ micro-tile          (MRJ·NV accumulators)
//   MRC  value columns per P·V micro-tile  (MRC·NV accumulators)
//   BC   keys per K/V tile
// Chosen by the vector width W, which names the ISA's register file: 4 (generic, SSE),
// 8 (AVX2, 16 registers), 16 (AVX-512, 32 registers).
#pragma once

#include "../core/isa.hpp"

namespace multihead {
inline namespace MULTIHEAD_ISA_NAMESPACE {
namespace detail {

template <int W>
struct BlockingOfWidth;

// Generic: the compiler keeps the eight accumulators in SSE registers and vectorises each lane
// loop (eight-lane vectors spilled and ran 2× slower).
template <>
struct BlockingOfWidth<4> {
  static constexpr int NV = 2, MRJ = 4, MRC = 4, BC = 64;
};

// AVX2: 3 × 4 = 12 accumulators, 3 Q vectors and a broadcast fill the 16 registers; 24-row
// blocks need 1.5× less K/V traffic per flop than 16-row ones (measured faster than 2 × 6 and
// 4 × 3).
template <>
struct BlockingOfWidth<8> {
  static constexpr int NV = 3, MRJ = 4, MRC = 4, BC = 64;
};

// AVX-512: 48-row blocks, 3 × 8 = 24 accumulators, 3 Q vectors and a broadcast of the 32
// registers. Tiles of 32 or 128 keys measured the same as 64.
template <>
struct BlockingOfWidth<16> {
  static constexpr int NV = 3, MRJ = 8, MRC = 8, BC = 64;
};

template <class Ops>
struct Blocking : BlockingOfWidth<Ops::W> {};

}  // namespace detail
}  // namespace MULTIHEAD_ISA_NAMESPACE
}  // namespace multihead
