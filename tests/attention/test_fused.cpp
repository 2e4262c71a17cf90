// The fused kernel at the edges of its tiling, against the naive oracle of naive_reference.hpp
// under the accuracy standard (max|lib - double| <= 2 * max|naive fp32 - double| + 1e-6).
//
// The fused kernel cuts the work into query blocks of BR rows, where the rows of a KV group are
// (query position, head in group) pairs stacked position-major, and K/V tiles of BC keys. Its
// edges: lengths one short of, equal to and one past BR and BC; group sizes that make a block
// hold one head of many positions (1), several heads of a few positions (4), or part of one
// position's heads (32 > BR on some ISAs); causal tiles that cross the diagonal; q_len ≠ kv_len
// either way; the fixed-dim fast paths (64, 128, 256) and the general path; threads.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
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

using Ops = multihead::simd::Ops;
using Blocking = multihead::detail::Blocking<Ops>;
constexpr std::int64_t BR = std::int64_t{Ops::W} * Blocking::NV;  // query rows per block
constexpr std::int64_t BC = Blocking::BC;                          // keys per K/V tile

// The lengths at the tile edges of this ISA.
std::vector<std::int64_t> edge_lengths() {
  return {1, BR - 1, BR, BR + 1, BC - 1, BC, BC + 1, 2 * BC + 3};
}

std::uint64_t seed_of(const AttentionShape& s, std::uint64_t salt) {
  return static_cast<std::uint64_t>(((s.q_len * 1009 + s.kv_len) * 131 + s.heads) * 257 +
                                    s.head_dim * 7 + s.value_dim) * 31 + salt;
}

// KV groups and heads for a group size: two groups unless that makes too many heads.
AttentionShape grouped_shape(std::int64_t batch, std::int64_t q_len, std::int64_t kv_len,
                             std::int64_t group_size, std::int64_t head_dim,
                             std::int64_t value_dim) {
  const std::int64_t groups = group_size >= 32 ? 1 : 2;
  return make_shape(batch, q_len, kv_len, group_size * groups, groups, head_dim, value_dim);
}

// Runs the fused kernel, checks it against the oracle and the fully masked rows.
LibResult check_fused(const Inputs& in, const KernelOptions& options) {
  const LibResult lib = check(kFused, in, options);
  expect_masked_rows_empty(in.shape, options.causal, lib);
  return lib;
}

TEST(FusedTiling, BlockAndTileSizesAreTheIsaOnes) {
  // The test's view of the tiling is the kernel's: if these drift apart the edge cases below
  // stop being edges.
  using Tiles = multihead::detail::Tiles<Ops, 0, 0>;
  EXPECT_EQ(Tiles::BR, BR);
  EXPECT_EQ(Tiles::BC, BC);
  const std::string isa = multihead::isa_name();
  if (isa == "avx512") {
    EXPECT_EQ(BR, 48);
  } else if (isa == "avx2") {
    EXPECT_EQ(BR, 24);
  } else {
    EXPECT_EQ(BR, 8);
  }
  EXPECT_EQ(BC, 64);
}

// ---- Every pair of edge lengths × group sizes × causal, on a fast and the general path ----------

using EdgeParam = std::tuple<std::int64_t, std::int64_t, bool>;  // group size, head dim, causal

class FusedEdges : public ::testing::TestWithParam<EdgeParam> {};

TEST_P(FusedEdges, EveryPairOfEdgeLengthsMatchesNaive) {
  const auto& [group_size, head_dim, causal] = GetParam();
  KernelOptions options;
  options.causal = causal;
  for (std::int64_t q_len : edge_lengths())
    for (std::int64_t kv_len : edge_lengths()) {
      const AttentionShape shape = grouped_shape(1, q_len, kv_len, group_size, head_dim, head_dim);
      SCOPED_TRACE(describe(shape) + (causal ? ", causal" : ""));
      check_fused(make_inputs(shape, seed_of(shape, causal)), options);
      if (HasFailure()) return;  // one failing shape is enough to read
    }
}

std::string edge_name(const ::testing::TestParamInfo<EdgeParam>& info) {
  const auto& [group_size, head_dim, causal] = info.param;
  return "group" + std::to_string(group_size) + "_d" + std::to_string(head_dim) +
         (causal ? "_causal" : "_full");
}

