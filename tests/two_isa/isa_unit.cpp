// One ISA's half of the two-ISA program: compiled twice (-march=x86-64-v3 and x86-64-v4, each
// with its ISA's kernels library), defining two_isa::TWO_ISA_ENTRY as run_avx2 or run_avx512.
// Everything of multihead in here lives in that ISA's inline namespace, so the two copies are
// different functions; the linker must not merge them.
#include <typeinfo>

#include <multihead/multihead.hpp>

#include "support/naive_reference.hpp"
#include "two_isa/two_isa.hpp"

namespace two_isa {

Run TWO_ISA_ENTRY() {
  using multihead::TensorView;
  const std::vector<float> q = naive::random_vector(kQLen * kHeads * kDim, kSeedQ);
  const std::vector<float> k = naive::random_vector(kKvLen * kGroups * kDim, kSeedK);
  const std::vector<float> v = naive::random_vector(kKvLen * kGroups * kDim, kSeedV);
  const TensorView<const float> qv(q.data(), kQLen * kHeads * kDim, 1, kQLen, kHeads, kDim);
  const TensorView<const float> kv(k.data(), kKvLen * kGroups * kDim, 1, kKvLen, kGroups, kDim);
  const TensorView<const float> vv(v.data(), kKvLen * kGroups * kDim, 1, kKvLen, kGroups, kDim);
  multihead::KernelOptions options;
  options.causal = true;

  Run run;
  const auto solve = [&](auto kernel, std::vector<float>& o, std::vector<float>& lse) {
    o.assign(kQLen * kHeads * kDim, 0.0f);
    lse.assign(kHeads * kQLen, 0.0f);
    kernel(qv, kv, vv, TensorView<float>(o.data(), kQLen * kHeads * kDim, 1, kQLen, kHeads, kDim),
           options, multihead::LseOutput{lse.data(), kHeads * kQLen});
  };
  solve([](auto&&... args) { multihead::fused_attention(args...); }, run.fused_o, run.fused_lse);
  solve([](auto&&... args) { multihead::decode_attention<float>(args...); }, run.decode_o,
        run.decode_lse);
  run.build_info = multihead::build_info().describe();
  run.isa = multihead::isa_name();
  run.kernel_symbol = typeid(multihead::KernelOptions).name();
  run.vector_width = multihead::simd::Ops::W;
  return run;
}

}  // namespace two_isa
