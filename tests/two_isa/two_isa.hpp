// What each ISA's translation unit of the two-ISA program returns. Nothing of multihead here:
// main.cpp, compiled for no particular ISA, sees only these plain types.
#pragma once

#include <string>
#include <vector>

namespace two_isa {

// The fixed problem both units solve: Q [1, kQLen, kHeads, kDim], K and V [1, kKvLen, kGroups,
// kDim], from naive::random_vector with these seeds; causal.
constexpr long kQLen = 3, kKvLen = 37, kHeads = 8, kGroups = 2, kDim = 64;
constexpr unsigned kSeedQ = 11, kSeedK = 12, kSeedV = 13;

struct Run {
  std::vector<float> fused_o, fused_lse;    // fused_attention
  std::vector<float> decode_o, decode_lse;  // decode_attention over the same float views
  std::string build_info;                   // multihead::build_info().describe()
  std::string isa;                          // multihead::isa_name()
  std::string kernel_symbol;                // the mangled type of fused_attention's KernelOptions
  int vector_width = 0;                     // multihead::simd::Ops::W: floats per vector
};

Run run_avx2();
Run run_avx512();

}  // namespace two_isa