// d = 64 runs a fixed-dim fast path, d = 3 the general one (and a remainder micro-kernel).
INSTANTIATE_TEST_SUITE_P(LengthsGroupsCausal, FusedEdges,
                         ::testing::Combine(::testing::Values(1, 4, 32), ::testing::Values(64, 3),
                                            ::testing::Bool()),
                         edge_name);

// ---- Head and value dims: the fast paths, the general path, value_dim ≠ head_dim ---------------

struct Dims {
  std::int64_t head_dim, value_dim;
};

using DimsParam = std::tuple<Dims, bool>;

class FusedDims : public ::testing::TestWithParam<DimsParam> {};

TEST_P(FusedDims, EdgeLengthPairsMatchNaive) {
  const auto& [dims, causal] = GetParam();
  // The widest dims get fewer heads and shorter sequences: the naive oracle is the cost.
  const bool wide = dims.head_dim > 256;
  const std::int64_t long_len = wide ? BC + 1 : 2 * BC + 3;
  const std::int64_t pairs[][2] = {
      {BR + 1, BC + 1}, {long_len, BC - 1}, {1, long_len}, {BC, BC}, {BR - 1, BR}};
  KernelOptions options;
  options.causal = causal;
  for (const auto& pair : pairs) {
    const AttentionShape shape = wide ? make_shape(1, pair[0], pair[1], 2, 1, dims.head_dim,
                                                   dims.value_dim)
                                      : grouped_shape(1, pair[0], pair[1], 4, dims.head_dim,
                                                      dims.value_dim);
    SCOPED_TRACE(describe(shape) + (causal ? ", causal" : ""));
    check_fused(make_inputs(shape, seed_of(shape, 11 + causal)), options);
  }
}

std::string dims_name(const ::testing::TestParamInfo<DimsParam>& info) {
  const auto& [dims, causal] = info.param;
  return "d" + std::to_string(dims.head_dim) + "_dv" + std::to_string(dims.value_dim) +
         (causal ? "_causal" : "_full");
}

const Dims kDims[] = {{64, 64},  {128, 128}, {256, 256},  // fast paths
                      {1, 1},    {3, 3},     {80, 80},   {192, 192},  // general path
                      {192, 128}, {576, 512}, {64, 128},  {128, 64}, {7, 1}};

INSTANTIATE_TEST_SUITE_P(HeadAndValueDims, FusedDims,
                         ::testing::Combine(::testing::ValuesIn(kDims), ::testing::Bool()),
                         dims_name);

// ---- Numerically hard inputs -------------------------------------------------------------------

TEST(FusedNumerics, LargeLogitsAcrossTiles) {
  for (std::int64_t head_dim : {64, 80})
    for (bool causal : {false, true}) {
      // Entries of ±300 give scores of order 1e4 at the default scale: exp of them would
      // overflow without the running max, and each new tile's max rescales the old ones by
      // factors that underflow to 0.
      const AttentionShape shape = grouped_shape(1, BR + 1, 2 * BC + 3, 4, head_dim, head_dim);
      SCOPED_TRACE(describe(shape) + (causal ? ", causal" : ""));
      const Inputs in = make_inputs(shape, seed_of(shape, 21), 300.0f);
      const double scale = 1.0 / std::sqrt(static_cast<double>(head_dim));
      ASSERT_GE(naive::max_abs_score(shape, in.q.data(), in.k.data(), scale), 1e4)
          << "the input does not reach the logits the test is about";
      KernelOptions options;
      options.causal = causal;
      const LibResult lib = check_fused(in, options);
      for (float x : lib.o) ASSERT_TRUE(std::isfinite(x));
      for (float x : lib.lse) ASSERT_TRUE(std::isfinite(x));
      EXPECT_GE(naive::max_abs(lib.lse), 1e3);
    }
  // Through an explicit scale: unit inputs, scores beyond ±1e4, the first query seeing one key.
  const AttentionShape shape = grouped_shape(2, BC + 1, BC + 1, 1, 16, 16);
  const Inputs in = make_inputs(shape, 8);
  KernelOptions options;
  options.scale = 2e4f;
  options.causal = true;
  ASSERT_GE(naive::max_abs_score(shape, in.q.data(), in.k.data(), 2e4), 1e4);
  const LibResult lib = check_fused(in, options);
  for (float x : lib.o) ASSERT_TRUE(std::isfinite(x));
}

