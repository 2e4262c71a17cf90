// batch_attention (cache/batch.hpp): a continuous batch in one call, each sequence with its own
// number of new queries (none, a decode step, a prefill chunk) over its own cached length.
// Checked against the naive double-precision oracle one sequence at a time, bitwise against one
// decode_attention call per sequence (one thread: the same blocks and no splits), over every
// K/V holder, and every bad argument rejected before anything is written.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "support/kernel_testing.hpp"
#include "support/owned_pool.hpp"
#include "support/testing.hpp"

namespace {

using namespace kernel_testing;
using multihead::bf16;
using multihead::fp16;
using multihead::KvCache;
using multihead::PagedKvCache;
using multihead::PagedLatentCache;
using multihead::q8;
using multihead::ScoreSite;
using multihead::Span;
using test_support::kInf;

constexpr std::int64_t kHeads = 8, kDim = 64;

// Lengths and query counts that put sequences on every tile path of every ISA (4 query heads
// per K/V head: 1 query is 4 rows, 3 are 12, 37 are 148, 200 are 800), beside a sequence with
// no queries, one with no keys, and queries beyond a sequence's keys.
const std::vector<std::int64_t> kLengths = {300, 0, 17, 1000, 64, 200, 5, 40};
const std::vector<int> kQueries = {1, 2, 0, 37, 1, 200, 3, 12};

// The packed queries of a pool's sequences and room for their outputs, o and lse NaN.
template <class Index>
struct Packed {
  std::vector<Index> cu{0};
  std::vector<float> q, o, lse;

  template <class S, class PoolIndex>
  explicit Packed(const OwnedPool<S, PoolIndex>& pool) {
    for (std::size_t b = 0; b < pool.inputs.size(); ++b) {
      const std::vector<float>& x = pool.inputs[b].q;
      q.insert(q.end(), x.begin(), x.begin() + pool.q_lens[b] * kHeads * kDim);
      cu.push_back(Index(cu.back() + pool.q_lens[b]));
    }
    o.assign(q.size(), std::nanf(""));
    lse.assign(std::size_t(kHeads * total()), std::nanf(""));
  }
  std::int64_t total() const { return std::int64_t(cu.back()); }
  Span<const Index> offsets() const { return {cu.data(), std::int64_t(cu.size())}; }
  TensorView<const float> q_view() const {
    return {q.data(), std::int64_t(q.size()), 1, total(), kHeads, kDim};
  }
  TensorView<float> o_view() { return {o.data(), std::int64_t(o.size()), 1, total(), kHeads, kDim}; }
  LseOutput lse_out() { return {lse.data(), std::int64_t(lse.size())}; }

