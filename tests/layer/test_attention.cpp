// Attention<Variant> against the naive module forward of tests/naive_reference.hpp (double
// oracle, fp32 naive loop for the tolerance), with and without RoPE, plus its parameters and the
// MHA/GQA/MQA equivalences.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include <multihead/multihead.hpp>

#include "support/module_testing.hpp"
#include "support/naive_reference.hpp"

namespace {

using namespace module_testing;

using multihead::ForwardOptions;
using multihead::KernelChoice;
using multihead::LayerConfig;
using multihead::Projection;
using multihead::RowMatrix;

const Projection kProjections[] = {Projection::q, Projection::k, Projection::v, Projection::o};

std::string describe(const LayerConfig& c) {
  return "model_dim " + std::to_string(c.model_dim) + ", heads " + std::to_string(c.heads) +
         ", kv_groups " + std::to_string(c.kv_groups) + ", head_dim " +
         std::to_string(c.head_dim) + ", value_dim " + std::to_string(c.v_dim()) +
         (c.bias ? ", bias" : "") + (c.causal ? ", causal" : "") +
         (c.scale ? ", scale " + std::to_string(*c.scale) : "") +
         (c.rope ? std::string(c.rope->layout == multihead::RopeLayout::interleaved
                                   ? ", rope interleaved"
                                   : ", rope rotate_half") +
                       " " + std::to_string(c.rope->rotary_dims(c.head_dim)) + " dims, base " +
                       std::to_string(c.rope->base)
                 : "");
}


RowMatrix to_matrix(const std::vector<float>& values, std::int64_t rows, std::int64_t cols) {
  return Eigen::Map<const RowMatrix>(values.data(), rows, cols);
}



// The layer's forward on x [batch·tokens, model_dim] must meet the accuracy standard against
// the naive module in double, with the naive fp32 module setting the bound.
template <class Layer>
void expect_forward_meets_standard(Layer& layer, const naive::ModuleWeights& weights,
                                   const std::vector<float>& x, std::int64_t batch, int threads,
                                   KernelChoice kernel = KernelChoice::fused) {
  const LayerConfig& c = layer.config();
  const std::int64_t rows = static_cast<std::int64_t>(x.size()) / c.model_dim;
  const RowMatrix y =
      layer.forward(to_matrix(x, rows, c.model_dim), ForwardOptions{batch, threads, kernel});
  ASSERT_EQ(y.rows(), rows);
  ASSERT_EQ(y.cols(), c.model_dim);
  const std::vector<double> exact = naive::module_forward<double>(shape_of(c), weights, x, batch);
  const std::vector<float> fp32 = naive::module_forward<float>(shape_of(c), weights, x, batch);
  const std::vector<float> lib = to_vector(y);
  EXPECT_FALSE(naive::any_nan(lib));
  EXPECT_GT(naive::max_abs(exact), 1e-3) << "a degenerate case: the output is ~0";
  EXPECT_TRUE(naive::within_standard("y", lib, exact, fp32));
}

template <class Layer>
void check_forward(const LayerConfig& config, std::int64_t batch, std::int64_t tokens,
                   int threads, std::uint64_t seed) {
  SCOPED_TRACE(std::string(Layer::variant_name()) + ": " + describe(config) + ", batch " +
               std::to_string(batch) + ", tokens " + std::to_string(tokens) + ", threads " +
               std::to_string(threads));
  Layer layer(config);
  layer.init_random(seed);
  const std::vector<float> x = naive::random_vector(batch * tokens * config.model_dim, seed + 1);
  expect_forward_meets_standard(layer, weights_of(layer), x, batch, threads);
}

// max|a - b| <= rel · max|b|: for equivalent layers computing the same thing in another order.
void expect_close(const RowMatrix& a, const RowMatrix& b, double rel = 1e-5) {
  ASSERT_EQ(a.rows(), b.rows());
  ASSERT_EQ(a.cols(), b.cols());
  ASSERT_TRUE(a.allFinite());
  ASSERT_TRUE(b.allFinite());
  const double error = (a.cast<double>() - b.cast<double>()).cwiseAbs().maxCoeff();
  const double scale = b.cast<double>().cwiseAbs().maxCoeff();
  EXPECT_GT(scale, 1e-3) << "a degenerate case: the output is ~0";
  EXPECT_LE(error, rel * scale) << "max|a - b| = " << error << ", max|b| = " << scale;
}

// ---- Forward against the naive module ----------------------------------------------------------

TEST(ModuleForward, GroupedQueryMatchesNaive) {
  for (bool bias : {false, true})
    for (bool causal : {false, true})
      for (std::int64_t batch : {1, 3})
        check_forward<multihead::GQA>(make_config(64, 8, 2, 16, bias, causal), batch, 11, 0,
                                      static_cast<std::uint64_t>(10 + bias * 4 + causal * 2 + batch));
}

TEST(ModuleForward, MultiHeadMatchesNaive) {
  for (bool bias : {false, true})
    for (bool causal : {false, true})
      check_forward<multihead::MHA>(make_config(48, 4, 4, 12, bias, causal), 2, 9, 0,
                                    static_cast<std::uint64_t>(20 + bias * 2 + causal));
}

TEST(ModuleForward, MultiQueryMatchesNaive) {
  for (bool bias : {false, true})
    for (bool causal : {false, true})
      check_forward<multihead::MQA>(make_config(32, 4, 1, 8, bias, causal), 2, 13, 0,
                                    static_cast<std::uint64_t>(30 + bias * 2 + causal));
}

TEST(ModuleForward, ValueDimDiffersFromHeadDim) {
  for (bool causal : {false, true}) {
    check_forward<multihead::GQA>(make_config(64, 8, 2, 16, true, causal, 24), 2, 10, 0, 40);
    check_forward<multihead::MQA>(make_config(32, 4, 1, 8, false, causal, 20), 1, 17, 0, 41);
    check_forward<multihead::MHA>(make_config(40, 5, 5, 8, true, causal, 4), 3, 6, 0, 42);
  }
}

TEST(ModuleForward, ExplicitScale) {
  LayerConfig c = make_config(64, 8, 4, 16, true, true);
  c.scale = 0.6f;
  check_forward<multihead::GQA>(c, 2, 12, 0, 50);
}

TEST(ModuleForward, OneAndTwoThreads) {
  const LayerConfig c = make_config(64, 8, 2, 16, true, true);
  for (int threads : {1, 2}) check_forward<multihead::GQA>(c, 2, 40, threads, 60);
  // Few rows: the projections split by output features instead of rows.
  for (int threads : {1, 2}) check_forward<multihead::GQA>(c, 1, 3, threads, 61);
}

TEST(ModuleForward, SingleTokenAndLongerSequences) {
  const LayerConfig c = make_config(32, 4, 2, 8, false, true);
  for (std::int64_t tokens : {1, 2, 65}) check_forward<multihead::GQA>(c, 2, tokens, 0, 70);
}

// Both kernels behind forward meet the standard against the naive module, across the fused
// kernel's query blocks and K/V tiles (65 tokens), and the fused kernel is the default.
TEST(ModuleForward, ReferenceAndFusedKernelsBothMatchNaive) {
  const LayerConfig configs[] = {make_config(64, 8, 2, 16, true, true),
                                 make_config(64, 8, 2, 16, false, false),
                                 make_config(128, 4, 1, 64, true, true),      // fast path
                                 make_config(48, 4, 4, 12, false, true, 20)};  // value_dim
  for (const LayerConfig& c : configs)
    for (KernelChoice kernel : {KernelChoice::reference, KernelChoice::fused})
      for (std::int64_t tokens : {1, 65}) {
        SCOPED_TRACE(describe(c) + ", tokens " + std::to_string(tokens) +
                     (kernel == KernelChoice::fused ? ", fused" : ", reference"));
        multihead::GQA layer(c);
        layer.init_random(90);
        const std::vector<float> x = naive::random_vector(2 * tokens * c.model_dim, 91);
        expect_forward_meets_standard(layer, weights_of(layer), x, 2, 0, kernel);
      }
  multihead::GQA layer(configs[0]);
  layer.init_random(92);
  const RowMatrix x = to_matrix(naive::random_vector(2 * 33 * 64, 93), 66, 64);
  const RowMatrix by_default = layer.forward(x, ForwardOptions{2, 1});
  EXPECT_TRUE(by_default == layer.forward(x, ForwardOptions{2, 1, KernelChoice::fused}));
  EXPECT_FALSE(by_default == layer.forward(x, ForwardOptions{2, 1, KernelChoice::reference}))
      << "the kernel choice had no effect (or both kernels agree bitwise, which is unlikely)";
}

// The workspaces are reused across calls: a call of a new shape must not see the last one's.
TEST(ModuleForward, RepeatedCallsOfDifferentShapes) {
  multihead::GQA layer(make_config(32, 4, 2, 8, true, true));
  layer.init_random(80);
  const naive::ModuleWeights w = weights_of(layer);
  const std::int64_t shapes[][2] = {{2, 9}, {1, 4}, {3, 7}, {2, 9}};  // batch, tokens
  for (const auto& s : shapes) {
    SCOPED_TRACE("batch " + std::to_string(s[0]) + ", tokens " + std::to_string(s[1]));
    const std::vector<float> x = naive::random_vector(s[0] * s[1] * 32, static_cast<std::uint64_t>(s[1]));
    expect_forward_meets_standard(layer, w, x, s[0], 0);
  }
  // And the overload writing into y, with a y of the wrong size to start with.
  const std::vector<float> x = naive::random_vector(2 * 5 * 32, 81);
  RowMatrix y = RowMatrix::Constant(3, 3, 9.0f);
  layer.forward(to_matrix(x, 10, 32), y, ForwardOptions{2, 0});
  EXPECT_TRUE(naive::within_standard(
      "y", to_vector(y), naive::module_forward<double>(shape_of(layer.config()), w, x, 2),
      naive::module_forward<float>(shape_of(layer.config()), w, x, 2)));
}

// A layer fresh from the constructor has zero weights (and biases): its output is zero.
TEST(ModuleForward, FreshLayerIsZero) {
  for (bool bias : {false, true}) {
    multihead::GQA layer(make_config(16, 4, 2, 4, bias, true));
    for (Projection p : kProjections) {
      EXPECT_EQ(layer.weight(p).rows(), layer.out_features(p));
      EXPECT_EQ(layer.weight(p).cols(), layer.in_features(p));
      EXPECT_TRUE((layer.weight(p).array() == 0.0f).all());
      EXPECT_EQ(layer.bias(p).size(), bias ? layer.out_features(p) : 0);
      if (bias) {
        EXPECT_TRUE((layer.bias(p).array() == 0.0f).all());
      }
    }
    const RowMatrix y = layer.forward(to_matrix(naive::random_vector(5 * 16, 1), 5, 16));
    EXPECT_TRUE((y.array() == 0.0f).all());
  }
}

// ---- Rotary position embedding -----------------------------------------------------------------

// A layer with a rope against the naive module rotating its q and k by the formula: each variant,
// both layouts, whole and partial rotary, two bases, with and without the causal mask, both
// kernels.
TEST(ModuleRope, LayerWithRopeMatchesNaive) {
  using multihead::RopeLayout;
  for (RopeLayout layout : {RopeLayout::rotate_half, RopeLayout::interleaved})
    for (bool causal : {false, true}) {
      const std::uint64_t seed = 100 + (layout == RopeLayout::interleaved) * 10 + causal * 5;
      check_forward<multihead::GQA>(with_rope(make_config(64, 8, 2, 16, true, causal), layout), 2,
                                    11, 0, seed);
      check_forward<multihead::GQA>(
          with_rope(make_config(64, 8, 2, 16, false, causal), layout, 8, 500000.0), 1, 33, 0,
          seed + 1);
      check_forward<multihead::MHA>(
          with_rope(make_config(48, 4, 4, 12, true, causal), layout, 6, 100.0), 2, 9, 0, seed + 2);
      check_forward<multihead::MQA>(
          with_rope(make_config(32, 4, 1, 8, false, causal, 12), layout), 3, 13, 0, seed + 3);
    }
  const LayerConfig c = with_rope(make_config(128, 4, 1, 64, true, true), RopeLayout::rotate_half);
  for (KernelChoice kernel : {KernelChoice::reference, KernelChoice::fused}) {
    SCOPED_TRACE(describe(c) + (kernel == KernelChoice::fused ? ", fused" : ", reference"));
    multihead::MQA layer(c);
    layer.init_random(120);
    const std::vector<float> x = naive::random_vector(2 * 65 * c.model_dim, 121);
    expect_forward_meets_standard(layer, weights_of(layer), x, 2, 0, kernel);
  }
}

// The standard catches a rope that is missing, of the other layout, or one position off for one
// token; it cannot see every position moved by the same distance, since attention only sees
// differences of positions (test_rope.cpp checks the absolute ones).
TEST(ModuleRope, PositionsAndLayoutMatter) {
  const LayerConfig c =
      with_rope(make_config(64, 8, 2, 16, true, true), multihead::RopeLayout::rotate_half);
  multihead::GQA layer(c);
  layer.init_random(130);
  const naive::ModuleWeights w = weights_of(layer);
  const std::int64_t batch = 2, tokens = 12;
  const std::vector<float> x = naive::random_vector(batch * tokens * c.model_dim, 131);
  const std::vector<float> lib = to_vector(
      layer.forward(to_matrix(x, batch * tokens, c.model_dim), ForwardOptions{batch, 0}));
  const naive::ModuleShape m = shape_of(c);
  const std::vector<float> fp32 = naive::module_forward<float>(m, w, x, batch);
  const std::vector<double> exact = naive::module_forward<double>(m, w, x, batch);
  const double bound = 2.0 * naive::max_abs_error(fp32, exact) + 1e-6;  // the standard's
  const auto error = [&](const naive::ModuleShape& shape, std::vector<std::int64_t> positions) {
    return naive::max_abs_error(lib, naive::module_forward<double>(shape, w, x, batch, positions));
  };
  const std::vector<std::int64_t> positions = naive::sequence_positions(batch, tokens);
  ASSERT_LE(error(m, positions), bound);

  naive::ModuleShape without = m;
  without.rope.reset();
  EXPECT_GT(error(without, positions), 10 * bound) << "the rope had no effect";
  naive::ModuleShape other = m;
  other.rope->interleaved = true;
  EXPECT_GT(error(other, positions), 10 * bound) << "the layouts agree";
  std::vector<std::int64_t> slipped = positions;
  slipped[static_cast<std::size_t>(tokens - 1)] += 1;  // the last token of sequence 0
  EXPECT_GT(error(m, slipped), 10 * bound) << "one token one position off passed";
  std::vector<std::int64_t> moved = positions;
  for (std::int64_t& p : moved) p += 100;
  EXPECT_LE(error(m, moved), bound) << "moving every position by 100 changed the output";
}

// ---- Setting and initialising parameters -------------------------------------------------------

// Weights given as raw nn.Linear buffers drive the layer exactly as the naive module with the
// same buffers: this checks the [out, in] row-major layout independently of the getters.
TEST(ModuleParameters, RawBuffersFollowTheLinearLayout) {
  const LayerConfig c = make_config(24, 6, 3, 8, true, true, 5);
  multihead::GQA layer(c);
  naive::ModuleWeights w;
  std::vector<float>* weights[] = {&w.wq, &w.wk, &w.wv, &w.wo};
  std::vector<float>* biases[] = {&w.bq, &w.bk, &w.bv, &w.bo};
  for (int i = 0; i < 4; ++i) {
    const Projection p = kProjections[i];
    const float bound = 1.0f / std::sqrt(static_cast<float>(layer.in_features(p)));
    *weights[i] = naive::random_vector(layer.out_features(p) * layer.in_features(p),
                                       static_cast<std::uint64_t>(100 + i), -bound, bound);
    *biases[i] = naive::random_vector(layer.out_features(p), static_cast<std::uint64_t>(200 + i),
                                      -bound, bound);
    layer.set_weight(p, weights[i]->data(), static_cast<std::int64_t>(weights[i]->size()));
    layer.set_bias(p, biases[i]->data(), static_cast<std::int64_t>(biases[i]->size()));
  }
  // Element (r, c) of W is buffer[r·in + c].
  const RowMatrix& wv = layer.weight(Projection::v);
  for (std::int64_t r = 0; r < wv.rows(); ++r)
    for (std::int64_t col = 0; col < wv.cols(); ++col)
      ASSERT_EQ(wv(r, col), w.wv[static_cast<std::size_t>(r * wv.cols() + col)]);
  const std::vector<float> x = naive::random_vector(2 * 7 * 24, 300);
  expect_forward_meets_standard(layer, w, x, 2, 0);
}

TEST(ModuleParameters, RawPointerSetWeightEqualsEigenSetWeight) {
  const LayerConfig c = make_config(32, 4, 2, 8, true, false, 12);
  multihead::GQA raw(c), eigen(c);
  for (Projection p : kProjections) {
    const std::int64_t out = raw.out_features(p), in = raw.in_features(p);
    const std::vector<float> w = naive::random_vector(out * in, static_cast<std::uint64_t>(p) + 5);
    const std::vector<float> b = naive::random_vector(out, static_cast<std::uint64_t>(p) + 50);
    raw.set_weight(p, w.data(), out * in);
    eigen.set_weight(p, to_matrix(w, out, in));
    raw.set_bias(p, b.data(), out);
    eigen.set_bias(p, Eigen::Map<const Eigen::VectorXf>(b.data(), out));
    EXPECT_TRUE(raw.weight(p) == eigen.weight(p)) << multihead::projection_name(p);
    EXPECT_TRUE(raw.bias(p) == eigen.bias(p)) << multihead::projection_name(p);
    EXPECT_EQ(to_vector(raw.weight(p)), w);
  }
  const RowMatrix x = to_matrix(naive::random_vector(2 * 6 * 32, 9), 12, 32);
  const RowMatrix y_raw = raw.forward(x, ForwardOptions{2, 1});
  const RowMatrix y_eigen = eigen.forward(x, ForwardOptions{2, 1});
  EXPECT_TRUE(y_raw == y_eigen);
  EXPECT_GT(y_raw.cwiseAbs().maxCoeff(), 1e-3f);
  // set_weights sets the same four.
  multihead::GQA all(c);
  all.set_weights(raw.weight(Projection::q), raw.weight(Projection::k), raw.weight(Projection::v),
                  raw.weight(Projection::o));
  for (Projection p : kProjections) EXPECT_TRUE(all.weight(p) == raw.weight(p));
}

TEST(ModuleParameters, InitRandomIsDeterministicPerSeed) {
  for (bool bias : {false, true}) {
    const LayerConfig c = make_config(48, 6, 3, 8, bias, true, 10);
    multihead::GQA a(c), b(c), other(c);
    a.init_random(1234);
    b.init_random(1234);
    other.init_random(1235);
    for (Projection p : kProjections) {
      SCOPED_TRACE(multihead::projection_name(p));
      EXPECT_TRUE(a.weight(p) == b.weight(p));
      EXPECT_TRUE(a.bias(p) == b.bias(p));
      EXPECT_FALSE(a.weight(p) == other.weight(p));
      if (bias) {
        EXPECT_FALSE(a.bias(p) == other.bias(p));
      }
      // nn.Linear's default: uniform in [-1/sqrt(in), 1/sqrt(in)], and spread over it.
      const float bound = 1.0f / std::sqrt(static_cast<float>(a.in_features(p)));
      EXPECT_LE(a.weight(p).cwiseAbs().maxCoeff(), bound);
      EXPECT_GT(a.weight(p).cwiseAbs().maxCoeff(), 0.9f * bound);
      EXPECT_LT(std::abs(a.weight(p).mean()), 0.1f * bound);
      if (bias) {
        EXPECT_LE(a.bias(p).cwiseAbs().maxCoeff(), bound);
        EXPECT_GT(a.bias(p).cwiseAbs().maxCoeff(), 0.0f);
      }
    }
    // Re-seeding an initialised layer gives the same layer again.
    other.init_random(1234);
    for (Projection p : kProjections) EXPECT_TRUE(other.weight(p) == a.weight(p));
    const RowMatrix x = to_matrix(naive::random_vector(8 * 48, 3), 8, 48);
    EXPECT_TRUE(a.forward(x, ForwardOptions{1, 1}) == b.forward(x, ForwardOptions{1, 1}));
  }
}

TEST(ModuleParameters, CountsAndCacheSizes) {
  multihead::GQA gqa(make_config(64, 8, 2, 16, true, true, 24));
  EXPECT_EQ(gqa.out_features(Projection::q), 128);
  EXPECT_EQ(gqa.out_features(Projection::k), 32);
  EXPECT_EQ(gqa.out_features(Projection::v), 48);
  EXPECT_EQ(gqa.out_features(Projection::o), 64);
  EXPECT_EQ(gqa.in_features(Projection::q), 64);
  EXPECT_EQ(gqa.in_features(Projection::o), 192);
  // 128·64 + 32·64 + 48·64 + 64·192 weights and 128 + 32 + 48 + 64 biases.
  EXPECT_EQ(gqa.parameter_count(), 25600 + 272);
  EXPECT_EQ(gqa.kv_cache_bytes_per_token(), 2 * (16 + 24) * 4);
  EXPECT_EQ(gqa.kv_cache_bytes_per_token(2), 2 * (16 + 24) * 2);

  multihead::GQA gqa_plain(make_config(64, 8, 2, 16, false, true, 24));
  EXPECT_EQ(gqa_plain.parameter_count(), 25600);

  multihead::MHA mha(make_config(512, 8, 8, 64, false, true));
  EXPECT_EQ(mha.parameter_count(), 4 * 512 * 512);
  EXPECT_EQ(mha.kv_cache_bytes_per_token(), 2 * 8 * 64 * 4);

  multihead::MQA mqa(make_config(512, 8, 1, 64, false, true));
  EXPECT_EQ(mqa.parameter_count(), 2 * 512 * 512 + 2 * 64 * 512);
  EXPECT_EQ(mqa.kv_cache_bytes_per_token(), 2 * 64 * 4);
  EXPECT_EQ(mqa.kv_cache_bytes_per_token(2), 2 * 64 * 2);

  multihead::MHA mha_bias(make_config(512, 8, 8, 64, true, true));
  EXPECT_EQ(mha_bias.parameter_count(), 4 * 512 * 512 + 4 * 512);

  EXPECT_STREQ(multihead::MHA::variant_name(), "MHA");
  EXPECT_STREQ(multihead::GQA::variant_name(), "GQA");
  EXPECT_STREQ(multihead::MQA::variant_name(), "MQA");
  EXPECT_EQ(gqa.config().kv_groups, 2);
}

// ---- Equivalences between the variants ---------------------------------------------------------

template <class To, class From>
void copy_parameters(const From& from, To& to) {
  to.set_weights(from.weight(Projection::q), from.weight(Projection::k),
                 from.weight(Projection::v), from.weight(Projection::o));
  if (from.config().bias)
    for (Projection p : kProjections) to.set_bias(p, from.bias(p));
}

TEST(ModuleEquivalence, GroupedQueryWithGroupsEqualHeadsIsMultiHead) {
  for (bool bias : {false, true}) {
    const LayerConfig c = make_config(48, 6, 6, 8, bias, true);
    multihead::MHA mha(c);
    mha.init_random(5);
    multihead::GQA gqa(c);
    copy_parameters(mha, gqa);
    const RowMatrix x = to_matrix(naive::random_vector(2 * 10 * 48, 6), 20, 48);
    expect_close(gqa.forward(x, ForwardOptions{2, 0}), mha.forward(x, ForwardOptions{2, 0}));
  }
}

TEST(ModuleEquivalence, MultiQueryIsGroupedQueryWithOneGroup) {
  for (bool bias : {false, true}) {
    const LayerConfig c = make_config(32, 4, 1, 8, bias, true, 12);
    multihead::MQA mqa(c);
    mqa.init_random(7);
    multihead::GQA gqa(c);
    copy_parameters(mqa, gqa);
    const RowMatrix x = to_matrix(naive::random_vector(3 * 7 * 32, 8), 21, 32);
    expect_close(gqa.forward(x, ForwardOptions{3, 0}), mqa.forward(x, ForwardOptions{3, 0}));
  }
}

// Repeats each K/V head `times` times in place ([g0, g0, g1, g1, ...], as query head h reads
// K/V head h / group_size): rows of a weight, entries of a bias.
RowMatrix repeat_heads(const RowMatrix& w, std::int64_t heads, std::int64_t times) {
  const std::int64_t rows = w.rows() / heads;
  RowMatrix out(w.rows() * times, w.cols());
  for (std::int64_t g = 0; g < heads; ++g)
    for (std::int64_t t = 0; t < times; ++t)
      out.middleRows((g * times + t) * rows, rows) = w.middleRows(g * rows, rows);
  return out;
}
Eigen::VectorXf repeat_heads(const Eigen::VectorXf& b, std::int64_t heads, std::int64_t times) {
  const RowMatrix column = b;  // [n, 1]
  const RowMatrix repeated = repeat_heads(column, heads, times);
  return Eigen::Map<const Eigen::VectorXf>(repeated.data(), repeated.size());
}

// A layer of `kv_groups` K/V heads equals MHA whose K/V weights repeat each of them for the
// query heads of its group.
template <class Layer>
void expect_equals_mha_with_repeated_kv(const LayerConfig& c, std::uint64_t seed) {
  SCOPED_TRACE(describe(c));
  Layer layer(c);
  layer.init_random(seed);
  LayerConfig mha_config = c;
  mha_config.kv_groups = c.heads;
  multihead::MHA mha(mha_config);
  const std::int64_t times = c.heads / c.kv_groups;
  mha.set_weights(layer.weight(Projection::q),
                  repeat_heads(layer.weight(Projection::k), c.kv_groups, times),
                  repeat_heads(layer.weight(Projection::v), c.kv_groups, times),
                  layer.weight(Projection::o));
  if (c.bias) {
    mha.set_bias(Projection::q, layer.bias(Projection::q));
    mha.set_bias(Projection::k, repeat_heads(layer.bias(Projection::k), c.kv_groups, times));
    mha.set_bias(Projection::v, repeat_heads(layer.bias(Projection::v), c.kv_groups, times));
    mha.set_bias(Projection::o, layer.bias(Projection::o));
  }
  const RowMatrix x = to_matrix(naive::random_vector(2 * 9 * c.model_dim, seed + 1), 18, c.model_dim);
  expect_close(layer.forward(x, ForwardOptions{2, 0}), mha.forward(x, ForwardOptions{2, 0}));
  // The cache is what differs: kv_groups heads instead of heads.
  EXPECT_EQ(layer.kv_cache_bytes_per_token() * times, mha.kv_cache_bytes_per_token());
}

TEST(ModuleEquivalence, MultiQueryIsMultiHeadWithRepeatedKv) {
  for (bool bias : {false, true})
    for (bool causal : {false, true})
      expect_equals_mha_with_repeated_kv<multihead::MQA>(make_config(32, 4, 1, 8, bias, causal, 6),
                                                         90 + bias * 2 + causal);
}

TEST(ModuleEquivalence, GroupedQueryIsMultiHeadWithRepeatedKv) {
  for (bool bias : {false, true})
    expect_equals_mha_with_repeated_kv<multihead::GQA>(make_config(48, 6, 2, 8, bias, true),
                                                       95 + bias);
  expect_equals_mha_with_repeated_kv<multihead::GQA>(make_config(64, 8, 4, 8, true, false, 12),
                                                     97);
}

}  // namespace
