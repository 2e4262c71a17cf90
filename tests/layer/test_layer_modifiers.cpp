// The layer's score modifiers (LayerConfig: window, softcap, ALiBi, sinks): its forward against
// the naive module (naive_reference.hpp's projections around naive_modified_reference.hpp's
// attention) with the same modifiers, prefill + steps against the same, and the config's checks.
// The kernels' own modifier tests are attention/test_modifiers.cpp.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <utility>
#include <vector>

#include <multihead/multihead.hpp>

#include "support/module_testing.hpp"
#include "support/naive_modified_reference.hpp"
#include "support/naive_reference.hpp"

namespace {

using module_testing::make_config;
using multihead::RowMatrix;

// The layer with its config's modifiers, as the naive module would run it.
std::vector<double> naive_layer(const multihead::LayerConfig& c, const naive::ModuleWeights& w,
                                const std::vector<float>& x, std::int64_t batch, bool fp32) {
  const std::int64_t rows = std::int64_t(x.size()) / c.model_dim;
  naive::AttentionShape s;
  s.batch = batch;
  s.q_len = s.kv_len = rows / batch;
  s.heads = c.heads;
  s.kv_groups = c.kv_groups;
  s.head_dim = s.value_dim = c.head_dim;
  naive::Modifiers m;
  m.causal = c.causal;
  m.window_left = c.window_left;
  m.window_right = c.window_right;
  m.softcap = c.softcap;
  if (c.alibi)
    for (float slope : multihead::alibi_slopes(c.heads)) m.alibi_slopes.push_back(slope);
  m.sinks.assign(c.sinks.begin(), c.sinks.end());
  const auto run = [&](auto zero) {
    using Acc = decltype(zero);
    const auto q = naive::linear<Acc>(x, rows, c.model_dim, w.wq, c.heads * c.head_dim, w.bq);
    const auto k = naive::linear<Acc>(x, rows, c.model_dim, w.wk, c.kv_groups * c.head_dim, w.bk);
    const auto v = naive::linear<Acc>(x, rows, c.model_dim, w.wv, c.kv_groups * c.head_dim, w.bv);
    const auto a = naive::modified_attention<Acc>(s, q.data(), k.data(), v.data(), m);
    const auto y = naive::linear<Acc>(a.o, rows, c.heads * c.head_dim, w.wo, c.model_dim, w.bo);
    return std::vector<double>(y.begin(), y.end());
  };
  return fp32 ? run(0.0f) : run(0.0);
}

TEST(LayerModifiers, ForwardAndIncrementalMatchTheNaiveModule) {
  multihead::LayerConfig c = make_config(48, 4, 2, 16, false, true);
  c.window_left = 6;
  c.softcap = 2.0f;
  c.alibi = true;
  c.sinks = {0.5f, -1.0f, 0.0f, 2.0f};
  const std::int64_t batch = 2, tokens = 23;
  multihead::Attention<multihead::variant::GroupedQuery> layer(c);
  layer.init_random(11);
  const std::vector<float> x = naive::random_vector(batch * tokens * c.model_dim, 12, -2.0f, 2.0f);
  const RowMatrix x_all = Eigen::Map<const RowMatrix>(x.data(), batch * tokens, c.model_dim);
  const naive::ModuleWeights w = module_testing::weights_of(layer);
  const std::vector<double> exact = naive_layer(c, w, x, batch, false),
                            fp32 = naive_layer(c, w, x, batch, true);
  const RowMatrix forward = layer.forward(x_all, multihead::ForwardOptions{batch});
  const std::vector<float> got(forward.data(), forward.data() + forward.size());
  EXPECT_TRUE(naive::within_standard("forward", got, exact, fp32));

  // Prefill of 15 tokens, then 8 steps: the window slides over the cache.
  multihead::KvCache<float> cache(batch, tokens, c.kv_groups, c.head_dim);
  RowMatrix incremental(batch * tokens, c.model_dim), y;
  for (const auto& [t0, n] : std::vector<std::pair<std::int64_t, std::int64_t>>{
           {0, 15}, {15, 1}, {16, 1}, {17, 1}, {18, 1}, {19, 1}, {20, 1}, {21, 1}, {22, 1}}) {
    RowMatrix part(batch * n, c.model_dim);
    for (std::int64_t b = 0; b < batch; ++b) part.middleRows(b * n, n) = x_all.middleRows(b * tokens + t0, n);
    layer.forward(part, cache, y, multihead::ForwardOptions{batch});
    for (std::int64_t b = 0; b < batch; ++b)
      incremental.middleRows(b * tokens + t0, n) = y.middleRows(b * n, n);
  }
  const std::vector<float> steps(incremental.data(), incremental.data() + incremental.size());
  EXPECT_TRUE(naive::within_standard("prefill + steps", steps, exact, fp32));
}

TEST(LayerModifiers, BadConfigsThrow) {
  multihead::LayerConfig c = make_config(16, 4, 2, 4, false, true);
  c.window_left = -2;
  EXPECT_THROW(multihead::Attention<multihead::variant::GroupedQuery>{c}, std::invalid_argument);
  c.window_left = -1;
  c.softcap = -1.0f;
  EXPECT_THROW(multihead::Attention<multihead::variant::GroupedQuery>{c}, std::invalid_argument);
  c.softcap = 0.0f;
  c.sinks = {1.0f, 2.0f};  // 4 heads
  EXPECT_THROW(multihead::Attention<multihead::variant::GroupedQuery>{c}, std::invalid_argument);
  c.sinks = {1.0f, 2.0f, std::nanf(""), 0.0f};
  EXPECT_THROW(multihead::Attention<multihead::variant::GroupedQuery>{c}, std::invalid_argument);
}

}  // namespace
