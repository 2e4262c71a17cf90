// A program with translation units for two ISAs (isa_unit.cpp built for AVX2 and for AVX-512,
// each with its ISA's kernels library), as a user shipping per-ISA code paths would link it.
// Each unit's multihead code sits in its ISA's inline namespace, so both copies coexist; this checks that each unit really
// ran its own ISA's code and that both meet the accuracy standard against the naive oracle.
//
// What it cannot show: code outside multihead's namespaces (Eigen, the standard library) that
// both units compile is emitted twice with different flags and the linker keeps one copy for
// both. On this CPU, which runs both ISAs, that is invisible; on an AVX2-only CPU the AVX2 unit
// could run an AVX-512 copy. The kernels used here call no Eigen code.
#include <gtest/gtest.h>

#include "support/naive_reference.hpp"
#include "two_isa/two_isa.hpp"

namespace {

using namespace two_isa;
using IsaRun = two_isa::Run;  // gtest's fixtures have a Run() of their own

naive::AttentionShape problem() {
  naive::AttentionShape s;
  s.q_len = kQLen;
  s.kv_len = kKvLen;
  s.heads = kHeads;
  s.kv_groups = kGroups;
  s.head_dim = s.value_dim = kDim;
  return s;
}

struct Oracle {
  naive::AttentionResult<double> exact;
  naive::AttentionResult<float> fp32;
};

Oracle oracle() {
  const naive::AttentionShape s = problem();
  const std::vector<float> q = naive::random_vector(s.q_size(), kSeedQ);
  const std::vector<float> k = naive::random_vector(s.k_size(), kSeedK);
  const std::vector<float> v = naive::random_vector(s.v_size(), kSeedV);
  return {naive::attention<double>(s, q.data(), k.data(), v.data(), true, std::nullopt),
          naive::attention<float>(s, q.data(), k.data(), v.data(), true, std::nullopt)};
}

void expect_meets_standard(const IsaRun& run, const Oracle& oracle) {
  EXPECT_TRUE(naive::within_standard("fused o", run.fused_o, oracle.exact.o, oracle.fp32.o));
  EXPECT_TRUE(naive::within_standard("fused lse", run.fused_lse, oracle.exact.lse,
                                     oracle.fp32.lse));
  EXPECT_TRUE(naive::within_standard("decode o", run.decode_o, oracle.exact.o, oracle.fp32.o));
  EXPECT_TRUE(naive::within_standard("decode lse", run.decode_lse, oracle.exact.lse,
                                     oracle.fp32.lse));
}

TEST(TwoIsaProgram, EachUnitRunsItsOwnIsa) {
  const IsaRun avx2 = run_avx2(), avx512 = run_avx512();
  EXPECT_EQ(avx2.isa, "avx2");
  EXPECT_EQ(avx512.isa, "avx512");
  EXPECT_NE(avx2.build_info.find(": avx2 path"), std::string::npos) << avx2.build_info;
  EXPECT_NE(avx512.build_info.find(": avx512 path"), std::string::npos) << avx512.build_info;
  // The same type, in two inline namespaces: two distinct types to the linker.
  EXPECT_NE(avx2.kernel_symbol, avx512.kernel_symbol);
  EXPECT_NE(avx2.kernel_symbol.find("avx2"), std::string::npos) << avx2.kernel_symbol;
  EXPECT_NE(avx512.kernel_symbol.find("avx512"), std::string::npos) << avx512.kernel_symbol;
  // Had the linker merged the units' kernels, one vector width would serve both.
  EXPECT_EQ(avx2.vector_width, 8);
  EXPECT_EQ(avx512.vector_width, 16);
}

TEST(TwoIsaProgram, BothUnitsMeetTheStandardAndAgree) {
  const Oracle exact = oracle();
  const IsaRun avx2 = run_avx2(), avx512 = run_avx512();
  {
    SCOPED_TRACE("avx2");
    expect_meets_standard(avx2, exact);
  }
  {
    SCOPED_TRACE("avx512");
    expect_meets_standard(avx512, exact);
  }
  // The two ISAs' results differ by rounding at most: within the same bound of each other.
  const double bound = 2.0 * naive::max_abs_error(exact.fp32.o, exact.exact.o) + 1e-6;
  EXPECT_LE(naive::max_abs_error(avx2.fused_o, avx512.fused_o), bound);
  EXPECT_LE(naive::max_abs_error(avx2.decode_o, avx512.decode_o), bound);
}

}  // namespace