// Rising scores: every tile's max exceeds the previous one, so every tile rescales the running
// sum and output; and falling scores, where later tiles add ~nothing.
TEST(FusedNumerics, MonotoneScoresRescaleEveryTile) {
  for (float slope : {0.05f, -0.05f, 1.0f, -1.0f})
    for (bool causal : {false, true}) {
      const AttentionShape shape = grouped_shape(1, BR + 1, 2 * BC + 3, 4, 64, 64);
      SCOPED_TRACE(describe(shape) + ", slope " + std::to_string(slope) +
                   (causal ? ", causal" : ""));
      Inputs in = make_inputs(shape, seed_of(shape, 22));
      // q = (1, 0, ...), k_j = (slope·j, noise...): score_j = slope·j / 8.
      for (std::int64_t i = 0; i < shape.q_len * shape.heads; ++i)
        for (std::int64_t d = 0; d < shape.head_dim; ++d)
          in.q[static_cast<std::size_t>(i * shape.head_dim + d)] = d == 0 ? 1.0f : 0.0f;
      for (std::int64_t j = 0; j < shape.kv_len; ++j)
        for (std::int64_t g = 0; g < shape.kv_groups; ++g)
          in.k[static_cast<std::size_t>((j * shape.kv_groups + g) * shape.head_dim)] =
              slope * static_cast<float>(j);
      KernelOptions options;
      options.causal = causal;
      check_fused(in, options);
    }
}

TEST(FusedNumerics, EqualScoresAverageTheVisibleValues) {
  // Q = 0 makes every score 0: each row's output is the mean of the V rows it sees and its
  // log-sum-exp is log(visible). Equal keys give equal scores per row too (with a nonzero lse
  // offset), checked through the oracle.
  for (bool zero_queries : {true, false})
    for (bool causal : {false, true})
      for (std::int64_t q_len : {BR + 1, 2 * BC + 3})
        for (std::int64_t kv_len : {BC, 2 * BC + 3}) {
          const AttentionShape shape = grouped_shape(1, q_len, kv_len, 4, 64, 64);
          SCOPED_TRACE(describe(shape) + (causal ? ", causal" : "") +
                       (zero_queries ? ", Q = 0" : ", equal keys"));
          Inputs in = make_inputs(shape, seed_of(shape, 23));
          if (zero_queries) {
            std::fill(in.q.begin(), in.q.end(), 0.0f);
          } else {
            const std::int64_t row = shape.kv_groups * shape.head_dim;
            for (std::int64_t t = 1; t < kv_len; ++t)
              std::copy(in.k.begin(), in.k.begin() + row, in.k.begin() + t * row);
          }
          KernelOptions options;
          options.causal = causal;
          const LibResult lib = check_fused(in, options);
          if (!zero_queries) continue;

          std::vector<double> mean(static_cast<std::size_t>(shape.o_size()), 0.0);
          std::vector<double> log_count(static_cast<std::size_t>(shape.lse_size()), 0.0);
          const naive::AttentionResult<float> fp32 =
              naive::attention<float>(shape, in.q.data(), in.k.data(), in.v.data(), causal);
          const std::int64_t group_size = shape.heads / shape.kv_groups;
          for (std::int64_t h = 0; h < shape.heads; ++h)
            for (std::int64_t i = 0; i < q_len; ++i) {
              const std::int64_t seen =
                  causal ? std::clamp<std::int64_t>(i + kv_len - q_len + 1, 0, kv_len) : kv_len;
              log_count[static_cast<std::size_t>(h * q_len + i)] =
                  seen > 0 ? std::log(static_cast<double>(seen))
                           : -std::numeric_limits<double>::infinity();
              for (std::int64_t x = 0; x < shape.value_dim && seen > 0; ++x) {
                double sum = 0;
                for (std::int64_t j = 0; j < seen; ++j)
                  sum += in.v[static_cast<std::size_t>(
                      (j * shape.kv_groups + h / group_size) * shape.value_dim + x)];
                mean[static_cast<std::size_t>((i * shape.heads + h) * shape.value_dim + x)] =
                    sum / static_cast<double>(seen);
              }
            }
          EXPECT_TRUE(naive::within_standard("o", lib.o, mean, fp32.o));
          EXPECT_TRUE(naive::within_standard("lse", lib.lse, log_count, fp32.lse));
        }
}

// ---- Threads: bitwise identical whatever the count ----------------------------------------------

