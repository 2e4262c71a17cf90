// Decoding over paged K/V in memory the test owns (paged_view.hpp), as an engine hands it over:
// a pool of blocks in either layout, block tables of int32 or int64 ids in FlashAttention's
// block_table form or FlashInfer's indptr form. Checked against the naive double-precision
// oracle, bitwise against the same rows in a PagedKvCache / PagedLatentCache (whose view()
// takes the same path), and every bad table rejected before anything is read or written.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "support/kernel_testing.hpp"
#include "support/owned_pool.hpp"
#include "support/testing.hpp"

namespace {

using namespace kernel_testing;
using multihead::bf16;
using multihead::Codec;
using multihead::fp16;
using multihead::PagedKvCache;
using multihead::PagedKvView;
using multihead::PagedLatentCache;
using multihead::PagedSequences;
using multihead::q8;
using multihead::Span;
using test_support::kInf;
using test_support::stored;

struct Outputs {
  std::vector<float> q, o, lse;
  std::int64_t batch, q_len;
  TensorView<const float> q_view() const {
    return {q.data(), std::int64_t(q.size()), batch, q_len, 8, 64};
  }
  TensorView<float> o_view() { return {o.data(), std::int64_t(o.size()), batch, q_len, 8, 64}; }
  LseOutput lse_out() { return {lse.data(), std::int64_t(lse.size())}; }
};

template <class S, class Index>
Outputs outputs_for(const OwnedPool<S, Index>& pool) {
  Outputs r;
  r.batch = pool.count();
  r.q_len = pool.inputs.front().shape.q_len;
  for (const Inputs& in : pool.inputs) r.q.insert(r.q.end(), in.q.begin(), in.q.end());
  r.o.assign(std::size_t(r.batch * r.q_len * 8 * 64), std::nanf(""));
  r.lse.assign(std::size_t(r.batch * 8 * r.q_len), std::nanf(""));
  return r;
}

// Sequence b's outputs against the oracle over its rows as stored.
template <class S, class Index>
void expect_matches_oracle(const OwnedPool<S, Index>& pool, const Outputs& r,
                           const KernelOptions& options) {
  const std::size_t per_o = std::size_t(r.q_len * 8 * 64), per_lse = std::size_t(8 * r.q_len);
  for (std::size_t b = 0; b < pool.lengths.size(); ++b) {
    SCOPED_TRACE("sequence " + std::to_string(b) + " of " + std::to_string(pool.lengths[b]) +
                 " tokens");
    LibResult lib;
    lib.o.assign(r.o.begin() + std::ptrdiff_t(b * per_o), r.o.begin() + std::ptrdiff_t((b + 1) * per_o));
    lib.lse.assign(r.lse.begin() + std::ptrdiff_t(b * per_lse),
                   r.lse.begin() + std::ptrdiff_t((b + 1) * per_lse));
    if (pool.lengths[b] == 0) {
      for (float x : lib.o) EXPECT_EQ(x, 0.0f);
      for (float x : lib.lse) EXPECT_EQ(x, -kInf);
      continue;
    }
    Inputs in = pool.inputs[b];
    in.k = stored<S>(in.k);
    in.v = stored<S>(in.v);
    expect_meets_standard(lib, run_oracle(in, options));
  }
}

template <class S, class Index>
void check_owned(std::int64_t block_size, int q_len, bool group_major, bool indptr_form) {
  const OwnedPool<S, Index> pool(block_size, {0, 1, 15, 16, 17, 100, 300}, q_len, group_major);
  Outputs r = outputs_for(pool);
  KernelOptions options;
  options.causal = true;
  options.threads = 2;
  multihead::decode_attention(r.q_view(), pool.view,
                              indptr_form ? pool.as_indptr() : pool.as_block_table(), r.o_view(),
                              options, r.lse_out());
  expect_matches_oracle(pool, r, options);
}

TEST(PagedView, TokenMajorInt32BlockTable) { check_owned<float, std::int32_t>(16, 1, false, false); }
TEST(PagedView, TokenMajorInt64BlockTableBf16) { check_owned<bf16, std::int64_t>(16, 1, false, false); }
TEST(PagedView, GroupMajorInt32IndptrTwoQueries) { check_owned<float, std::int32_t>(5, 2, true, true); }
TEST(PagedView, GroupMajorInt64IndptrFp16ManyRows) { check_owned<fp16, std::int64_t>(64, 4, true, true); }

// Both vocabularies over the same pool, and the same rows in a PagedKvCache: one path, so the
// same bits.
template <class S>
void check_same_bits(int q_len) {
  const OwnedPool<S, std::int32_t> pool(16, {40, 0, 129, 16}, q_len, false);
  KernelOptions options;
  options.causal = true;
  options.threads = 2;
  Outputs a = outputs_for(pool), b = outputs_for(pool), c = outputs_for(pool);
  multihead::decode_attention(a.q_view(), pool.view, pool.as_block_table(), a.o_view(), options,
                              a.lse_out());
  multihead::decode_attention(b.q_view(), pool.view, pool.as_indptr(), b.o_view(), options,
                              b.lse_out());
  PagedKvCache<S> cache(32, 16, 2, 64);
  std::vector<std::int64_t> ids;
  for (const Inputs& in : pool.inputs) {
    ids.push_back(cache.add_sequence());
    const std::int64_t n = pool.lengths[ids.size() - 1];
    if (n == 0) continue;
    const TensorView<const float> k(in.k.data(), n * 2 * 64, 1, n, 2, 64);
    const TensorView<const float> v(in.v.data(), n * 2 * 64, 1, n, 2, 64);
    cache.append(ids.back(), k, v);
  }
  multihead::decode_attention(c.q_view(), cache, Span<const std::int64_t>{ids.data(), c.batch},
                              c.o_view(), options, c.lse_out());
  EXPECT_EQ(a.o, b.o);
  EXPECT_EQ(a.lse, b.lse);
  EXPECT_EQ(a.o, c.o);
  EXPECT_EQ(a.lse, c.lse);
  // The cache's own view with its own tables (int64, read in place): the same again.
  std::vector<std::int64_t> table(4 * 16, 0), lengths;
  for (std::size_t s = 0; s < ids.size(); ++s) {
    const auto& blocks = cache.block_table(ids[s]);
    std::copy(blocks.begin(), blocks.end(), table.begin() + std::ptrdiff_t(s * 16));
    lengths.push_back(cache.length(ids[s]));
  }
  Outputs d = outputs_for(pool);
  multihead::decode_attention(
      d.q_view(), cache.view(),
      PagedSequences<std::int64_t>::from_block_table({table.data(), 64}, 16, {lengths.data(), 4}),
      d.o_view(), options, d.lse_out());
  EXPECT_EQ(a.o, d.o);
  EXPECT_EQ(a.lse, d.lse);
}

TEST(PagedView, SameBitsAsPagedCacheFloat) { check_same_bits<float>(1); }
TEST(PagedView, SameBitsAsPagedCacheQ8) { check_same_bits<q8>(3); }

// A latent pool (v = k): PagedLatentCache's view decodes as the cache does.
TEST(PagedView, LatentCacheViewSameBits) {
  const std::int64_t latent = 64, rope = 16, heads = 4, n = 37;
  PagedLatentCache<bf16> cache(8, 16, latent, rope);
  const auto seq = cache.add_sequence();
  const std::vector<float> c_kv = naive::random_vector(n * latent, 5);
  const std::vector<float> k_rope = naive::random_vector(n * rope, 6);
  cache.append(seq, TensorView<const float>(c_kv.data(), n * latent, 1, n, 1, latent),
               TensorView<const float>(k_rope.data(), n * rope, 1, n, 1, rope));
  const std::vector<float> q = naive::random_vector(heads * (latent + rope), 7);
  std::vector<float> o1(std::size_t(heads * latent)), o2(o1.size());
  const TensorView<const float> qv(q.data(), std::int64_t(q.size()), 1, 1, heads, latent + rope);
  KernelOptions options;
  options.scale = 0.1f;
  const std::int64_t ids[] = {seq};
  multihead::decode_attention(qv, cache, Span<const std::int64_t>{ids, 1},
                              TensorView<float>(o1.data(), heads * latent, 1, 1, heads, latent),
                              options);
  const auto& blocks = cache.block_table(seq);
  const std::int64_t length = n;
  multihead::decode_attention(
      qv, cache.view(),
      PagedSequences<std::int64_t>::from_block_table({blocks.data(), std::int64_t(blocks.size())},
                                                     std::int64_t(blocks.size()), {&length, 1}),
      TensorView<float>(o2.data(), heads * latent, 1, 1, heads, latent), options);
  EXPECT_EQ(o1, o2);
}

// ---- Bad pools and tables: rejected before anything is read or written --------------------------

TEST(PagedViewErrors, BadTablesAndPoolsThrowAndWriteNothing) {
  OwnedPool<float, std::int32_t> pool(4, {5, 9}, 1, false);
  Outputs r = outputs_for(pool);
  std::fill(r.o.begin(), r.o.end(), 7.0f);
  std::fill(r.lse.begin(), r.lse.end(), 7.0f);
  const auto run = [&](const PagedKvView<float>& view, const PagedSequences<std::int32_t>& seqs) {
    multihead::decode_attention(r.q_view(), view, seqs, r.o_view(), {}, r.lse_out());
  };
  const auto table = [&] { return pool.as_block_table(); };

  // An id outside the pool, in either form; a negative one.
  auto saved = pool.table[1];
  pool.table[1] = std::int32_t(pool.view.num_blocks);
  EXPECT_INVALID("block 1 is id " + std::to_string(pool.view.num_blocks), run(pool.view, table()));
  pool.table[1] = -2;
  EXPECT_INVALID("outside the pool's [0, ", run(pool.view, table()));
  pool.table[1] = saved;
  saved = pool.indices[3];
  pool.indices[3] = 1 << 30;
  EXPECT_INVALID("outside the pool's", run(pool.view, pool.as_indptr()));
  pool.indices[3] = saved;

  // A length beyond its table, a negative length; a last page of 0 or more than block_size
  // tokens; indptr decreasing or beyond the indices; a table smaller than count × its rows.
  pool.table_lengths[0] = std::int32_t(4 * pool.row_stride() + 1);
  EXPECT_INVALID("but its table holds", run(pool.view, table()));
  pool.table_lengths[0] = -1;
  EXPECT_INVALID("lengths[0] (-1) must not be negative", run(pool.view, table()));
  pool.table_lengths[0] = 5;
  pool.last_page_len[1] = 0;
  EXPECT_INVALID("last_page_len[1] (0) must be in [1, 4]", run(pool.view, pool.as_indptr()));
  pool.last_page_len[1] = 5;
  EXPECT_INVALID("last_page_len[1] (5)", run(pool.view, pool.as_indptr()));
  pool.last_page_len[1] = 1;
  std::swap(pool.indptr[1], pool.indptr[2]);
  EXPECT_INVALID("is below indptr", run(pool.view, pool.as_indptr()));
  std::swap(pool.indptr[1], pool.indptr[2]);
  pool.indptr[2] += 1;
  EXPECT_INVALID("is beyond the indices", run(pool.view, pool.as_indptr()));
  pool.indptr[2] -= 1;
  EXPECT_INVALID("block_table: size",
                 run(pool.view, PagedSequences<std::int32_t>::from_block_table(
                                    {pool.table.data(), 3}, pool.row_stride(),
                                    {pool.table_lengths.data(), 2})));

  // A pool whose rows overlap, or whose blocks do; a null pool.
  PagedKvView<float> bad = pool.view;
  bad.k_group_stride = 32;  // rows of 64 values
  EXPECT_INVALID("pool.k: rows of 64 units overlap", run(bad, table()));
  bad = pool.view;
  bad.v_block_stride -= 1;
  EXPECT_INVALID("pool.v_block_stride", run(bad, table()));
  bad = pool.view;
  bad.k = nullptr;
  EXPECT_INVALID("must not be null", run(bad, table()));

  // q for another count of sequences; an output over the pool or the tables.
  EXPECT_INVALID("batch sizes differ",
                 multihead::decode_attention(
                     TensorView<const float>(r.q.data(), 8 * 64, 1, 1, 8, 64), pool.view, table(),
                     TensorView<float>(r.o.data(), 8 * 64, 1, 1, 8, 64)));
  EXPECT_INVALID("overlaps", multihead::decode_attention(
                                 r.q_view(), pool.view, table(),
                                 TensorView<float>(pool.v_pool.data(), 2 * 8 * 64, 2, 1, 8, 64)));
  for (float x : r.o) ASSERT_EQ(x, 7.0f);
  for (float x : r.lse) ASSERT_EQ(x, 7.0f);

  // The tables were good all along.
  run(pool.view, table());
  EXPECT_NE(r.o.front(), 7.0f);
}

}  // namespace
