// distributed/mpi.hpp under mpirun (2 and 3 ranks, ctest's mpi.* entries): sharded decode and
// ring-attention prefill against the naive oracle of the whole sequence computed on every rank
// (the accuracy standard of kernel_testing.hpp), with uneven shards, a rank with an empty shard,
// GQA, MQA, a paged fp16 cache and MLA latent caches; and bad shapes on one rank failing every
// rank with one message.
// Every rank runs every test; rank 0 prints, and the process's status is the worst of all ranks.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <multihead/distributed/mpi.hpp>
#include <multihead/multihead.hpp>
#include <vector>

#include "support/kernel_testing.hpp"
#include "support/testing.hpp"

namespace {

using kernel_testing::Inputs;
using multihead::KernelOptions;
using multihead::TensorView;

int rank() { return multihead::detail::mpi_rank(MPI_COMM_WORLD); }
int ranks() { return multihead::detail::mpi_size(MPI_COMM_WORLD); }

// The keys [begin, end) of the cache that rank r holds: uneven slices (boundaries growing as
// the square of the rank), and with 3 ranks rank 1 holds none.
std::pair<std::int64_t, std::int64_t> slice(std::int64_t length, int r, int n) {
  const auto bound = [&](std::int64_t i) -> std::int64_t {
    if (n == 3) return i == 0 ? 0 : i == 3 ? length : length / 3;
    return length * i * i / (std::int64_t(n) * n);
  };
  return {bound(r), bound(r + 1)};
}

// Rows [begin, end) of a [1, length, heads, dim] buffer.
std::vector<float> rows(const std::vector<float>& x, std::int64_t heads_dim, std::int64_t begin,
                        std::int64_t end) {
  return {x.begin() + begin * heads_dim, x.begin() + end * heads_dim};
}

// Sharded decode: each rank attends over its slice of a GQA/MQA cache, merge_shards combines.
void check_sharded_decode(std::int64_t kv_groups, std::int64_t q_len, int root) {
  const auto shape = kernel_testing::make_shape(1, q_len, 300, 8, kv_groups, 32, 24);
  const Inputs in = kernel_testing::make_inputs(shape, 11 + std::uint64_t(kv_groups));
  const auto [begin, end] = slice(shape.kv_len, rank(), ranks());
  const std::int64_t n = end - begin;
  const auto k = rows(in.k, kv_groups * 32, begin, end), v = rows(in.v, kv_groups * 24, begin, end);
  kernel_testing::LibResult lib;
  lib.o.assign(std::size_t(shape.o_size()), 0.0f);
  lib.lse.assign(std::size_t(shape.lse_size()), -std::numeric_limits<float>::infinity());
  const TensorView<float> o(lib.o.data(), shape.o_size(), 1, q_len, 8, 24);
  if (n > 0)  // an empty shard contributes lse −inf
    multihead::decode_attention(
        TensorView<const float>(in.q.data(), shape.q_size(), 1, q_len, 8, 32),
        TensorView<const float>(k.data(), n * kv_groups * 32, 1, n, kv_groups, 32),
        TensorView<const float>(v.data(), n * kv_groups * 24, 1, n, kv_groups, 24), o,
        KernelOptions{}, {lib.lse.data(), shape.lse_size()});
  const std::vector<float> before = lib.o;
  multihead::merge_shards(MPI_COMM_WORLD, o, {lib.lse.data(), shape.lse_size()}, root);
  if (root < 0 || rank() == root)
    kernel_testing::expect_meets_standard(lib, kernel_testing::run_oracle(in, KernelOptions{}));
  else
    EXPECT_EQ(lib.o, before);  // only the root receives
}

TEST(ShardedDecode, GqaOnEveryRank) { check_sharded_decode(2, 1, -1); }
TEST(ShardedDecode, MqaTwoQueriesOnTheRoot) { check_sharded_decode(1, 2, ranks() - 1); }
TEST(ShardedDecode, MhaOnRankZero) { check_sharded_decode(8, 1, 0); }

// A paged fp16 cache: each rank's PagedKvCache holds its slice of two sequences' keys, in
// blocks of 16; one decode_attention over both, then the merge.
TEST(ShardedDecode, PagedCacheSlicesOfTwoSequences) {
  const auto shape = kernel_testing::make_shape(2, 1, 150, 8, 2, 32, 24);
  Inputs in = kernel_testing::make_inputs(shape, 31);
  for (float& x : in.k) x = test_support::stored<multihead::fp16>(x);
  for (float& x : in.v) x = test_support::stored<multihead::fp16>(x);
  const auto [begin, end] = slice(shape.kv_len, rank(), ranks());
  const std::int64_t n = end - begin;
  multihead::PagedKvCache<multihead::fp16> cache(32, 16, 2, 32, 24);
  std::vector<std::int64_t> ids;
  for (std::int64_t b = 0; b < 2; ++b) {
    ids.push_back(cache.add_sequence());
    const std::int64_t k_row = 2 * 32, v_row = 2 * 24;
    const std::vector<float> k(in.k.begin() + (b * 150 + begin) * k_row,
                               in.k.begin() + (b * 150 + end) * k_row);
    const std::vector<float> v(in.v.begin() + (b * 150 + begin) * v_row,
                               in.v.begin() + (b * 150 + end) * v_row);
    if (n > 0)
      cache.append(ids.back(), TensorView<const float>(k.data(), n * k_row, 1, n, 2, 32),
                   TensorView<const float>(v.data(), n * v_row, 1, n, 2, 24));
  }
  kernel_testing::LibResult lib;
  lib.o.assign(std::size_t(shape.o_size()), 0.0f);
  lib.lse.assign(std::size_t(shape.lse_size()), 0.0f);
  const TensorView<float> o(lib.o.data(), shape.o_size(), 2, 1, 8, 24);
  multihead::decode_attention(TensorView<const float>(in.q.data(), shape.q_size(), 2, 1, 8, 32),
                              cache, {ids.data(), 2}, o, KernelOptions{},
                              {lib.lse.data(), shape.lse_size()});
  multihead::merge_shards(MPI_COMM_WORLD, o, {lib.lse.data(), shape.lse_size()});
  kernel_testing::expect_meets_standard(lib, kernel_testing::run_oracle(in, KernelOptions{}));
}

// MLA: each rank holds a slice of a bf16 latent cache; the absorbed attention is MQA with k the
// whole row and v its latent part.
TEST(ShardedDecode, LatentCacheSlices) {
  const std::int64_t latent = 32, rope = 8, length = 200, heads = 4;
  const auto shape = kernel_testing::make_shape(1, 1, length, heads, 1, latent + rope, latent);
  Inputs in = kernel_testing::make_inputs(shape, 5);
  for (float& x : in.k) x = test_support::stored<multihead::bf16>(x);
  for (std::int64_t t = 0; t < length; ++t)  // v: the latent part of each cached row
    std::copy(in.k.begin() + t * (latent + rope), in.k.begin() + t * (latent + rope) + latent,
              in.v.begin() + t * latent);
  const auto [begin, end] = slice(length, rank(), ranks());
  multihead::LatentCache<multihead::bf16> cache(1, std::max<std::int64_t>(end - begin, 1), latent,
                                                rope);
  std::vector<float> c_kv, k_rope;
  for (std::int64_t t = begin; t < end; ++t) {
    const float* row = in.k.data() + t * (latent + rope);
    c_kv.insert(c_kv.end(), row, row + latent);
    k_rope.insert(k_rope.end(), row + latent, row + latent + rope);
  }
  const std::int64_t n = end - begin;
  if (n > 0)
    cache.append(TensorView<const float>(c_kv.data(), n * latent, 1, n, 1, latent),
                 TensorView<const float>(k_rope.data(), n * rope, 1, n, 1, rope));
  kernel_testing::LibResult lib;
  lib.o.assign(std::size_t(shape.o_size()), 0.0f);
  lib.lse.assign(std::size_t(shape.lse_size()), -std::numeric_limits<float>::infinity());
  const TensorView<float> o(lib.o.data(), shape.o_size(), 1, 1, heads, latent);
  if (n > 0)
    multihead::decode_attention(
        TensorView<const float>(in.q.data(), shape.q_size(), 1, 1, heads, latent + rope), cache, o,
        KernelOptions{}, {lib.lse.data(), shape.lse_size()});
  multihead::merge_shards(MPI_COMM_WORLD, o, {lib.lse.data(), shape.lse_size()});
  kernel_testing::expect_meets_standard(lib, kernel_testing::run_oracle(in, KernelOptions{}));
}

TEST(ShardedDecode, BadShapesOnOneRankFailEveryRank) {
  std::vector<float> o(2 * 4 * 16, 0.0f), lse(2 * 4, 0.0f);
  const int last = ranks() - 1;
  // The last rank holds 3 heads where the others hold 4.
  const std::int64_t heads = rank() == last ? 3 : 4;
  EXPECT_INVALID("merge_shards: rank " + std::to_string(last) +
                     " holds [1, 2, 3, 16] but rank 0 [1, 2, 4, 16]",
                 multihead::merge_shards(
                     MPI_COMM_WORLD, TensorView<float>(o.data(), 2 * heads * 16, 1, 2, heads, 16),
                     {lse.data(), 2 * heads}));
  // Rank 0's own check fails (a short lse): every rank throws rank 0's message.
  EXPECT_INVALID(
      "merge_shards: rank 0 of " + std::to_string(ranks()) + " failed: multihead: lse: size (7)",
      multihead::merge_shards(MPI_COMM_WORLD, TensorView<float>(o.data(), 2 * 4 * 16, 1, 2, 4, 16),
                              {lse.data(), rank() == 0 ? 7 : 8}));
  // And the ranks are still in step: a good call after both works.
  lse.assign(8, 0.0f);
  multihead::merge_shards(MPI_COMM_WORLD, TensorView<float>(o.data(), 2 * 4 * 16, 1, 2, 4, 16),
                          {lse.data(), 8});
  EXPECT_NEAR(lse[0], std::log(float(ranks())), 1e-5);
}

// Ring attention: rank r holds the zig-zag chunks r and 2N − 1 − r of the sequence.
void check_ring(std::int64_t length, std::int64_t kv_groups, bool causal) {
  SCOPED_TRACE(::testing::Message()
               << "length " << length << ", kv_groups " << kv_groups << (causal ? ", causal" : ""));
  const std::int64_t heads = 4, d = 16, dv = 8;
  const auto shape = kernel_testing::make_shape(1, length, length, heads, kv_groups, d, dv);
  const Inputs in = kernel_testing::make_inputs(shape, 23 + std::uint64_t(length));
  const multihead::ZigzagShard own = multihead::zigzag_shard(length, ranks(), rank());
  const auto gather = [&](const std::vector<float>& x, std::int64_t width) {
    std::vector<float> out = rows(x, width, own.first_begin, own.first_end);
    const std::vector<float> second = rows(x, width, own.second_begin, own.second_end);
    out.insert(out.end(), second.begin(), second.end());
    return out;
  };
  const std::int64_t n = own.tokens();
  const auto q = gather(in.q, heads * d), k = gather(in.k, kv_groups * d),
             v = gather(in.v, kv_groups * dv);
  std::vector<float> o(std::size_t(n * heads * dv), std::numeric_limits<float>::quiet_NaN());
  std::vector<float> lse(std::size_t(n * heads), std::numeric_limits<float>::quiet_NaN());
  KernelOptions options;
  options.causal = causal;
  multihead::ring_attention(
      MPI_COMM_WORLD, length, TensorView<const float>(q.data(), n * heads * d, 1, n, heads, d),
      TensorView<const float>(k.data(), n * kv_groups * d, 1, n, kv_groups, d),
      TensorView<const float>(v.data(), n * kv_groups * dv, 1, n, kv_groups, dv),
      TensorView<float>(o.data(), n * heads * dv, 1, n, heads, dv), options,
      {lse.data(), n * heads});
  // The oracle's rows of this rank's positions: o [1, length, heads, dv], lse [1, heads, length].
  const kernel_testing::Oracle full = kernel_testing::run_oracle(in, options);
  kernel_testing::Oracle mine;
  const auto pick = [&](const auto& result, auto& out) {
    out.o.clear();
    out.lse.clear();
    for (const auto& [b, e] :
         {std::pair{own.first_begin, own.first_end}, std::pair{own.second_begin, own.second_end}})
      out.o.insert(out.o.end(), result.o.begin() + b * heads * dv,
                   result.o.begin() + e * heads * dv);
    for (std::int64_t h = 0; h < heads; ++h)
      for (const auto& [b, e] :
           {std::pair{own.first_begin, own.first_end}, std::pair{own.second_begin, own.second_end}})
        out.lse.insert(out.lse.end(), result.lse.begin() + h * length + b,
                       result.lse.begin() + h * length + e);
  };
  pick(full.exact, mine.exact);
  pick(full.fp32, mine.fp32);
  kernel_testing::expect_meets_standard({o, lse}, mine);
}

TEST(RingAttention, CausalGqaUnevenChunks) { check_ring(37, 2, true); }
TEST(RingAttention, CausalMqaLong) { check_ring(260, 1, true); }
TEST(RingAttention, FullAttentionMha) { check_ring(45, 4, false); }
TEST(RingAttention, ShorterThanTheChunksLeavesRanksEmpty) { check_ring(3, 2, true); }

TEST(RingAttention, ZigzagShardsTileTheSequence) {
  for (int n = 1; n <= 4; ++n)
    for (std::int64_t length : {0, 1, 7, 8, 100}) {
      std::vector<int> seen(std::size_t(length), 0);
      for (int r = 0; r < n; ++r) {
        const auto s = multihead::zigzag_shard(length, n, r);
        for (std::int64_t t = s.first_begin; t < s.first_end; ++t) ++seen[std::size_t(t)];
        for (std::int64_t t = s.second_begin; t < s.second_end; ++t) ++seen[std::size_t(t)];
        EXPECT_LE(s.first_end, s.second_begin);
      }
      EXPECT_EQ(std::count(seen.begin(), seen.end(), 1), length) << n << " ranks, " << length;
    }
}

TEST(RingAttention, AWrongShardOnOneRankFailsEveryRank) {
  const std::int64_t length = 20;
  const auto own = multihead::zigzag_shard(length, ranks(), rank());
  // The last rank holds one token too many.
  const std::int64_t n = own.tokens() + (rank() == ranks() - 1 ? 1 : 0);
  std::vector<float> x(std::size_t(n * 4 * 8), 0.1f), o(x.size());
  const TensorView<const float> view(x.data(), n * 4 * 8, 1, n, 4, 8);
  EXPECT_INVALID("ring_attention: rank " + std::to_string(ranks() - 1) + " of " +
                     std::to_string(ranks()) + " failed",
                 multihead::ring_attention(MPI_COMM_WORLD, length, view, view, view,
                                           TensorView<float>(o.data(), n * 4 * 8, 1, n, 4, 8)));
}

}  // namespace

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  ::testing::InitGoogleTest(&argc, argv);
  if (rank() != 0) {  // one rank prints; every rank checks
    auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
  }
  int failed = RUN_ALL_TESTS() != 0 ? 1 : 0, any = 0;
  MPI_Allreduce(&failed, &any, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  if (any && !failed) std::fprintf(stderr, "rank %d passed, another rank failed\n", rank());
  MPI_Finalize();
  return any;
}
