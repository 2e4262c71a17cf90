// The kernel contract (kernel_args.hpp): the suite every attention kernel runs
// (kernel_testing::kKernels: the fused kernel, the reference and the decode kernel over float
// views; a new kernel joins by being added there). Each kernel is checked against the
// independent naive oracle (naive_reference.hpp) under the accuracy standard: max|lib - double| <= 2 * max|naive fp32 - double| + 1e-6, for the
// output and the log-sum-exp alike. Each test runs once per kernel; its name ends in the
// kernel's name (…/fused, …/reference, …/decode) or, for the sweeps, starts its parameter name
// (…/fused_h8g2_d64_len129_causal).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <optional>
#include <sstream>
#include <string>
#include <tuple>
#include <vector>

#include <multihead/multihead.hpp>

#include "support/kernel_testing.hpp"
#include "support/naive_reference.hpp"

namespace {

using multihead::KernelOptions;
using multihead::LseOutput;
using multihead::TensorView;
using naive::AttentionShape;
using namespace kernel_testing;

// The fixture of every test that runs once per kernel.
class KernelContract : public ::testing::TestWithParam<Kernel> {
 protected:
  const Kernel& kernel() const { return GetParam(); }
  LibResult run(const Inputs& in, const KernelOptions& options) const {
    return run_kernel(kernel(), in, options);
  }
  LibResult check(const Inputs& in, const KernelOptions& options) const {
    return kernel_testing::check(kernel(), in, options);
  }
};

INSTANTIATE_TEST_SUITE_P(Kernels, KernelContract, ::testing::ValuesIn(kKernels), kernel_param_name);

// ---- The sweep: heads/groups × head dims × lengths × causal -------------------------------------

struct HeadsGroups {
  std::int64_t heads, kv_groups;
};

const HeadsGroups kHeadsGroups[] = {{1, 1}, {4, 4}, {8, 2}, {8, 1}, {12, 4}, {32, 8}};
const std::int64_t kHeadDims[] = {1, 3, 64, 80, 128, 256};
const std::int64_t kLengths[] = {1, 7, 64, 129};

// The cost of one case (multiply-adds of one naive pass, up to a constant). The largest few
// combinations of the cartesian product are left out to keep the suite fast; every value of
// every axis is still covered (the test SweepCoversEveryValue checks it).
constexpr std::int64_t kSweepCostCap = std::int64_t{1} << 26;
std::int64_t sweep_cost(const HeadsGroups& hg, std::int64_t d, std::int64_t len) {
  return hg.heads * len * len * d;
}

using SweepParam = std::tuple<HeadsGroups, std::int64_t, std::int64_t, bool>;

std::vector<SweepParam> sweep_params() {
  std::vector<SweepParam> params;
  for (const HeadsGroups& hg : kHeadsGroups)
    for (std::int64_t d : kHeadDims)
      for (std::int64_t len : kLengths)
        for (bool causal : {false, true})
          if (sweep_cost(hg, d, len) <= kSweepCostCap) params.emplace_back(hg, d, len, causal);
  return params;
}

using KernelSweepParam = std::tuple<Kernel, SweepParam>;

std::string sweep_name(const ::testing::TestParamInfo<KernelSweepParam>& info) {
  const auto& [kernel, sweep] = info.param;
  const auto& [hg, d, len, causal] = sweep;
  std::ostringstream out;
  out << kernel.name << "_h" << hg.heads << "g" << hg.kv_groups << "_d" << d << "_len" << len
      << (causal ? "_causal" : "_full");
  return out.str();
}

class KernelContractSweep : public ::testing::TestWithParam<KernelSweepParam> {};

TEST_P(KernelContractSweep, MatchesNaiveOracle) {
  const auto& [kernel, sweep] = GetParam();
  const auto& [hg, d, len, causal] = sweep;
  const AttentionShape shape = make_shape(1, len, len, hg.heads, hg.kv_groups, d, d);
  SCOPED_TRACE(describe(shape));
  KernelOptions options;
  options.causal = causal;
  check(kernel, make_inputs(shape, static_cast<std::uint64_t>(hg.heads * 1000 + d * 10 + len)),
        options);
}

INSTANTIATE_TEST_SUITE_P(HeadsDimsLengths, KernelContractSweep,
                         ::testing::Combine(::testing::ValuesIn(kKernels),
                                            ::testing::ValuesIn(sweep_params())),
                         sweep_name);

TEST(KernelContractSweepCoverage, SweepCoversEveryValue) {
  const std::vector<SweepParam> params = sweep_params();
  for (const HeadsGroups& hg : kHeadsGroups) {
    bool found = false;
    for (const auto& p : params)
      found |= std::get<0>(p).heads == hg.heads && std::get<0>(p).kv_groups == hg.kv_groups;
    EXPECT_TRUE(found) << "heads " << hg.heads << ", kv_groups " << hg.kv_groups;
  }
  for (std::int64_t d : kHeadDims) {
    bool found = false;
    for (const auto& p : params) found |= std::get<1>(p) == d;
    EXPECT_TRUE(found) << "head_dim " << d;
  }
  for (std::int64_t len : kLengths) {
    bool found = false;
    for (const auto& p : params) found |= std::get<2>(p) == len;
    EXPECT_TRUE(found) << "length " << len;
  }
  // Every (heads/groups, head_dim) pair runs at the longest length with both maskings, or at
  // least at length 64.
  for (const HeadsGroups& hg : kHeadsGroups)
    for (std::int64_t d : kHeadDims) {
      int count = 0;
      for (const auto& p : params)
        count += std::get<0>(p).heads == hg.heads && std::get<0>(p).kv_groups == hg.kv_groups &&
                 std::get<1>(p) == d && std::get<2>(p) >= 64;
      EXPECT_GE(count, 2) << "heads " << hg.heads << ", head_dim " << d;
    }
}

// ---- q_len != kv_len ---------------------------------------------------------------------------

using LengthsParam = std::tuple<std::int64_t, std::int64_t, bool>;  // q_len, kv_len, causal
using KernelLengthsParam = std::tuple<Kernel, LengthsParam>;

class KernelContractLengths : public ::testing::TestWithParam<KernelLengthsParam> {};

TEST_P(KernelContractLengths, MatchesNaiveOracle) {
  const auto& [kernel, lengths] = GetParam();
  const auto& [q_len, kv_len, causal] = lengths;
  const AttentionShape shape = make_shape(2, q_len, kv_len, 4, 2, 16, 16);
  SCOPED_TRACE(describe(shape));
  KernelOptions options;
  options.causal = causal;
  const LibResult lib =
      check(kernel, make_inputs(shape, static_cast<std::uint64_t>(q_len * 131 + kv_len)), options);

  // Rows that see no key (causal with q_len > kv_len: the first q_len - kv_len queries) are
  // exactly zero with a log-sum-exp of -inf; every other row is finite.
  for (std::int64_t b = 0; b < shape.batch; ++b)
    for (std::int64_t h = 0; h < shape.heads; ++h)
      for (std::int64_t i = 0; i < q_len; ++i) {
        const bool masked = causal && i < q_len - kv_len;
        const float lse = lib.lse[static_cast<std::size_t>((b * shape.heads + h) * q_len + i)];
        if (masked) {
          EXPECT_EQ(lse, -std::numeric_limits<float>::infinity()) << "b " << b << " h " << h << " i " << i;
        } else {
          EXPECT_TRUE(std::isfinite(lse)) << "b " << b << " h " << h << " i " << i;
        }
        for (std::int64_t d = 0; d < shape.value_dim; ++d) {
          const float o = lib.o[static_cast<std::size_t>(((b * q_len + i) * shape.heads + h) *
                                                         shape.value_dim + d)];
          if (masked) {
            EXPECT_EQ(o, 0.0f) << "b " << b << " h " << h << " i " << i << " d " << d;
          } else {
            EXPECT_TRUE(std::isfinite(o));
          }
        }
      }
}

std::string lengths_name(const ::testing::TestParamInfo<KernelLengthsParam>& info) {
  const auto& [kernel, lengths] = info.param;
  const auto& [q_len, kv_len, causal] = lengths;
  return std::string(kernel.name) + "_q" + std::to_string(q_len) + "_kv" + std::to_string(kv_len) +
         (causal ? "_causal" : "_full");
}

std::vector<LengthsParam> lengths_params() {
  const std::int64_t pairs[][2] = {{1, 64}, {7, 129}, {5, 1}, {64, 7}, {129, 64}, {1, 1}};
  std::vector<LengthsParam> params;
  for (const auto& pair : pairs)
    for (bool causal : {false, true}) params.emplace_back(pair[0], pair[1], causal);
  return params;
}

INSTANTIATE_TEST_SUITE_P(QueryShorterAndLonger, KernelContractLengths,
                         ::testing::Combine(::testing::ValuesIn(kKernels),
                                            ::testing::ValuesIn(lengths_params())),
                         lengths_name);

// ---- Batch, value_dim, scale -------------------------------------------------------------------

TEST_P(KernelContract, BatchGreaterThanOne) {
  for (bool causal : {false, true}) {
    const AttentionShape shape = make_shape(3, 17, 17, 8, 2, 32, 32);
    SCOPED_TRACE(describe(shape) + (causal ? ", causal" : ""));
    KernelOptions options;
    options.causal = causal;
    const Inputs in = make_inputs(shape, 11);
    check(in, options);
    // Each sequence of the batch is independent: batch b equals a batch-1 run on its slice.
    const LibResult whole = run(in, options);
    for (std::int64_t b = 0; b < shape.batch; ++b) {
      AttentionShape one = shape;
      one.batch = 1;
      Inputs slice;
      slice.shape = one;
      slice.q.assign(in.q.begin() + b * one.q_size(), in.q.begin() + (b + 1) * one.q_size());
      slice.k.assign(in.k.begin() + b * one.k_size(), in.k.begin() + (b + 1) * one.k_size());
      slice.v.assign(in.v.begin() + b * one.v_size(), in.v.begin() + (b + 1) * one.v_size());
      const Oracle oracle = run_oracle(slice, options);
      const std::vector<float> o(whole.o.begin() + b * one.o_size(),
                                 whole.o.begin() + (b + 1) * one.o_size());
      const std::vector<float> lse(whole.lse.begin() + b * one.lse_size(),
                                   whole.lse.begin() + (b + 1) * one.lse_size());
      expect_meets_standard(LibResult{o, lse}, oracle);
    }
  }
}

TEST_P(KernelContract, ValueDimDiffersFromHeadDim) {
  const std::int64_t dims[][2] = {{64, 32}, {16, 80}, {3, 1}, {1, 7}, {128, 64}};
  for (const auto& dim : dims)
    for (bool causal : {false, true}) {
      const AttentionShape shape = make_shape(2, 9, 23, 6, 3, dim[0], dim[1]);
      SCOPED_TRACE(describe(shape) + (causal ? ", causal" : ""));
      KernelOptions options;
      options.causal = causal;
      check(make_inputs(shape, static_cast<std::uint64_t>(dim[0] * 7 + dim[1])), options);
    }
}

TEST_P(KernelContract, ExplicitScale) {
  const AttentionShape shape = make_shape(1, 20, 33, 4, 1, 24, 24);
  const Inputs in = make_inputs(shape, 5);
  std::vector<float> previous;
  for (float scale : {0.05f, 0.37f, 1.0f, 2.5f}) {
    SCOPED_TRACE("scale " + std::to_string(scale));
    KernelOptions options;
    options.scale = scale;
    const LibResult lib = check(in, options);
    EXPECT_NE(lib.o, previous) << "the scale had no effect";
    previous = lib.o;
  }
  // The default is 1/sqrt(head_dim): equal to passing it explicitly, and different from 1.
  KernelOptions explicit_default;
  explicit_default.scale = 1.0f / std::sqrt(24.0f);
  const LibResult a = run(in, explicit_default);
  const LibResult b = run(in, KernelOptions{});
  EXPECT_EQ(a.o, b.o);
  EXPECT_EQ(a.lse, b.lse);
}

TEST_P(KernelContract, LseIsOptional) {
  const AttentionShape shape = make_shape(2, 13, 13, 4, 2, 8, 8);
  const Inputs in = make_inputs(shape, 21);
  KernelOptions options;
  options.causal = true;
  const LibResult with = check(in, options);
  std::vector<float> o(static_cast<std::size_t>(shape.o_size()), -1.0f);
  kernel().run(
      TensorView<const float>(in.q.data(), shape.q_size(), 2, 13, 4, 8),
      TensorView<const float>(in.k.data(), shape.k_size(), 2, 13, 2, 8),
      TensorView<const float>(in.v.data(), shape.v_size(), 2, 13, 2, 8),
      TensorView<float>(o.data(), shape.o_size(), 2, 13, 4, 8), options, LseOutput{});
  EXPECT_EQ(o, with.o);
}

// ---- Strided views -----------------------------------------------------------------------------

TEST_P(KernelContract, StridedHeadMajorMatchesContiguous) {
  for (bool causal : {false, true}) {
    check_strided(kernel(), head_major, make_shape(2, 19, 19, 4, 2, 16, 16), causal);
    check_strided(kernel(), head_major, make_shape(1, 5, 40, 8, 1, 64, 32), causal);
    check_strided(kernel(), head_major, make_shape(2, 1, 33, 6, 3, 8, 8), causal);  // one query token
  }
}

TEST_P(KernelContract, StridedPaddedViewsIntoLargerBuffersMatchContiguous) {
  for (bool causal : {false, true}) {
    check_strided(kernel(), padded, make_shape(2, 19, 19, 4, 2, 16, 16), causal);
    check_strided(kernel(), padded, make_shape(3, 24, 11, 4, 4, 5, 9), causal);
    check_strided(kernel(), padded, make_shape(1, 1, 17, 8, 2, 32, 32), causal);  // one query token
    check_strided(kernel(), padded, make_shape(2, 7, 1, 2, 1, 3, 3), causal);     // one key token
  }
}

// A single token may carry any token stride (here 0 and a huge one): there is no second row.
TEST_P(KernelContract, StridedSingleTokenViewsIgnoreTheirTokenStride) {
  const AttentionShape shape = make_shape(2, 1, 9, 4, 2, 8, 8);
  const Inputs in = make_inputs(shape, 77);
  const Oracle oracle = run_oracle(in, KernelOptions{});
  for (std::int64_t token_stride : {std::int64_t{0}, std::int64_t{1} << 40}) {
    SCOPED_TRACE("token stride " + std::to_string(token_stride));
    std::vector<float> o(static_cast<std::size_t>(shape.o_size()), kSentinel);
    std::vector<float> lse(static_cast<std::size_t>(shape.lse_size()), kSentinel);
    const auto q = TensorView<const float>::strided(in.q.data(), shape.q_size(), 2, 1, 4, 8,
                                                    32, token_stride, 8);
    const auto out = TensorView<float>::strided(o.data(), shape.o_size(), 2, 1, 4, 8, 32,
                                                token_stride, 8);
    kernel().run(
        q, TensorView<const float>(in.k.data(), shape.k_size(), 2, 9, 2, 8),
        TensorView<const float>(in.v.data(), shape.v_size(), 2, 9, 2, 8), out, KernelOptions{},
        LseOutput{lse.data(), shape.lse_size()});
    expect_meets_standard(LibResult{o, lse}, oracle);
  }
}

// Inputs may alias: K and V broadcast one row to every token with a token stride of 0, and the
// result equals attention over the materialised copies.
TEST_P(KernelContract, StridedBroadcastInputsWithZeroStride) {
  AttentionShape shape = make_shape(2, 6, 10, 4, 2, 8, 8);
  Inputs in = make_inputs(shape, 99);
  const std::vector<float> k_row = naive::random_vector(2 * 2 * 8, 100);  // [batch, groups, dim]
  const std::vector<float> v_row = naive::random_vector(2 * 2 * 8, 101);
  for (std::int64_t b = 0; b < 2; ++b)
    for (std::int64_t t = 0; t < 10; ++t)
      for (std::int64_t x = 0; x < 16; ++x) {
        in.k[static_cast<std::size_t>((b * 10 + t) * 16 + x)] = k_row[static_cast<std::size_t>(b * 16 + x)];
        in.v[static_cast<std::size_t>((b * 10 + t) * 16 + x)] = v_row[static_cast<std::size_t>(b * 16 + x)];
      }
  KernelOptions options;
  options.causal = true;
  const Oracle oracle = run_oracle(in, options);
  std::vector<float> o(static_cast<std::size_t>(shape.o_size()), kSentinel);
  std::vector<float> lse(static_cast<std::size_t>(shape.lse_size()), kSentinel);
  kernel().run(
      TensorView<const float>(in.q.data(), shape.q_size(), 2, 6, 4, 8),
      TensorView<const float>::strided(k_row.data(), 32, 2, 10, 2, 8, 16, 0, 8),
      TensorView<const float>::strided(v_row.data(), 32, 2, 10, 2, 8, 16, 0, 8),
      TensorView<float>(o.data(), shape.o_size(), 2, 6, 4, 8), options,
      LseOutput{lse.data(), shape.lse_size()});
  expect_meets_standard(LibResult{o, lse}, oracle);
}

// ---- Threads -----------------------------------------------------------------------------------

TEST_P(KernelContract, ThreadsOneAndTwoMeetTheStandardAndRepeatBitwise) {
  const AttentionShape shape = make_shape(3, 37, 45, 8, 2, 32, 24);
  const Inputs in = make_inputs(shape, 4242);
  for (bool causal : {false, true}) {
    KernelOptions options;
    options.causal = causal;
    const Oracle oracle = run_oracle(in, options);
    for (int threads : {1, 2}) {
      SCOPED_TRACE(std::string("threads ") + std::to_string(threads) +
                   (causal ? ", causal" : ""));
      options.threads = threads;
      const LibResult first = run(in, options);
      const LibResult second = run(in, options);
      expect_meets_standard(first, oracle);
      ASSERT_EQ(first.o.size(), second.o.size());
      EXPECT_EQ(0, std::memcmp(first.o.data(), second.o.data(), first.o.size() * sizeof(float)))
          << "two runs with the same thread count differ";
      EXPECT_EQ(0, std::memcmp(first.lse.data(), second.lse.data(),
                               first.lse.size() * sizeof(float)));
    }
  }
}

// ---- Numerically hard inputs -------------------------------------------------------------------

TEST_P(KernelContract, NumericsLargeLogitsDoNotOverflow) {
  for (bool causal : {false, true}) {
    const AttentionShape shape = make_shape(1, 33, 33, 4, 2, 64, 64);
    SCOPED_TRACE(describe(shape) + (causal ? ", causal" : ""));
    // Entries of ±300 give scores of order 1e4 at the default scale 1/8: exp of them would
    // overflow a float many times over without the max subtraction.
    const Inputs in = make_inputs(shape, 31337, 300.0f);
    const double largest = naive::max_abs_score(shape, in.q.data(), in.k.data(), 1.0 / 8.0);
    ASSERT_GE(largest, 1e4) << "the input does not reach the logits the test is about";
    KernelOptions options;
    options.causal = causal;
    const LibResult lib = check(in, options);
    for (float x : lib.o) ASSERT_TRUE(std::isfinite(x));
    for (float x : lib.lse) ASSERT_TRUE(std::isfinite(x));
    EXPECT_GE(naive::max_abs(lib.lse), 1e3);
  }
  // The same through an explicit scale: unit inputs, scores of ±1e4 and beyond.
  const AttentionShape shape = make_shape(2, 17, 29, 2, 1, 16, 16);
  const Inputs in = make_inputs(shape, 8);
  KernelOptions options;
  options.scale = 2e4f;
  ASSERT_GE(naive::max_abs_score(shape, in.q.data(), in.k.data(), 2e4), 1e4);
  const LibResult lib = check(in, options);
  for (float x : lib.o) ASSERT_TRUE(std::isfinite(x));
}

TEST_P(KernelContract, NumericsEqualScoresAverageTheVisibleValues) {
  // Q = 0 makes every score 0: each row's output is the mean of the V rows it sees and its
  // log-sum-exp is log(visible).
  for (bool causal : {false, true}) {
    const AttentionShape shape = make_shape(2, 9, 14, 4, 2, 8, 12);
    SCOPED_TRACE(describe(shape) + (causal ? ", causal" : ""));
    Inputs in = make_inputs(shape, 64);
    std::fill(in.q.begin(), in.q.end(), 0.0f);
    KernelOptions options;
    options.causal = causal;
    const LibResult lib = check(in, options);

    std::vector<double> mean(static_cast<std::size_t>(shape.o_size()), 0.0);
    std::vector<double> log_count(static_cast<std::size_t>(shape.lse_size()), 0.0);
    const naive::AttentionResult<float> fp32 =
        naive::attention<float>(shape, in.q.data(), in.k.data(), in.v.data(), causal);
    for (std::int64_t b = 0; b < shape.batch; ++b)
      for (std::int64_t h = 0; h < shape.heads; ++h)
        for (std::int64_t i = 0; i < shape.q_len; ++i) {
          const std::int64_t g = h / (shape.heads / shape.kv_groups);
          const std::int64_t seen = causal ? i + shape.kv_len - shape.q_len + 1 : shape.kv_len;
          log_count[static_cast<std::size_t>((b * shape.heads + h) * shape.q_len + i)] =
              std::log(static_cast<double>(seen));
          for (std::int64_t x = 0; x < shape.value_dim; ++x) {
            double sum = 0;
            for (std::int64_t j = 0; j < seen; ++j)
              sum += in.v[static_cast<std::size_t>(((b * shape.kv_len + j) * shape.kv_groups + g) *
                                                   shape.value_dim + x)];
            mean[static_cast<std::size_t>(((b * shape.q_len + i) * shape.heads + h) *
                                          shape.value_dim + x)] = sum / static_cast<double>(seen);
          }
        }
    EXPECT_TRUE(naive::within_standard("o", lib.o, mean, fp32.o));
    EXPECT_TRUE(naive::within_standard("lse", lib.lse, log_count, fp32.lse));
  }
  // Equal keys (rather than zero queries) give equal scores too.
  const AttentionShape shape = make_shape(1, 6, 6, 2, 1, 4, 4);
  Inputs in = make_inputs(shape, 65);
  for (std::int64_t t = 1; t < 6; ++t)
    std::copy(in.k.begin(), in.k.begin() + 4, in.k.begin() + t * 4);
  KernelOptions options;
  options.causal = true;
  const LibResult lib = check(in, options);
  for (std::int64_t x = 0; x < 4; ++x) {  // last query of head 0 sees all six value rows
    double sum = 0;
    for (std::int64_t j = 0; j < 6; ++j) sum += in.v[static_cast<std::size_t>(j * 4 + x)];
    EXPECT_NEAR(lib.o[static_cast<std::size_t>((5 * 2 + 0) * 4 + x)], sum / 6.0, 1e-6);
  }
}

}  // namespace
