// The decode kernel (decode.hpp) over views, contiguous caches and paged caches, against the
// naive double-precision oracle under the accuracy standard of kernel_testing.hpp. (The kernel
// contract suite, test_kernel_contract.cpp, also runs over the decode kernel on float views;
// merge_states is tested beside the softmax state, test_state.cpp.)
//
// The shapes are chosen for the kernel's branches: rows per KV group (q_len × heads per group)
// on both sides of the row-path limit (W/2) and across one, two, three row vectors and several
// blocks; head dims with and without a fixed-dim kernel and with padding (37); cache lengths
// across tiles and, with two threads, across several splits whose states are merged.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "support/kernel_testing.hpp"
#include "support/testing.hpp"

namespace {

using test_support::kInf;
using test_support::stored;
using Storages = test_support::StorageTypes;

using namespace kernel_testing;
using multihead::bf16;
using multihead::fp16;
using multihead::KvCache;
using multihead::PagedKvCache;
using multihead::Span;



// ---- Paths, dims, lengths and splits, over float views -----------------------------------------

struct DecodeCase {
  int group_size, q_len, head_dim, value_dim;
  std::int64_t kv_len;
  bool causal;
  int threads;
};

class DecodeShapes : public ::testing::TestWithParam<DecodeCase> {};

TEST_P(DecodeShapes, MatchesNaive) {
  const DecodeCase& c = GetParam();
  const AttentionShape shape =
      make_shape(2, c.q_len, c.kv_len, 2 * c.group_size, 2, c.head_dim, c.value_dim);
  SCOPED_TRACE(describe(shape));
  KernelOptions options;
  options.causal = c.causal;
  options.threads = c.threads;
  check(kDecode, make_inputs(shape, std::uint64_t(c.kv_len * 131 + c.group_size), 2.0f), options);
}

std::vector<DecodeCase> decode_cases() {
  // (group size, q_len): 1–4 rows (row path), 8–9 (row path on AVX-512 only), 16, 32, 35, 48
  // (one, two, three row vectors), 64 and 96 rows (several blocks).
  const int rows[][2] = {{1, 1}, {1, 3}, {2, 1}, {4, 1}, {4, 2}, {8, 1}, {3, 3},
                         {16, 1}, {32, 1}, {7, 5}, {48, 1}, {32, 2}, {32, 3}};
  const int dims[][2] = {{128, 128}, {37, 24}};
  std::vector<DecodeCase> cases;
  for (const auto& r : rows)
    for (const auto& d : dims)
      for (std::int64_t kv_len : {1, 65, 1100})
        for (bool causal : {false, true})
          for (int threads : {1, 2})
            cases.push_back({r[0], r[1], d[0], d[1], kv_len, causal, threads});
  return cases;
}

std::string decode_case_name(const ::testing::TestParamInfo<DecodeCase>& info) {
  const DecodeCase& c = info.param;
  return "gs" + std::to_string(c.group_size) + "_q" + std::to_string(c.q_len) + "_d" +
         std::to_string(c.head_dim) + "_" + std::to_string(c.value_dim) + "_len" +
         std::to_string(c.kv_len) + (c.causal ? "_causal" : "") + "_t" +
         std::to_string(c.threads);
}

INSTANTIATE_TEST_SUITE_P(RowsDimsLengths, DecodeShapes, ::testing::ValuesIn(decode_cases()),
                         decode_case_name);

TEST(DecodeSplits, ManyThreadsAndRaggedSplitsMeetTheStandard) {
  // One sequence and one group: every thread count splits the cache differently.
  const AttentionShape shape = make_shape(1, 1, 5000, 8, 1, 64, 64);
  const Inputs in = make_inputs(shape, 77);
  for (int threads : {1, 2, 3, 4, 7}) {
    SCOPED_TRACE("threads " + std::to_string(threads));
    KernelOptions options;
    options.threads = threads;
    check(kDecode, in, options);
  }
}

TEST(DecodeNumerics, LargeLogitsAcrossSplits) {
  // Scores up to ±1e4: the running max moves by far across tiles and splits.
  const AttentionShape shape = make_shape(1, 2, 3000, 4, 1, 16, 16);
  KernelOptions options;
  options.threads = 2;
  options.causal = true;
  check(kDecode, make_inputs(shape, 5, 25.0f), options);
}

// ---- Contiguous caches of each storage type ----------------------------------------------------

template <class Storage>
class DecodeCache : public ::testing::Test {};
TYPED_TEST_SUITE(DecodeCache, Storages);

TYPED_TEST(DecodeCache, MatchesNaiveOverTheStoredValues) {
  using Storage = TypeParam;
  // Head dims with fixed-dim kernels (bf16 rows of these are widened in pairs of vectors, the
  // output columns reordered until the end) and rows per group from one to a column-tile block.
  for (std::int64_t d : {64, 128, 256})
    for (int q_len : {1, 3})
      for (int group_size : {1, 3, 4, 32}) {
        const std::int64_t groups = 2, token = groups * d;
        const AttentionShape shape = make_shape(2, q_len, 700, groups * group_size, groups, d, d);
        SCOPED_TRACE(describe(shape));
        Inputs in = make_inputs(shape, std::uint64_t(900 + q_len + d));
        KvCache<Storage> cache(shape.batch, 1000, groups, d);
        // Appended in two parts, the second the q_len new tokens (as a decode step does).
        for (const auto& [t0, n] : {std::pair<std::int64_t, std::int64_t>{0, 700 - q_len},
                                    std::pair<std::int64_t, std::int64_t>{700 - q_len, q_len}}) {
          const auto part = [&](const std::vector<float>& x) {
            return TensorView<const float>::strided(x.data() + t0 * token,
                                                    std::int64_t(x.size()) - t0 * token, 2, n,
                                                    groups, d, 700 * token, token, d);
          };
          cache.append(part(in.k), part(in.v));
        }
        in.k = stored<Storage>(in.k);
        in.v = stored<Storage>(in.v);
        KernelOptions options;
        options.causal = true;
        options.threads = 2;
        LibResult lib;
        lib.o.assign(std::size_t(shape.o_size()), std::nanf(""));
        lib.lse.assign(std::size_t(shape.lse_size()), std::nanf(""));
        multihead::decode_attention(
            TensorView<const float>(in.q.data(), shape.q_size(), 2, q_len, shape.heads, d), cache,
            TensorView<float>(lib.o.data(), shape.o_size(), 2, q_len, shape.heads, d), options,
            LseOutput{lib.lse.data(), shape.lse_size()});
        expect_meets_standard(lib, run_oracle(in, options));
      }
}

// The kernel prefetches the next tile's rows while it computes the current one: it must request
// those rows and no others, whatever the layout. Head-major views ([batch, groups, tokens, dim])
// once had it request, per token, the span from group 0's row to the last group's, most of the
// cache: right results, about 200 times slower (D1's heads over 1024 tokens: 54.8 against 0.23 ms).
TEST(DecodePrefetch, RequestsTheNextTilesRowsAndNoOthers) {
  using multihead::detail::add_prefetch_regions;
  using multihead::detail::KvRun;
  using multihead::detail::TilePrefetch;
  const std::int64_t tokens = 1024, groups = 8, d = 128, keys = 32, first = 40;
  std::vector<float> k(tokens * groups * d), v(k.size());
  const auto lines = [](const std::vector<TilePrefetch>& regions) {
    std::int64_t n = 0;
    for (const TilePrefetch& r : regions) n += r.rows * ((r.bytes + 63) / 64);
    return n;
  };
  const std::int64_t lines_per_row = d * std::int64_t(sizeof(float)) / 64;
  for (bool head_major : {false, true}) {
    SCOPED_TRACE(head_major ? "head-major" : "token-major");
    const std::int64_t token = head_major ? d : groups * d, group = head_major ? tokens * d : d;
    const KvRun<float> run{k.data() + first * token, v.data() + first * token, token, token,
                           group, group, int(keys)};
    std::vector<TilePrefetch> regions;
    add_prefetch_regions(run, groups, d, d, regions);
    EXPECT_EQ(lines(regions), 2 * keys * groups * lines_per_row);
  }
  // A latent cache's V rows are its K rows' first elements: requested once.
  const std::int64_t latent = 512, row = 576;
  const KvRun<float> run{k.data(), k.data(), row, row, row, latent, int(keys)};
  std::vector<TilePrefetch> regions;
  add_prefetch_regions(run, 1, row, latent, regions);
  EXPECT_EQ(lines(regions), keys * row * std::int64_t(sizeof(float)) / 64);
}

// The next tile's lines are spread over the calls the current tile makes of the prefetch cursor
// (tile_prefetch_steps): the last line must go with the last call, neither earlier (requests in
// a burst) nor never. A paged tile makes its products' calls once per run; counting it as one
// run paced a paged MQA tile of four 16-token runs three times too fast. Checked by running the
// kernel's pass of one KV group over a tile's runs (attend_tile_in_place) with a cursor over
// exactly that many lines (one per call), then over one line more.
template <class Path>
void check_prefetch_pacing(int rows, const std::vector<int>& run_keys) {
  using multihead::detail::BlockSite;
  using multihead::detail::DecodeProblem;
  using multihead::detail::KvRun;
  using multihead::detail::KvTile;
  using multihead::detail::PrefetchCursor;
  using multihead::detail::ScorePass;
  using multihead::detail::TilePrefetch;
  const std::int64_t d = 64;
  int keys = 0;
  for (int n : run_keys) keys += n;
  multihead::KernelShape shape;
  shape.batch = shape.q_len = shape.kv_groups = 1;
  shape.heads = rows;
  shape.kv_len = keys;
  shape.head_dim = shape.value_dim = d;
  const std::vector<float> q = naive::random_vector(rows * d, 1);
  const std::vector<float> k = naive::random_vector(keys * d, 2);
  const std::vector<float> v = naive::random_vector(keys * d, 3);
  std::vector<float> o(q.size());
  const multihead::KernelOptions options;
  const ScorePass pass(options, shape);
  const DecodeProblem problem{
      TensorView<const float>(q.data(), std::int64_t(q.size()), 1, 1, rows, d),
      TensorView<float>(o.data(), std::int64_t(o.size()), 1, 1, rows, d), nullptr, shape, 0.125f,
      &pass};
  KvTile<float, Path::BC> tile;
  for (int n : run_keys) {
    tile.runs[tile.count++] = KvRun<float>{k.data() + tile.keys * d, v.data() + tile.keys * d,
                                           d, d, d, d, n};
    tile.keys += n;
  }
  multihead::detail::AlignedBuffer<float> scratch(Path::scratch_floats(rows, d, d));
  Path path(scratch.data(), rows, d, d);
  ASSERT_TRUE(path.reads_in_place());
  const std::int64_t steps = multihead::detail::tile_prefetch_steps(path, tile);
  std::vector<char> lines(std::size_t((steps + 2) * 64));
  for (const std::int64_t extra : {0, 1}) {
    SCOPED_TRACE("lines = calls + " + std::to_string(extra));
    const TilePrefetch region(lines.data(), 64, steps + extra, 64);  // one line per row
    PrefetchCursor cursor(&region, 1);
    cursor.pace(steps + extra);  // one line per call
    path.template begin<float>(problem, BlockSite{0, 0, 0, keys, true});
    multihead::detail::attend_tile_in_place(path, tile, 0, 0, cursor);
    EXPECT_EQ(cursor.done(), extra == 0);
  }
}

TEST(DecodePrefetch, PacesTheNextTileOverEveryCallOfATilesRuns) {
  using Ops = multihead::simd::Ops;
  const std::vector<std::vector<int>> tiles = {{16, 16, 16, 16}, {5, 7, 3, 1}, {40}};
  for (const auto& runs : tiles) {
    SCOPED_TRACE("runs of " + std::to_string(runs[0]) + " keys, ...");
    for (int rows : {3, 4, 8}) {
      SCOPED_TRACE("rows " + std::to_string(rows));
      check_prefetch_pacing<multihead::detail::RowTiles<Ops, 0, 0>>(rows, runs);
    }
    check_prefetch_pacing<multihead::detail::ColumnTiles<Ops, 0, 0, 2>>(2 * Ops::W, runs);
  }
}

TEST(DecodeCacheEdges, EmptyCacheGivesZeroAndMinusInfinity) {
  KvCache<bf16> cache(1, 8, 2, 16);
  std::vector<float> q(4 * 16, 1.0f), o(4 * 16, 7.0f), lse(4, 7.0f);
  multihead::decode_attention(TensorView<const float>(q.data(), 64, 1, 1, 4, 16), cache,
                              TensorView<float>(o.data(), 64, 1, 1, 4, 16), {},
                              LseOutput{lse.data(), 4});
  for (float x : o) EXPECT_EQ(x, 0.0f);
  for (float x : lse) EXPECT_EQ(x, -kInf);
}

// ---- Paged caches: a batch of sequences of different lengths in one call -----------------------

template <class Storage>
void check_paged(std::int64_t block_size, int q_len) {
  const std::int64_t groups = 2, heads = 8, d = 64;
  const std::vector<std::int64_t> lengths = {0, 1, 15, 16, 17, 100, 700};
  PagedKvCache<Storage> cache(200, block_size, groups, d);
  // Churn first, so that the sequences' blocks are out of order in the pool.
  std::vector<float> junk(std::size_t(40 * groups * d), 3.0f);
  const TensorView<const float> junk_view(junk.data(), std::int64_t(junk.size()), 1, 40, groups, d);
  const auto a = cache.add_sequence();
  const auto b = cache.add_sequence();
  cache.append(a, junk_view, junk_view);
  cache.append(b, junk_view, junk_view);
  cache.release(a);

  const std::int64_t batch = std::int64_t(lengths.size());
  std::vector<std::int64_t> ids;
  std::vector<Inputs> inputs;
  for (std::size_t i = 0; i < lengths.size(); ++i) {
    const AttentionShape shape = make_shape(1, q_len, std::max<std::int64_t>(lengths[i], 1),
                                            heads, groups, d, d);
    inputs.push_back(make_inputs(shape, 31 * i + 7));
    ids.push_back(cache.add_sequence());
    if (lengths[i] == 0) continue;
    // In uneven appends, which cross block boundaries at varying offsets.
    for (std::int64_t t = 0; t < lengths[i];) {
      const std::int64_t n = std::min<std::int64_t>(lengths[i] - t, 1 + t % 23);
      const auto part = [&](const std::vector<float>& x) {
        return TensorView<const float>(x.data() + t * groups * d, n * groups * d, 1, n, groups, d);
      };
      cache.append(ids.back(), part(inputs.back().k), part(inputs.back().v));
      t += n;
    }
    if (i == 2) cache.release(b);  // freed blocks are reused by the longer sequences
  }

  std::vector<float> q, o(std::size_t(batch * q_len * heads * d), std::nanf(""));
  std::vector<float> lse(std::size_t(batch * heads * q_len), std::nanf(""));
  for (const Inputs& in : inputs) q.insert(q.end(), in.q.begin(), in.q.end());
  KernelOptions options;
  options.causal = true;
  options.threads = 2;
  multihead::decode_attention(
      TensorView<const float>(q.data(), std::int64_t(q.size()), batch, q_len, heads, d), cache,
      Span<const std::int64_t>{ids.data(), batch},
      TensorView<float>(o.data(), std::int64_t(o.size()), batch, q_len, heads, d), options,
      LseOutput{lse.data(), std::int64_t(lse.size())});

  for (std::size_t i = 0; i < lengths.size(); ++i) {
    SCOPED_TRACE("sequence of " + std::to_string(lengths[i]) + " tokens");
    const std::size_t per_o = std::size_t(q_len * heads * d), per_lse = std::size_t(heads * q_len);
    LibResult lib;
    for (std::size_t x = 0; x < per_o; ++x) lib.o.push_back(o[i * per_o + x]);
    for (std::size_t x = 0; x < per_lse; ++x) lib.lse.push_back(lse[i * per_lse + x]);
    if (lengths[i] == 0) {
      for (float x : lib.o) EXPECT_EQ(x, 0.0f);
      for (float x : lib.lse) EXPECT_EQ(x, -kInf);
      continue;
    }
    Inputs in = inputs[i];
    in.k = stored<Storage>(in.k);
    in.v = stored<Storage>(in.v);
    expect_meets_standard(lib, run_oracle(in, options));
  }
}

TEST(DecodePaged, RaggedBatchFloatBlocksOf16) { check_paged<float>(16, 1); }
TEST(DecodePaged, RaggedBatchBf16BlocksOf16) { check_paged<bf16>(16, 1); }
TEST(DecodePaged, RaggedBatchFp16OddBlocksTwoQueries) { check_paged<fp16>(5, 2); }
TEST(DecodePaged, RaggedBatchFloatBlocksOf64ThreeQueries) { check_paged<float>(64, 3); }

// ---- Errors: thrown before anything is written -------------------------------------------------

TEST(DecodeErrors, BadArgumentsThrowAndWriteNothing) {
  KvCache<float> cache(2, 16, 2, 8);
  std::vector<float> kv(2 * 4 * 2 * 8, 0.5f);
  const TensorView<const float> kv_view(kv.data(), std::int64_t(kv.size()), 2, 4, 2, 8);
  cache.append(kv_view, kv_view);
  std::vector<float> q(2 * 6 * 8, 1.0f), o(2 * 6 * 8, 7.0f), lse(12, 7.0f);
  const auto expect_untouched = [&] {
    for (float x : o) ASSERT_EQ(x, 7.0f);
    for (float x : lse) ASSERT_EQ(x, 7.0f);
  };
  const auto q_view = [&](std::int64_t batch, std::int64_t heads, std::int64_t dim) {
    return TensorView<const float>(q.data(), batch * heads * dim, batch, 1, heads, dim);
  };
  const auto o_view = [&](std::int64_t batch, std::int64_t heads, std::int64_t dim) {
    return TensorView<float>(o.data(), batch * heads * dim, batch, 1, heads, dim);
  };
  // 3 heads over 2 groups; q.dim 6 vs head_dim 8; batch 1 vs 2; lse of the wrong size.
  EXPECT_THROW(multihead::decode_attention(q_view(2, 3, 8), cache, o_view(2, 3, 8)),
               std::invalid_argument);
  EXPECT_THROW(multihead::decode_attention(q_view(2, 4, 6), cache, o_view(2, 4, 8)),
               std::invalid_argument);
  EXPECT_THROW(multihead::decode_attention(q_view(1, 4, 8), cache, o_view(1, 4, 8)),
               std::invalid_argument);
  EXPECT_THROW(multihead::decode_attention(q_view(2, 4, 8), cache, o_view(2, 4, 8), {},
                                           LseOutput{lse.data(), 7}),
               std::invalid_argument);
  expect_untouched();

  PagedKvCache<bf16> paged(4, 4, 2, 8);
  const auto live = paged.add_sequence();
  const auto gone = paged.add_sequence();
  paged.release(gone);
  const std::int64_t unknown[] = {live, 99}, released[] = {gone, live};
  for (const std::int64_t* ids : {unknown, released})
    EXPECT_THROW(multihead::decode_attention(q_view(2, 4, 8), paged,
                                             Span<const std::int64_t>{ids, 2}, o_view(2, 4, 8)),
                 std::invalid_argument);
  EXPECT_THROW(multihead::decode_attention(q_view(2, 4, 8), paged,
                                           Span<const std::int64_t>{unknown, 0}, o_view(2, 4, 8)),
               std::invalid_argument);
  expect_untouched();
}

}  // namespace