TEST(FusedThreads, AnyThreadCountGivesBitwiseIdenticalResults) {
  const AttentionShape shapes[] = {
      grouped_shape(2, 2 * BC + 3, 2 * BC + 3, 4, 64, 64),   // fast path, several blocks
      grouped_shape(2, 3 * BR + 5, BC + 1, 1, 80, 48),       // general path
      grouped_shape(1, BC + 1, 2 * BC + 3, 32, 3, 3),        // blocks of mixed positions
      grouped_shape(1, 1, BC + 1, 1, 64, 64),                // fewer units than threads
  };
  for (const AttentionShape& shape : shapes)
    for (bool causal : {false, true}) {
      SCOPED_TRACE(describe(shape) + (causal ? ", causal" : ""));
      const Inputs in = make_inputs(shape, seed_of(shape, 31));
      KernelOptions options;
      options.causal = causal;
      options.threads = 1;
      const LibResult one = check_fused(in, options);
      for (int threads : {2, 3, 0}) {
        SCOPED_TRACE("threads " + std::to_string(threads) + " against 1");
        options.threads = threads;
        const LibResult many = run_kernel(kFused, in, options);
        ASSERT_EQ(many.o.size(), one.o.size());
        ASSERT_EQ(many.lse.size(), one.lse.size());
        EXPECT_EQ(0, std::memcmp(many.o.data(), one.o.data(), one.o.size() * sizeof(float)))
            << "outputs differ, max |diff| = " << naive::max_abs_error(many.o, one.o);
        EXPECT_EQ(0, std::memcmp(many.lse.data(), one.lse.data(), one.lse.size() * sizeof(float)))
            << "log-sum-exps differ, max |diff| = " << naive::max_abs_error(many.lse, one.lse);
      }
    }
}

// ---- Strided views -----------------------------------------------------------------------------

TEST(FusedStrided, ViewsAcrossTilesMatchContiguous) {
  for (Layout layout : {&head_major, &padded})
    for (bool causal : {false, true}) {
      check_strided(kFused, layout, grouped_shape(2, BR + 1, 2 * BC + 3, 4, 64, 64), causal);
      check_strided(kFused, layout, grouped_shape(1, 2 * BC + 3, BC + 1, 32, 3, 5), causal);
      check_strided(kFused, layout, grouped_shape(2, BC - 1, BC, 1, 128, 128), causal);
      check_strided(kFused, layout, grouped_shape(1, 1, 2 * BC + 3, 4, 80, 80), causal);
    }
}

// K and V broadcast one row to every token with a token stride of 0 (aliased inputs).
TEST(FusedStrided, BroadcastKeysAndValuesAcrossTiles) {
  const AttentionShape shape = grouped_shape(1, BR + 1, 2 * BC + 3, 4, 64, 64);
  Inputs in = make_inputs(shape, 99);
  const std::int64_t row_k = shape.kv_groups * shape.head_dim;
  const std::int64_t row_v = shape.kv_groups * shape.value_dim;
  for (std::int64_t t = 1; t < shape.kv_len; ++t) {
    std::copy(in.k.begin(), in.k.begin() + row_k, in.k.begin() + t * row_k);
    std::copy(in.v.begin(), in.v.begin() + row_v, in.v.begin() + t * row_v);
  }
  for (bool causal : {false, true}) {
    SCOPED_TRACE(causal ? "causal" : "full");
    KernelOptions options;
    options.causal = causal;
    const Oracle oracle = run_oracle(in, options);
    LibResult lib;
    lib.o.assign(static_cast<std::size_t>(shape.o_size()), kSentinel);
    lib.lse.assign(static_cast<std::size_t>(shape.lse_size()), kSentinel);
    multihead::fused_attention(
        TensorView<const float>(in.q.data(), shape.q_size(), 1, shape.q_len, shape.heads, 64),
        TensorView<const float>::strided(in.k.data(), row_k, 1, shape.kv_len, shape.kv_groups,
                                         64, row_k, 0, 64),
        TensorView<const float>::strided(in.v.data(), row_v, 1, shape.kv_len, shape.kv_groups,
                                         64, row_v, 0, 64),
        TensorView<float>(lib.o.data(), shape.o_size(), 1, shape.q_len, shape.heads, 64), options,
        LseOutput{lib.lse.data(), shape.lse_size()});
    expect_meets_standard(lib, oracle);
  }
}

}  // namespace