  // Sequence b's rows, its lse [1, heads, q_len] as a call of its own returns it.
  LibResult sequence(std::int64_t b) const {
    const std::int64_t first = std::int64_t(cu[std::size_t(b)]);
    const std::int64_t n = std::int64_t(cu[std::size_t(b) + 1]) - first;
    LibResult r;
    r.o.assign(o.begin() + first * kHeads * kDim, o.begin() + (first + n) * kHeads * kDim);
    for (std::int64_t h = 0; h < kHeads; ++h)
      for (std::int64_t t = 0; t < n; ++t) r.lse.push_back(lse[std::size_t(h * total() + first + t)]);
    return r;
  }
};

// Every sequence's outputs against the oracle over its rows as stored.
template <class S, class PoolIndex, class Index>
void expect_matches_oracle(const OwnedPool<S, PoolIndex>& pool, const Packed<Index>& r,
                           const KernelOptions& options) {
  for (std::size_t b = 0; b < pool.lengths.size(); ++b) {
    SCOPED_TRACE("sequence " + std::to_string(b) + ": " + std::to_string(pool.q_lens[b]) +
                 " queries over " + std::to_string(pool.lengths[b]) + " tokens");
    const LibResult lib = r.sequence(std::int64_t(b));
    if (pool.q_lens[b] == 0) continue;
    if (pool.lengths[b] == 0) {
      for (float x : lib.o) EXPECT_EQ(x, 0.0f);
      for (float x : lib.lse) EXPECT_EQ(x, -kInf);
      continue;
    }
    Inputs in = pool.inputs[b];
    in.k = stored_rows<S>(in.k, kDim);
    in.v = stored_rows<S>(in.v, kDim);
    expect_meets_standard(lib, run_oracle(in, options));
  }
}

template <class S, class PoolIndex, class Index>
void check_mixed(bool causal, bool group_major, bool indptr_form) {
  const OwnedPool<S, PoolIndex> pool(16, kLengths, kQueries, group_major);
  Packed<Index> r(pool);
  KernelOptions options;
  options.causal = causal;
  options.threads = 2;
  multihead::batch_attention(r.q_view(), r.offsets(), pool.view,
                             indptr_form ? pool.as_indptr() : pool.as_block_table(), r.o_view(),
                             options, r.lse_out());
  expect_matches_oracle(pool, r, options);
}

TEST(BatchAttention, MixedBatchFloatPoolCausal) { check_mixed<float, std::int32_t, std::int32_t>(true, false, false); }
TEST(BatchAttention, MixedBatchBf16PoolNotCausal) { check_mixed<bf16, std::int64_t, std::int64_t>(false, true, true); }
TEST(BatchAttention, MixedBatchQ8PoolCausal) { check_mixed<q8, std::int32_t, std::int64_t>(true, false, true); }

// A custom modifier that tells the sequences and their queries apart: in a batch call it sees
// ScoreSite::batch = the sequence, in a call of one sequence batch 0, so that call names it.
struct Tilt {
  std::int64_t sequence = -1;  // -1: the batch's
  float logit(float x, const ScoreSite& at) const {
    const std::int64_t b = sequence >= 0 ? sequence : at.batch;
    return x + 0.05f * float(b) - 0.01f * float(at.query % 5);
  }
};

// With every modifier, one thread: bitwise one decode_attention call per sequence over its own
// table row, for each storage type's path.
template <class S>
void check_same_bits_as_alone(bool bf16_queries) {
  const OwnedPool<S, std::int32_t> pool(16, kLengths, kQueries, false);
  Packed<std::int64_t> r(pool);
  const std::vector<float> slopes = {0.5f, 0.25f, 0.125f, 0.0625f, 0.03f, 0.02f, 0.01f, 0.005f};
  const std::vector<float> sinks = {0.5f, -1.0f, 2.0f, 0.0f, 1.0f, -2.0f, 0.25f, 3.0f};
  KernelOptions options;
  options.causal = true;
  options.window_left = 150;
  options.softcap = 20.0f;
  options.alibi_slopes = {slopes.data(), kHeads};
  options.sinks = {sinks.data(), kHeads};
  options.threads = 1;
  const Tilt batch_tilt;
  options.modifier = multihead::ModifierRef(batch_tilt);
  std::vector<bf16> qb(r.q.size()), ob(r.o.size());
  if (bf16_queries) {
    for (std::size_t i = 0; i < qb.size(); ++i) qb[i] = multihead::to_bf16(r.q[i]);
    multihead::batch_attention(TensorView<const bf16>(qb.data(), std::int64_t(qb.size()), 1,
                                                      r.total(), kHeads, kDim),
                               r.offsets(), pool.view, pool.as_block_table(),
                               TensorView<bf16>(ob.data(), std::int64_t(ob.size()), 1, r.total(),
                                                kHeads, kDim),
                               options, r.lse_out());
  } else {
    multihead::batch_attention(r.q_view(), r.offsets(), pool.view, pool.as_block_table(),
                               r.o_view(), options, r.lse_out());
  }
  for (std::size_t b = 0; b < pool.lengths.size(); ++b) {
    const std::int64_t n = pool.q_lens[b], first = r.cu[b];
    if (n == 0) continue;
    SCOPED_TRACE("sequence " + std::to_string(b));
    const Tilt alone_tilt{std::int64_t(b)};
    KernelOptions alone = options;
    alone.modifier = multihead::ModifierRef(alone_tilt);
    const std::int32_t length = std::int32_t(pool.lengths[b]);
    const auto seq = multihead::PagedSequences<std::int32_t>::from_block_table(
        {pool.table.data() + b * std::size_t(pool.row_stride()), pool.row_stride()},
        pool.row_stride(), {&length, 1});
    std::vector<float> o(std::size_t(n * kHeads * kDim)), lse(std::size_t(kHeads * n));
    std::vector<bf16> o16(o.size());
    const std::int64_t offset = first * kHeads * kDim, size = n * kHeads * kDim;
    if (bf16_queries) {
      multihead::decode_attention(TensorView<const bf16>(qb.data() + offset, size, 1, n, kHeads, kDim),
                                  pool.view, seq, TensorView<bf16>(o16.data(), size, 1, n, kHeads, kDim),
                                  alone, LseOutput{lse.data(), kHeads * n});
      for (std::int64_t i = 0; i < size; ++i)
        ASSERT_EQ(o16[std::size_t(i)].bits, ob[std::size_t(offset + i)].bits) << "element " << i;
    } else {
      multihead::decode_attention(TensorView<const float>(r.q.data() + offset, size, 1, n, kHeads, kDim),
                                  pool.view, seq, TensorView<float>(o.data(), size, 1, n, kHeads, kDim),
                                  alone, LseOutput{lse.data(), kHeads * n});
      EXPECT_EQ(o, r.sequence(std::int64_t(b)).o);
    }
    EXPECT_EQ(lse, r.sequence(std::int64_t(b)).lse);
  }
}

TEST(BatchAttention, SameBitsAsOneCallPerSequenceFloat) { check_same_bits_as_alone<float>(false); }
TEST(BatchAttention, SameBitsAsOneCallPerSequenceBf16Queries) { check_same_bits_as_alone<bf16>(true); }

// Contiguous K/V [batch, capacity, groups, dim] with int32 lengths (cache_seqlens), fp16 rows.
TEST(BatchAttention, ContiguousKvWithLengths) {
  const OwnedPool<fp16, std::int32_t> pool(16, kLengths, kQueries, false);
  const std::int64_t batch = std::int64_t(kLengths.size()), capacity = 1024, groups = 2;
  std::vector<fp16> k(std::size_t(batch * capacity * groups * kDim), multihead::to_fp16(9.0f));
  std::vector<fp16> v(k.size(), multihead::to_fp16(9.0f));  // beyond a length: never read
  std::vector<std::int32_t> lengths;
  for (std::int64_t b = 0; b < batch; ++b) {
    const Inputs& in = pool.inputs[std::size_t(b)];
    const std::int64_t n = kLengths[std::size_t(b)];
    for (std::int64_t i = 0; i < n * groups * kDim; ++i) {
      k[std::size_t(b * capacity * groups * kDim + i)] = multihead::to_fp16(in.k[std::size_t(i)]);
      v[std::size_t(b * capacity * groups * kDim + i)] = multihead::to_fp16(in.v[std::size_t(i)]);
    }
    lengths.push_back(std::int32_t(n));
  }
  Packed<std::int32_t> r(pool);
  KernelOptions options;
  options.causal = true;
  options.threads = 2;
  const std::int64_t size = std::int64_t(k.size());
  multihead::batch_attention(r.q_view(), r.offsets(),
                             TensorView<const fp16>(k.data(), size, batch, capacity, groups, kDim),
                             TensorView<const fp16>(v.data(), size, batch, capacity, groups, kDim),
                             Span<const std::int32_t>{lengths.data(), batch}, r.o_view(), options,
                             r.lse_out());
  expect_matches_oracle(pool, r, options);
}

// The caches: a PagedKvCache holding the pool's rows gives the pool's bits; a KvCache's slots
// at their own lengths meet the oracle; a PagedLatentCache gives its view's bits, and a
// LatentCache's slots the same.
TEST(BatchAttention, OverTheCaches) {
  const OwnedPool<bf16, std::int64_t> pool(16, kLengths, kQueries, false);
  KernelOptions options;
  options.causal = true;
  options.threads = 2;
  Packed<std::int64_t> a(pool), b(pool);
  multihead::batch_attention(a.q_view(), a.offsets(), pool.view, pool.as_block_table(),
                             a.o_view(), options, a.lse_out());
  PagedKvCache<bf16> cache(128, 16, 2, kDim);
  std::vector<std::int64_t> ids;
  for (std::size_t s = 0; s < kLengths.size(); ++s) {
    ids.push_back(cache.add_sequence());
    const std::int64_t n = kLengths[s];
    if (n == 0) continue;
    const Inputs& in = pool.inputs[s];
    cache.append(ids.back(), TensorView<const float>(in.k.data(), n * 2 * kDim, 1, n, 2, kDim),
                 TensorView<const float>(in.v.data(), n * 2 * kDim, 1, n, 2, kDim));
  }
  multihead::batch_attention(b.q_view(), b.offsets(), cache,
                             Span<const std::int64_t>{ids.data(), std::int64_t(ids.size())},
                             b.o_view(), options, b.lse_out());
  EXPECT_EQ(a.o, b.o);
  EXPECT_EQ(a.lse, b.lse);

  // A KvCache's slots, each at its own length, named in another order: slots 2, 0 and 1 of
  // 90, 150 and 40 tokens with 5, 1 and 70 new queries.
  const OwnedPool<bf16, std::int64_t> slots(16, {90, 150, 40}, {5, 1, 70}, false);
  const std::vector<std::int64_t> slot_ids = {2, 0, 1};
  KvCache<bf16> kv(3, 256, 2, kDim);
  for (std::size_t i = 0; i < slot_ids.size(); ++i) {
    const Inputs& in = slots.inputs[i];
    const std::int64_t n = slots.lengths[i];
    kv.append(slot_ids[i], TensorView<const float>(in.k.data(), n * 2 * kDim, 1, n, 2, kDim),
              TensorView<const float>(in.v.data(), n * 2 * kDim, 1, n, 2, kDim));
  }
  EXPECT_EQ(kv.length(2), 90);
  EXPECT_INVALID("different lengths (40 to 150)", (void)kv.length());
  Packed<std::int32_t> c(slots);
  multihead::batch_attention(c.q_view(), c.offsets(), kv,
                             Span<const std::int64_t>{slot_ids.data(), 3}, c.o_view(), options,
                             c.lse_out());
  expect_matches_oracle(slots, c, options);

  // MLA: a latent cache by id and through its view (v = k), 1 and 9 new queries.
  const std::int64_t latent = 64, rope = 16, heads = 4, width = latent + rope;
  PagedLatentCache<bf16> latents(16, 16, latent, rope);
  std::vector<std::int64_t> seqs;
  std::vector<std::int64_t> lens = {37, 90};
  for (std::int64_t n : lens) {
    seqs.push_back(latents.add_sequence());
    const std::vector<float> c_kv = naive::random_vector(n * latent, std::uint64_t(n));
    const std::vector<float> k_rope = naive::random_vector(n * rope, std::uint64_t(n + 1));
    latents.append(seqs.back(), TensorView<const float>(c_kv.data(), n * latent, 1, n, 1, latent),
                   TensorView<const float>(k_rope.data(), n * rope, 1, n, 1, rope));
  }
  const std::vector<std::int64_t> cu = {0, 1, 10};
  const std::vector<float> q = naive::random_vector(10 * heads * width, 3);
  std::vector<float> o1(std::size_t(10 * heads * latent)), o2(o1.size());
  const TensorView<const float> qv(q.data(), std::int64_t(q.size()), 1, 10, heads, width);
  KernelOptions mla;
  mla.scale = 0.1f;
  mla.causal = true;
  multihead::batch_attention(qv, Span<const std::int64_t>{cu.data(), 3}, latents,
                             Span<const std::int64_t>{seqs.data(), 2},
                             TensorView<float>(o1.data(), std::int64_t(o1.size()), 1, 10, heads, latent),
                             mla);
  std::vector<std::int64_t> table;
  for (std::int64_t s : seqs) {
    const auto& blocks = latents.block_table(s);
    table.insert(table.end(), blocks.begin(), blocks.end());
    table.resize(table.size() + 6 - blocks.size(), 0);
  }
  multihead::batch_attention(
      qv, Span<const std::int64_t>{cu.data(), 3}, latents.view(),
      multihead::PagedSequences<std::int64_t>::from_block_table({table.data(), 12}, 6,
                                                                {lens.data(), 2}),
      TensorView<float>(o2.data(), std::int64_t(o2.size()), 1, 10, heads, latent), mla);
  EXPECT_EQ(o1, o2);
  // The same latents in a LatentCache's slots 1 and 0: its view is a pool of one block per slot.
  multihead::LatentCache<bf16> slots_of_latents(2, 128, latent, rope);
  const std::vector<std::int64_t> latent_slots = {1, 0};
  for (std::size_t i = 0; i < 2; ++i) {
    const std::int64_t n = lens[i];
    const std::vector<float> c_kv = naive::random_vector(n * latent, std::uint64_t(n));
    const std::vector<float> k_rope = naive::random_vector(n * rope, std::uint64_t(n + 1));
    slots_of_latents.append(latent_slots[i],
                            TensorView<const float>(c_kv.data(), n * latent, 1, n, 1, latent),
                            TensorView<const float>(k_rope.data(), n * rope, 1, n, 1, rope));
  }
  std::vector<float> o3(o1.size());
  multihead::batch_attention(qv, Span<const std::int64_t>{cu.data(), 3}, slots_of_latents,
                             Span<const std::int64_t>{latent_slots.data(), 2},
                             TensorView<float>(o3.data(), std::int64_t(o3.size()), 1, 10, heads, latent),
                             mla);
  EXPECT_EQ(o1, o3);
}

// ---- Bad arguments: rejected before anything is written ----------------------------------------

TEST(BatchAttentionErrors, BadOffsetsShapesAndMemoryThrowAndWriteNothing) {
  OwnedPool<float, std::int32_t> pool(4, {5, 9, 3}, std::vector<int>{1, 2, 0}, false);
  Packed<std::int32_t> r(pool);
  std::fill(r.o.begin(), r.o.end(), 7.0f);
  std::fill(r.lse.begin(), r.lse.end(), 7.0f);
  const auto run = [&](Span<const std::int32_t> cu, const KernelOptions& options = {}) {
    multihead::batch_attention(r.q_view(), cu, pool.view, pool.as_block_table(), r.o_view(),
                               options, r.lse_out());
  };
  // Offsets for another count of sequences, not from 0, decreasing, not ending at the total.
  EXPECT_INVALID("cu_seqlens_q: 3 offsets for 3 sequences", run({r.cu.data(), 3}));
  std::vector<std::int32_t> cu = r.cu;
  cu[0] = 1;
  EXPECT_INVALID("cu_seqlens_q[0] (1) must be 0", run({cu.data(), 4}));
  cu = {0, 2, 1, 3};
  EXPECT_INVALID("cu_seqlens_q[2] (1) is below cu_seqlens_q[1] (2)", run({cu.data(), 4}));
  cu = {0, 1, 3, 4};
  EXPECT_INVALID("the last offset (4) must equal the packed tokens (3)", run({cu.data(), 4}));
  EXPECT_INVALID("cu_seqlens_q: data is null", run({nullptr, 4}));

  // Masks have no per-sequence meaning; a wrong lse; q of batch 2; o over the pool or offsets.
  const std::vector<float> mask(3 * 9, 0.0f);
  KernelOptions masked;
  masked.additive_mask = {mask.data(), 27, 1, 1, 3, 9};
  EXPECT_INVALID("not supported with packed sequences", run(r.offsets(), masked));
  EXPECT_INVALID("lse: buffer size (16) does not match [batch, heads, q_len] = [1, 8, 3]",
                 multihead::batch_attention(r.q_view(), r.offsets(), pool.view,
                                            pool.as_block_table(), r.o_view(), {},
                                            LseOutput{r.lse.data(), 16}));
  EXPECT_INVALID("packed q and o must have batch 1",
                 multihead::batch_attention(
                     TensorView<const float>(r.q.data(), 3 * kHeads * kDim, 3, 1, kHeads, kDim),
                     r.offsets(), pool.view, pool.as_block_table(),
                     TensorView<float>(r.o.data(), 3 * kHeads * kDim, 3, 1, kHeads, kDim)));
  EXPECT_INVALID("overlaps", multihead::batch_attention(
                                 r.q_view(), r.offsets(), pool.view, pool.as_block_table(),
                                 TensorView<float>(pool.k_pool.data(), 3 * kHeads * kDim, 1, 3,
                                                   kHeads, kDim)));
  // The offsets in the last bytes of o.
  std::vector<float> shared(3 * kHeads * kDim + 8);
  float* const offsets_at = shared.data() + 3 * kHeads * kDim - 2;
  std::memcpy(offsets_at, r.cu.data(), 4 * sizeof(std::int32_t));
  EXPECT_INVALID("o overlaps cu_seqlens_q", multihead::batch_attention(
                            r.q_view(),
                            Span<const std::int32_t>{reinterpret_cast<const std::int32_t*>(offsets_at), 4},
                            pool.view, pool.as_block_table(),
                            TensorView<float>(shared.data(), 3 * kHeads * kDim, 1, 3, kHeads, kDim)));
  // A bad table is the pool's error, as decode_attention gives it.
  auto bad = pool.table;
  bad[0] = 1000;
  EXPECT_INVALID("outside the pool's",
                 multihead::batch_attention(
                     r.q_view(), r.offsets(), pool.view,
                     multihead::PagedSequences<std::int32_t>::from_block_table(
                         {bad.data(), std::int64_t(bad.size())}, pool.row_stride(),
                         {pool.table_lengths.data(), 3}),
                     r.o_view(), {}, r.lse_out()));
  for (float x : r.o) ASSERT_EQ(x, 7.0f);
  for (float x : r.lse) ASSERT_EQ(x, 7.0f);

  // Contiguous lengths beyond the capacity, or for another batch.
  const std::vector<float> k(3 * 8 * 2 * kDim);
  const TensorView<const float> kv(k.data(), std::int64_t(k.size()), 3, 8, 2, kDim);
  const std::vector<std::int64_t> too_long = {5, 9, 3};
  EXPECT_INVALID("lengths[1] (9) must be in [0, 8] (k.tokens)",
                 multihead::batch_attention(r.q_view(), r.offsets(), kv, kv,
                                            Span<const std::int64_t>{too_long.data(), 3},
                                            r.o_view()));
  EXPECT_INVALID("lengths: 2 for a batch of 3",
                 multihead::batch_attention(r.q_view(), r.offsets(), kv, kv,
                                            Span<const std::int64_t>{too_long.data(), 2},
                                            r.o_view()));
  for (float x : r.o) ASSERT_EQ(x, 7.0f);

  // The arguments were good all along.
  run(r.offsets());
  for (float x : r.o) EXPECT_NE(x, 7.0f);
}

}  // namespace
