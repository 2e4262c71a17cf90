// A layer stepping a continuous batch (Attention::forward over sequences): some of a cache's
// sequences, each with its own number of new tokens at its own positions. Every sequence's
// outputs equal the layer's forward over that sequence's whole history (causal, with its rope),
// over a KvCache's slots and a PagedKvCache alike, and for MLA over a LatentCache's slots and a
// PagedLatentCache; bad steps leave the cache as it was.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <type_traits>
#include <vector>

#include <multihead/multihead.hpp>

#include "support/module_testing.hpp"
#include "support/naive_reference.hpp"
#include "support/testing.hpp"

namespace {

using multihead::ForwardOptions;
using multihead::KvCache;
using multihead::PagedKvCache;
using multihead::RowMatrix;
using multihead::Span;

constexpr std::int64_t kModel = 48, kSequences = 3;

multihead::GQA make_layer() {
  multihead::GQA layer(module_testing::with_rope(
      module_testing::make_config(kModel, 4, 2, 16, true, true), multihead::RopeLayout::rotate_half));
  layer.init_random(11);
  return layer;
}

// MLA with a RoPE key (DeepSeek's shape, small), over its latent caches.
multihead::MLA make_latent_layer() {
  multihead::LatentConfig c;
  c.model_dim = kModel;
  c.heads = 4;
  c.latent_dim = 32;
  c.nope_dim = 16;
  c.rope_dim = 8;
  c.value_dim = 12;
  c.causal = true;
  multihead::MLA layer(c);
  layer.init_random(12);
  return layer;
}

// Each sequence's whole history of tokens (x rows), and what the steps have fed so far.
struct Histories {
  std::vector<RowMatrix> x;
  std::vector<std::int64_t> fed = std::vector<std::int64_t>(kSequences, 0);
  Histories() {
    for (std::int64_t s = 0; s < kSequences; ++s) {
      const std::vector<float> v = naive::random_vector(64 * kModel, std::uint64_t(s + 40));
      x.push_back(Eigen::Map<const RowMatrix>(v.data(), 64, kModel));
    }
  }
};

// One step: sequence ids[i] gets counts[i] new tokens. Returns the packed x and fills cu.
RowMatrix step_input(Histories& h, const std::vector<std::int64_t>& ids,
                     const std::vector<std::int64_t>& counts, std::vector<std::int64_t>& cu) {
  cu = {0};
  for (std::int64_t n : counts) cu.push_back(cu.back() + n);
  RowMatrix x(cu.back(), kModel);
  for (std::size_t i = 0; i < ids.size(); ++i) {
    const auto s = std::size_t(ids[i]);
    x.middleRows(cu[i], counts[i]) = h.x[s].middleRows(h.fed[s], counts[i]);
    h.fed[s] += counts[i];
  }
  return x;
}

// Steps the cache through a server's schedule and checks every output row against the layer's
// forward over the sequence's history up to that token.
template <class Layer, class Cache>
void check_schedule(Layer layer, Cache& cache, const std::vector<std::int64_t>& slot_of) {
  Histories h;
  // (sequence, new tokens) per step: prefills, a chunk beside decode steps, a sequence idle.
  const std::vector<std::vector<std::pair<std::int64_t, std::int64_t>>> steps = {
      {{0, 20}, {2, 7}},
      {{0, 1}, {1, 13}, {2, 0}},
      {{2, 1}, {1, 1}, {0, 1}},
      {{1, 9}, {0, 1}},
  };
  typename std::conditional_t<std::is_same_v<Layer, multihead::MLA>,
                              multihead::LatentForwardOptions, ForwardOptions>
      options;
  options.threads = 2;
  for (const auto& step : steps) {
    std::vector<std::int64_t> ids, counts, cu;
    for (const auto& [s, n] : step) {
      ids.push_back(slot_of[std::size_t(s)]);
      counts.push_back(n);
    }
    std::vector<std::int64_t> seqs;
    for (const auto& [s, n] : step) seqs.push_back(s);
    const RowMatrix x = step_input(h, seqs, counts, cu);
    RowMatrix y;
    layer.forward(x, Span<const std::int64_t>{cu.data(), std::int64_t(cu.size())}, cache,
                  Span<const std::int64_t>{ids.data(), std::int64_t(ids.size())}, y, options);
    for (std::size_t i = 0; i < seqs.size(); ++i) {
      const auto s = std::size_t(seqs[i]);
      if (counts[i] == 0) continue;
      SCOPED_TRACE("sequence " + std::to_string(s) + " up to token " + std::to_string(h.fed[s]));
      const RowMatrix whole = layer.forward(RowMatrix(h.x[s].topRows(h.fed[s])));
      const RowMatrix expected = whole.bottomRows(counts[i]);
      const RowMatrix got = y.middleRows(cu[i], counts[i]);
      EXPECT_LT((got - expected).cwiseAbs().maxCoeff(), 2e-5f);
      EXPECT_EQ(cache.length(ids[i]), h.fed[s]);
    }
  }
}

TEST(LayerBatch, KvCacheSlotsAtTheirOwnPositions) {
  KvCache<float> cache(kSequences, 64, 2, 16);
  check_schedule(make_layer(), cache, {2, 0, 1});  // sequence s lives in slot slot_of[s]
  EXPECT_EQ(cache.length(0), 23);                   // sequence 1: 13 + 1 + 9
}

TEST(LayerBatch, PagedCacheSequences) {
  PagedKvCache<float> cache(16, 4, 2, 16);
  std::vector<std::int64_t> ids;
  for (std::int64_t s = 0; s < kSequences; ++s) ids.push_back(cache.add_sequence());
  check_schedule(make_layer(), cache, ids);
}

TEST(LayerBatch, LatentCacheSlotsAndPagedLatentSequences) {
  multihead::LatentCache<float> slots(kSequences, 64, 32, 8);
  check_schedule(make_latent_layer(), slots, {1, 2, 0});
  multihead::PagedLatentCache<float> paged(16, 4, 32, 8);
  std::vector<std::int64_t> ids;
  for (std::int64_t s = 0; s < kSequences; ++s) ids.push_back(paged.add_sequence());
  check_schedule(make_latent_layer(), paged, ids);
  multihead::LatentForwardOptions naive;
  naive.path = multihead::LatentPath::naive;
  const RowMatrix x = RowMatrix::Random(2, kModel);
  const std::vector<std::int64_t> cu = {0, 2}, one = {ids[0]};
  RowMatrix y;
  multihead::MLA layer = make_latent_layer();
  EXPECT_INVALID("path: a step over sequences runs the absorbed path",
                 layer.forward(x, Span<const std::int64_t>{cu.data(), 2}, paged,
                               Span<const std::int64_t>{one.data(), 1}, y, naive));
}

TEST(LayerBatch, BadStepsLeaveTheCacheAsItWas) {
  multihead::GQA layer = make_layer();
  KvCache<float> cache(2, 8, 2, 16);
  PagedKvCache<float> paged(3, 4, 2, 16);
  const std::int64_t a = paged.add_sequence(), b = paged.add_sequence();
  const RowMatrix x = RowMatrix::Random(10, kModel);
  RowMatrix y;
  const auto run = [&](auto& c, std::vector<std::int64_t> cu, std::vector<std::int64_t> ids,
                       const ForwardOptions& options = {}) {
    layer.forward(x.topRows(cu.back()), Span<const std::int64_t>{cu.data(), std::int64_t(cu.size())},
                  c, Span<const std::int64_t>{ids.data(), std::int64_t(ids.size())}, y, options);
  };
  EXPECT_INVALID("id 1 is named twice (at 0 and 1)", run(cache, {0, 1, 2}, {1, 1}));
  EXPECT_INVALID("sequence 2 is not in the cache's [0, 2)", run(cache, {0, 1, 2}, {0, 2}));
  EXPECT_INVALID("append of 9 tokens to a cache holding 0 of capacity 8",
                 run(cache, {0, 1, 10}, {0, 1}));
  EXPECT_INVALID("cu_seqlens: 2 offsets for 2 sequences", run(cache, {0, 2}, {0, 1}));
  ForwardOptions batch2;
  batch2.batch = 2;
  EXPECT_INVALID("batch (2) must be 1", run(cache, {0, 1, 2}, {0, 1}, batch2));
  std::vector<float> mask(4 * 2, 0.0f);
  ForwardOptions masked;
  masked.additive_mask = multihead::MaskView<float>(mask.data(), 8, 1, 1, 2, 4);
  EXPECT_INVALID("not supported with packed sequences", run(cache, {0, 1, 2}, {0, 1}, masked));
  EXPECT_EQ(cache.length(0), 0);
  EXPECT_EQ(cache.length(1), 0);
  // 3 blocks of 4 tokens: 5 + 5 tokens need 4.
  EXPECT_INVALID("the step needs 4 more blocks but only 3 of 3 are free",
                 run(paged, {0, 5, 10}, {a, b}));
  EXPECT_EQ(paged.length(a), 0);
  EXPECT_EQ(paged.free_blocks(), 3);
  // The same steps, fitted, run.
  run(cache, {0, 1, 9}, {0, 1});
  EXPECT_EQ(cache.length(1), 8);
  run(paged, {0, 5, 7}, {a, b});
  EXPECT_EQ(paged.free_blocks(), 0);
}

}  // namespace
