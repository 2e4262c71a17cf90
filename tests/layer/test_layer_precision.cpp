// Layers with bf16 and fp16 weights and activations, and attention in bf16
// (layer/precision.hpp): half weights give the layer that the same values as floats give;
// half activations give the fp32 layer's output rounded once; Precision::bf16 meets the accuracy
// standard against the naive double module, the naive computation in the same precision
// rounding Q, K, V and the probabilities to bf16.
#include <gtest/gtest.h>

#include <cstdint>
#include <vector>

#include "support/module_testing.hpp"
#include "support/naive_low_precision.hpp"

namespace {

using multihead::bf16;
using multihead::fp16;
using multihead::LatentWeight;
using multihead::Projection;
using multihead::RowMatrix;
using multihead::Span;

template <class T>
std::vector<T> narrowed(const std::vector<float>& x) {
  std::vector<T> out;
  for (float f : x) out.push_back(multihead::from_float<T>(f));
  return out;
}
template <class T>
std::vector<float> widened(const std::vector<T>& x) {
  std::vector<float> out;
  for (T h : x) out.push_back(multihead::to_float(h));
  return out;
}

constexpr Projection kProjections[] = {Projection::q, Projection::k, Projection::v, Projection::o};

template <class T>
void check_half_weights() {
  const multihead::LayerConfig config = module_testing::make_config(64, 4, 2, 16, true, true);
  multihead::GQA from_half(config), from_float(config);
  std::uint64_t seed = 1;
  for (Projection p : kProjections) {
    const auto n = from_half.out_features(p) * from_half.in_features(p);
    const std::vector<T> w = narrowed<T>(naive::random_vector(n, seed++));
    const std::vector<T> b = narrowed<T>(naive::random_vector(from_half.out_features(p), seed++));
    from_half.set_weight(p, w.data(), n);
    from_half.set_bias(p, b.data(), std::int64_t(b.size()));
    const std::vector<float> wf = widened(w), bf = widened(b);
    from_float.set_weight(p, wf.data(), n);
    from_float.set_bias(p, bf.data(), std::int64_t(bf.size()));
  }
  const RowMatrix x = RowMatrix::Random(9, 64);
  EXPECT_EQ(from_half.forward(x), from_float.forward(x));
  const std::vector<T> short_buffer(3);
  EXPECT_THROW(from_half.set_weight(Projection::q, short_buffer.data(), 3), std::invalid_argument);
}

TEST(LayerPrecision, Bf16WeightsAreTheirValues) { check_half_weights<bf16>(); }
TEST(LayerPrecision, Fp16WeightsAreTheirValues) { check_half_weights<fp16>(); }

// A small MLA config: 4 heads, latent 32, heads 16 + rope_dim for q·k and 16 for v.
multihead::LatentConfig small_latent(std::int64_t model_dim, std::int64_t query_latent,
                                     std::int64_t rope_dim) {
  multihead::LatentConfig c;
  c.model_dim = model_dim;
  c.heads = 4;
  c.latent_dim = 32;
  if (query_latent > 0) c.query_latent_dim = query_latent;
  c.nope_dim = 16;
  c.rope_dim = rope_dim;
  c.value_dim = 16;
  return c;
}

TEST(LayerPrecision, LatentBf16WeightsAreTheirValues) {
  const multihead::LatentConfig c = small_latent(48, 24, 8);
  multihead::MLA from_half(c), from_float(c);
  from_half.init_random(1);  // RMSNorm weights at one
  from_float.init_random(1);
  std::uint64_t seed = 5;
  for (int i = 0; i < multihead::kLatentWeights; ++i) {
    const auto w = static_cast<LatentWeight>(i);
    if (!from_half.has_weight(w)) continue;
    const auto shape = from_half.weight_shape(w);
    const std::vector<bf16> values = narrowed<bf16>(naive::random_vector(shape[0] * shape[1], seed++));
    from_half.set_weight(w, values.data(), std::int64_t(values.size()));
    const std::vector<float> floats = widened(values);
    from_float.set_weight(w, floats.data(), std::int64_t(floats.size()));
  }
  const RowMatrix x = RowMatrix::Random(7, 48);
  EXPECT_EQ(from_half.forward(x), from_float.forward(x));
}

// bf16 / fp16 rows in and out: the fp32 layer's output on the widened rows, rounded once.
template <class T>
void check_half_activations() {
  const multihead::LayerConfig config = module_testing::make_config(64, 4, 2, 16, false, true);
  multihead::GQA layer(config);
  layer.init_random(3);
  const std::int64_t rows = 2 * 5;
  const std::vector<T> x = narrowed<T>(naive::random_vector(rows * 64, 9));
  const std::vector<float> xf = widened(x);
  multihead::ForwardOptions options;
  options.batch = 2;
  const RowMatrix expected =
      layer.forward(Eigen::Map<const RowMatrix>(xf.data(), rows, 64), options);
  std::vector<T> y(x.size());
  layer.forward(Span<const T>{x.data(), std::int64_t(x.size())}, Span<T>{y.data(), std::int64_t(y.size())},
                options);
  for (std::int64_t i = 0; i < std::int64_t(y.size()); ++i)
    ASSERT_EQ(y[std::size_t(i)].bits, multihead::from_float<T>(expected.data()[i]).bits) << i;

  // Through a cache: a prefill of 4 tokens per sequence, then one step.
  multihead::KvCache<bf16> cache(2, 5, 2, 16);
  multihead::KvCache<bf16> reference_cache(2, 5, 2, 16);
  const Eigen::Map<const RowMatrix> all(xf.data(), rows, 64);
  RowMatrix prefill(8, 64), step(2, 64);
  for (int b = 0; b < 2; ++b) {
    prefill.middleRows(4 * b, 4) = all.middleRows(5 * b, 4);
    step.row(b) = all.row(5 * b + 4);
  }
  RowMatrix y_reference;
  layer.forward(prefill, reference_cache, y_reference);
  layer.forward(step, reference_cache, y_reference);
  const std::vector<T> prefill_half = narrowed<T>(std::vector<float>(prefill.data(), prefill.data() + prefill.size()));
  const std::vector<T> step_half = narrowed<T>(std::vector<float>(step.data(), step.data() + step.size()));
  std::vector<T> y_prefill(prefill_half.size()), y_step(step_half.size());
  layer.forward(Span<const T>{prefill_half.data(), 8 * 64}, cache, Span<T>{y_prefill.data(), 8 * 64});
  layer.forward(Span<const T>{step_half.data(), 2 * 64}, cache, Span<T>{y_step.data(), 2 * 64});
  for (std::int64_t i = 0; i < 2 * 64; ++i)
    ASSERT_EQ(y_step[std::size_t(i)].bits, multihead::from_float<T>(y_reference.data()[i]).bits) << i;

  // Bad sizes, before anything is written.
  std::vector<T> odd(65), out(65);
  EXPECT_THROW(layer.forward(Span<const T>{odd.data(), 65}, Span<T>{out.data(), 65}),
               std::invalid_argument);
  EXPECT_THROW(layer.forward(Span<const T>{x.data(), 64}, Span<T>{out.data(), 63}),
               std::invalid_argument);
}

TEST(LayerPrecision, Bf16Activations) { check_half_activations<bf16>(); }
TEST(LayerPrecision, Fp16Activations) { check_half_activations<fp16>(); }

// Precision::bf16 against the naive module: projections in fp32, Q, K and V rounded to bf16,
// attention with the probabilities rounded, the output projection in fp32.
TEST(LayerPrecision, Bf16AttentionMeetsTheStandard) {
  for (const auto& dims : {std::vector<std::int64_t>{128, 8, 2, 64}, {96, 6, 6, 16}}) {
    const multihead::LayerConfig config =
        module_testing::make_config(dims[0], dims[1], dims[2], dims[3], true, true);
    multihead::GQA layer(config);
    layer.init_random(17);
    const std::int64_t batch = 2, tokens = 70, rows = batch * tokens;
    const std::vector<float> x = naive::random_vector(rows * config.model_dim, 21);
    multihead::ForwardOptions options;
    options.batch = batch;
    options.precision = multihead::Precision::bf16;
    const RowMatrix y = layer.forward(Eigen::Map<const RowMatrix>(x.data(), rows, config.model_dim),
                                      options);

    const naive::ModuleShape m = module_testing::shape_of(config);
    const naive::ModuleWeights w = module_testing::weights_of(layer);
    const std::vector<double> exact = naive::module_forward<double>(m, w, x, batch);
    const auto rounded = [](std::vector<float> v) { return widened(narrowed<bf16>(v)); };
    const std::vector<float> q = rounded(naive::linear<float>(x, rows, m.model_dim, w.wq, m.heads * m.head_dim, w.bq));
    const std::vector<float> k = rounded(naive::linear<float>(x, rows, m.model_dim, w.wk, m.kv_groups * m.head_dim, w.bk));
    const std::vector<float> v = rounded(naive::linear<float>(x, rows, m.model_dim, w.wv, m.kv_groups * m.value_dim, w.bv));
    naive::AttentionShape s;
    s.batch = batch;
    s.q_len = s.kv_len = tokens;
    s.heads = m.heads;
    s.kv_groups = m.kv_groups;
    s.head_dim = m.head_dim;
    s.value_dim = m.value_dim;
    const naive::Result<double> a =
        naive::naive_attention<float, float>(s, q, k, v, naive::Visibility{true, -1}, true);
    const std::vector<float> heads(a.o.begin(), a.o.end());
    const std::vector<float> naive_y =
        naive::linear<float>(heads, rows, m.heads * m.value_dim, w.wo, m.model_dim, w.bo);
    EXPECT_TRUE(naive::within_standard("y", module_testing::to_vector(y), exact, naive_y));
  }
}

// MLA in bf16 against itself in fp32, on both paths: within bf16's precision of it.
TEST(LayerPrecision, LatentBf16AttentionIsCloseToFp32) {
  multihead::MLA layer(small_latent(64, 0, 16));
  layer.init_random(2);
  const RowMatrix x = RowMatrix::Random(40, 64);
  for (multihead::LatentPath path : {multihead::LatentPath::naive, multihead::LatentPath::absorbed}) {
    multihead::LatentForwardOptions options;
    options.path = path;
    const RowMatrix fp32 = layer.forward(x, options);
    options.precision = multihead::Precision::bf16;
    const RowMatrix low = layer.forward(x, options);
    const double error = (low - fp32).norm() / fp32.norm();
    EXPECT_GT(error, 0.0) << "bf16 attention should round something";
    EXPECT_LT(error, 1e-2);
  }
}

}  // namespace
