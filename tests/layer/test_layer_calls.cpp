// Layer calls as engines make them (ForwardOptions' per-call fields): causal or not per call,
// masks per call, the log-sum-exp on request, and cross-attention over a second input or over
// K/V cached once. Against the naive module (projections and attention in double and in fp32,
// under the accuracy standard), and every bad call rejected before the cache is touched.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <vector>

#include <multihead/multihead.hpp>

#include "support/module_testing.hpp"
#include "support/naive_reference.hpp"
#include "support/testing.hpp"

namespace {

using module_testing::make_config;
using module_testing::to_vector;
using module_testing::weights_of;
using multihead::ForwardOptions;
using multihead::KvCache;
using multihead::LseOutput;
using multihead::RowMatrix;

// The naive module's y and lse for queries from x over keys and values from `context` (x itself
// for self-attention), `causal` as given.
struct Naive {
  std::vector<double> y, lse;
};
template <class Acc>
Naive naive_module(const multihead::LayerConfig& c, const naive::ModuleWeights& w,
                   const std::vector<float>& x, const std::vector<float>& context,
                   std::int64_t batch, bool causal) {
  const std::int64_t rows = std::int64_t(x.size()) / c.model_dim;
  const std::int64_t context_rows = std::int64_t(context.size()) / c.model_dim;
  naive::AttentionShape s;
  s.batch = batch;
  s.q_len = rows / batch;
  s.kv_len = context_rows / batch;
  s.heads = c.heads;
  s.kv_groups = c.kv_groups;
  s.head_dim = s.value_dim = c.head_dim;
  const auto q = naive::linear<Acc>(x, rows, c.model_dim, w.wq, c.heads * c.head_dim, w.bq);
  const auto k =
      naive::linear<Acc>(context, context_rows, c.model_dim, w.wk, c.kv_groups * c.head_dim, w.bk);
  const auto v =
      naive::linear<Acc>(context, context_rows, c.model_dim, w.wv, c.kv_groups * c.head_dim, w.bv);
  const auto a = naive::attention<Acc>(s, q.data(), k.data(), v.data(), causal, std::nullopt);
  const auto y = naive::linear<Acc>(a.o, rows, c.heads * c.head_dim, w.wo, c.model_dim, w.bo);
  return {std::vector<double>(y.begin(), y.end()), std::vector<double>(a.lse.begin(), a.lse.end())};
}

void expect_module(const RowMatrix& y, const std::vector<float>& lse, const multihead::LayerConfig& c,
                   const naive::ModuleWeights& w, const std::vector<float>& x,
                   const std::vector<float>& context, std::int64_t batch, bool causal) {
  const Naive exact = naive_module<double>(c, w, x, context, batch, causal);
  const Naive fp32 = naive_module<float>(c, w, x, context, batch, causal);
  EXPECT_TRUE(naive::within_standard("y", to_vector(y), exact.y, fp32.y));
  EXPECT_TRUE(naive::within_standard("lse", lse, exact.lse, fp32.lse));
}

struct Scene {
  multihead::LayerConfig config = make_config(64, 4, 2, 16, true, true);
  std::int64_t batch = 2, tokens = 19, context_tokens = 33;
  multihead::GQA layer{config};
  std::vector<float> x = naive::random_vector(std::size_t(batch * tokens * 64), 11);
  std::vector<float> context = naive::random_vector(std::size_t(batch * context_tokens * 64), 12);
  Scene() { layer.init_random(3); }
  RowMatrix rows(const std::vector<float>& v) const {
    return Eigen::Map<const RowMatrix>(v.data(), std::int64_t(v.size()) / 64, 64);
  }
  std::vector<float> lse_buffer(std::int64_t q_len) const {
    return std::vector<float>(std::size_t(batch * 4 * q_len), std::nanf(""));
  }
};

TEST(LayerCalls, CausalPerCallAndTheLse) {
  Scene s;
  const naive::ModuleWeights w = weights_of(s.layer);
  for (bool causal : {true, false}) {
    SCOPED_TRACE(causal ? "causal" : "not causal");
    std::vector<float> lse = s.lse_buffer(s.tokens);
    ForwardOptions options;
    options.batch = s.batch;
    options.causal = causal;  // the config says causal: the call decides
    options.lse = {lse.data(), std::int64_t(lse.size())};
    RowMatrix y;
    s.layer.forward(s.rows(s.x), y, options);
    expect_module(y, lse, s.config, w, s.x, s.x, s.batch, causal);
  }
}

TEST(LayerCalls, ABooleanMaskPerCall) {
  Scene s;
  // Keep each query's first keys up to a per-row limit: a padding mask of ragged prompts.
  std::vector<char> keep(std::size_t(s.batch * s.tokens * s.tokens), 0);
  std::vector<float> additive(keep.size(), 0.0f);
  for (std::int64_t b = 0; b < s.batch; ++b)
    for (std::int64_t i = 0; i < s.tokens; ++i)
      for (std::int64_t j = 0; j < s.tokens; ++j) {
        const bool visible = j <= i && j < s.tokens - 4 * b;
        keep[std::size_t((b * s.tokens + i) * s.tokens + j)] = visible ? 1 : 0;
        additive[std::size_t((b * s.tokens + i) * s.tokens + j)] =
            visible ? 0.0f : -std::numeric_limits<float>::infinity();
      }
  ForwardOptions options;
  options.batch = s.batch;
  options.causal = false;
  std::unique_ptr<bool[]> keep_array(new bool[keep.size()]);
  for (std::size_t i = 0; i < keep.size(); ++i) keep_array[i] = keep[i] != 0;
  options.boolean_mask = multihead::MaskView<bool>(keep_array.get(), std::int64_t(keep.size()),
                                                  s.batch, 1, s.tokens, s.tokens);
  RowMatrix by_keep, by_additive;
  s.layer.forward(s.rows(s.x), by_keep, options);
  options.boolean_mask = {};
  options.additive_mask = multihead::MaskView<float>(
      additive.data(), std::int64_t(additive.size()), s.batch, 1, s.tokens, s.tokens);
  s.layer.forward(s.rows(s.x), by_additive, options);
  EXPECT_TRUE(by_keep.isApprox(by_additive, 1e-6f));
  // Rows that see every key up to themselves: the causal forward's.
  const RowMatrix causal = s.layer.forward(s.rows(s.x), ForwardOptions{s.batch});
  for (std::int64_t i = 0; i < s.tokens; ++i)  // sequence 0 hides nothing beyond causal
    EXPECT_TRUE(by_keep.row(i).isApprox(causal.row(i), 1e-5f)) << "row " << i;
  EXPECT_FALSE(by_keep.row(2 * s.tokens - 1).isApprox(causal.row(2 * s.tokens - 1), 1e-3f));
}

TEST(LayerCalls, CrossAttentionOverAContextAndOverItsCache) {
  Scene s;
  const naive::ModuleWeights w = weights_of(s.layer);
  std::vector<float> lse = s.lse_buffer(s.tokens);
  ForwardOptions options;
  options.batch = s.batch;
  options.lse = {lse.data(), std::int64_t(lse.size())};
  RowMatrix y;
  s.layer.forward_cross(s.rows(s.x), s.rows(s.context), y, options);
  expect_module(y, lse, s.config, w, s.x, s.context, s.batch, false);

  // The context's K/V cached once; two steps of queries over it read it, never extend it.
  KvCache<float> cache(s.batch, 64, 2, 16);
  s.layer.cache_context(s.rows(s.context), cache);
  EXPECT_EQ(cache.length(), s.context_tokens);
  std::vector<float> lse2 = s.lse_buffer(s.tokens);
  options.batch = 1;  // the cache's
  options.lse = {lse2.data(), std::int64_t(lse2.size())};
  RowMatrix y2;
  s.layer.forward_cross(s.rows(s.x), cache, y2, options);
  EXPECT_EQ(cache.length(), s.context_tokens);
  expect_module(y2, lse2, s.config, w, s.x, s.context, s.batch, false);
}

TEST(LayerCalls, BadCallsLeaveTheCacheAsItWas) {
  Scene s;
  KvCache<float> cache(s.batch, 64, 2, 16);
  const RowMatrix x = s.rows(s.x);
  RowMatrix y;
  std::vector<float> lse(5);
  ForwardOptions options;
  options.lse = {lse.data(), 5};
  EXPECT_INVALID("lse: buffer size (5)", s.layer.forward(x, cache, y, options));
  EXPECT_EQ(cache.length(), 0);
  std::vector<float> additive(std::size_t(s.tokens * 7));
  options = {};
  options.additive_mask =
      multihead::MaskView<float>(additive.data(), std::int64_t(additive.size()), 1, 1, s.tokens, 7);
  EXPECT_INVALID("additive_mask", s.layer.forward(x, cache, y, options));
  EXPECT_EQ(cache.length(), 0);
  EXPECT_INVALID("additive_mask", s.layer.forward_cross(x, s.rows(s.context), y, options));
  KvCache<float> other(s.batch, 64, 2, 8);
  EXPECT_INVALID("cache head_dim (8)", s.layer.cache_context(s.rows(s.context), other));
  EXPECT_EQ(other.length(), 0);
}

// MLA's layer takes the same per-call fields; its naive and absorbed paths give the same lse
// (the absorbed scores are the naive ones), prefill and step alike.
TEST(LayerCalls, LatentLayerCausalPerCallAndTheLseOnEveryPath) {
  multihead::LatentConfig c;
  c.model_dim = 48;
  c.heads = 4;
  c.latent_dim = 24;
  c.nope_dim = 16;
  c.rope_dim = 8;
  c.value_dim = 12;
  c.causal = true;
  multihead::MLA layer(c);
  layer.init_random(4);
  multihead::LatentConfig open = c;
  open.causal = false;
  multihead::MLA open_layer(open);
  open_layer.init_random(4);
  const std::int64_t tokens = 21;
  const RowMatrix x = Eigen::Map<const RowMatrix>(
      naive::random_vector(std::size_t(tokens * 48), 9).data(), tokens, 48);

  // causal = false for this call: what a non-causal config gives.
  multihead::LatentForwardOptions options;
  options.causal = false;
  EXPECT_EQ(layer.forward(x, options), open_layer.forward(x));

  std::vector<std::vector<float>> lses;
  for (const auto path : {multihead::LatentPath::naive, multihead::LatentPath::absorbed}) {
    multihead::LatentCache<float> cache(1, 64, c.latent_dim, c.rope_dim);
    std::vector<float> prefill(std::size_t(4 * (tokens - 1)), std::nanf(""));
    std::vector<float> step(4, std::nanf(""));
    multihead::LatentForwardOptions o;
    o.path = path;
    o.lse = {prefill.data(), std::int64_t(prefill.size())};
    RowMatrix y;
    layer.forward(x.topRows(tokens - 1), cache, y, o);
    o.lse = {step.data(), 4};
    layer.forward(x.bottomRows(1), cache, y, o);
    prefill.insert(prefill.end(), step.begin(), step.end());
    for (float v : prefill) EXPECT_TRUE(std::isfinite(v));
    lses.push_back(prefill);
  }
  for (std::size_t i = 0; i < lses[0].size(); ++i)
    EXPECT_NEAR(lses[0][i], lses[1][i], 1e-4f * (1.0f + std::abs(lses[0][i]))) << "lse " << i;

  // A bad lse leaves the cache as it was.
  multihead::LatentCache<float> cache(1, 64, c.latent_dim, c.rope_dim);
  std::vector<float> lse(3);
  multihead::LatentForwardOptions bad;
  bad.lse = {lse.data(), 3};
  RowMatrix y;
  EXPECT_INVALID("lse: buffer size (3)", layer.forward(x, cache, y, bad));
  EXPECT_EQ(cache.length(), 0);
}

}  // namespace
