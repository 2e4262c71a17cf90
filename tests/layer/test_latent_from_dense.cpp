// latent_from_dense: dense MHA/GQA/MQA layers turned into MLA by a truncated SVD of [Wk; Wv].
// What the conversion reports is checked apart from how it computes it: W_r is formed back from
// the MLA layer's own kv_b_proj and kv_a_proj_with_mqa, the singular values come from JacobiSVD,
// and the outputs are compared with the dense layer's.
#include <gtest/gtest.h>

#include <Eigen/QR>
#include <Eigen/SVD>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include <multihead/multihead.hpp>
#include <multihead/layer/latent_from_dense.hpp>

#include "support/module_testing.hpp"
#include "support/naive_reference.hpp"
#include "support/testing.hpp"

namespace {

using namespace module_testing;

using multihead::ForwardOptions;
using multihead::GQA;
using multihead::LatentCache;
using multihead::LatentConversion;
using multihead::LatentForwardOptions;
using multihead::LatentPath;
using multihead::LatentRank;
using multihead::Projection;
using multihead::RowMatrix;
using multihead::LatentWeight;
using multihead::LayerConfig;
using multihead::MHA;
using multihead::MLA;
using multihead::MQA;
using multihead::Projection;
using multihead::RowMatrix;
using multihead::latent_from_dense;

constexpr std::int64_t kModel = 64, kHeads = 8, kHeadDim = 16;

// kv_groups and value_dim of the layers: MHA, GQA, MQA, and value_dim ≠ head_dim both ways.
struct Shape {
  std::int64_t kv_groups, value_dim;
};
const Shape kShapes[] = {{8, 16}, {2, 16}, {1, 16}, {2, 24}, {1, 8}};

LayerConfig config_of(const Shape& s, bool causal) {
  return make_config(kModel, kHeads, s.kv_groups, kHeadDim, false, causal, s.value_dim);
}

// Calls check(layer) on a randomly initialised layer of the variant each shape names.
template <class Check>
void for_each_layer(bool causal, std::uint64_t seed, const Check& check) {
  for (const Shape& s : kShapes) {
    const LayerConfig c = config_of(s, causal);
    SCOPED_TRACE("kv_groups " + std::to_string(s.kv_groups) + ", value_dim " +
                 std::to_string(s.value_dim) + (causal ? ", causal" : "") + ", seed " +
                 std::to_string(seed));
    if (s.kv_groups == kHeads) {
      MHA layer(c);
      layer.init_random(seed);
      check(layer);
    } else if (s.kv_groups == 1) {
      MQA layer(c);
      layer.init_random(seed);
      check(layer);
    } else {
      GQA layer(c);
      layer.init_random(seed);
      check(layer);
    }
    ++seed;
  }
}

// W = [Wk; Wv] in double.
template <class Layer>
Eigen::MatrixXd stacked_kv(const Layer& dense) {
  const RowMatrix& wk = dense.weight(Projection::k);
  const RowMatrix& wv = dense.weight(Projection::v);
  Eigen::MatrixXd w(wk.rows() + wv.rows(), wk.cols());
  w << wk.cast<double>(), wv.cast<double>();
  return w;
}

std::int64_t max_rank(const LayerConfig& c) {
  return std::min(c.kv_groups * (c.head_dim + c.v_dim()), c.model_dim);
}

// [Wk; Wv] as the MLA layer computes it: group g's K and V rows are the kv_b_proj rows of any of
// its heads times kv_a_proj_with_mqa; every head of a group must carry the same rows.
Eigen::MatrixXd reconstructed_kv(const MLA& mla, const LayerConfig& dense) {
  const std::int64_t d = dense.head_dim, dv = dense.v_dim(), groups = dense.kv_groups;
  const Eigen::MatrixXd a = mla.weight(LatentWeight::kv_a_proj_with_mqa).cast<double>();
  const RowMatrix& b = mla.weight(LatentWeight::kv_b_proj);
  Eigen::MatrixXd w(groups * (d + dv), dense.model_dim);
  for (std::int64_t h = 0; h < dense.heads; ++h) {
    const std::int64_t g = h / dense.group_size(), first = g * dense.group_size();
    EXPECT_TRUE(b.middleRows(h * (d + dv), d + dv) == b.middleRows(first * (d + dv), d + dv))
        << "head " << h << " differs from head " << first << " of its group";
    w.middleRows(g * d, d) = b.middleRows(h * (d + dv), d).cast<double>() * a;
    w.middleRows(groups * d + g * dv, dv) = b.middleRows(h * (d + dv) + d, dv).cast<double>() * a;
  }
  return w;
}

// max|y − reference| / max|reference|.
double relative_difference(const RowMatrix& y, const RowMatrix& reference) {
  EXPECT_EQ(y.rows(), reference.rows());
  EXPECT_EQ(y.cols(), reference.cols());
  return (y - reference).cwiseAbs().maxCoeff() / reference.cwiseAbs().maxCoeff();
}

RowMatrix random_input(std::int64_t rows, std::uint64_t seed) {
  const std::vector<float> x = naive::random_vector(rows * kModel, seed);
  return Eigen::Map<const RowMatrix>(x.data(), rows, kModel);
}

LatentForwardOptions latent_options(std::int64_t batch, LatentPath path) {
  LatentForwardOptions options;
  options.batch = batch;
  options.path = path;
  return options;
}

// ---- Full rank: the same layer ----------------------------------------------------------------

TEST(LatentFromDense, FullRankEqualsTheDenseLayer) {
  const std::int64_t batch = 2, tokens = 7;
  for (bool causal : {true, false})
    for_each_layer(causal, 10, [&](auto& dense) {
      const LayerConfig& c = dense.config();
      const LatentConversion conversion = latent_from_dense(dense, LatentRank::fixed(max_rank(c)));
      MLA mla = conversion.layer;
      const auto& lc = mla.config();
      EXPECT_EQ(conversion.rank, max_rank(c));
      EXPECT_EQ(lc.latent_dim, max_rank(c));
      EXPECT_EQ(lc.heads, c.heads);
      EXPECT_EQ(lc.nope_dim, c.head_dim);
      EXPECT_EQ(lc.rope_dim, 0);
      EXPECT_EQ(lc.value_dim, c.v_dim());
      EXPECT_FALSE(lc.kv_norm);
      EXPECT_FALSE(lc.query_latent_dim);
      EXPECT_EQ(lc.causal, c.causal);
      EXPECT_EQ(conversion.relative_error, 0.0);
      EXPECT_NEAR(conversion.kept_energy, 1.0, 1e-12);
      EXPECT_TRUE(mla.weight(LatentWeight::q_proj) == dense.weight(Projection::q));
      EXPECT_TRUE(mla.weight(LatentWeight::o_proj) == dense.weight(Projection::o));

      const RowMatrix x = random_input(batch * tokens, 11);
      const RowMatrix expected = dense.forward(x, ForwardOptions{batch, 0, {}});
      for (LatentPath path : {LatentPath::naive, LatentPath::absorbed}) {
        SCOPED_TRACE(path == LatentPath::naive ? "naive path" : "absorbed path");
        EXPECT_LE(relative_difference(mla.forward(x, latent_options(batch, path)), expected), 1e-4);
      }
    });
}

TEST(LatentFromDense, AnExplicitScaleCarriesOver) {
  LayerConfig c = config_of({2, 16}, true);
  c.scale = 0.4f;
  GQA dense(c);
  dense.init_random(20);
  const LatentConversion conversion = latent_from_dense(dense, LatentRank::fixed(max_rank(c)));
  ASSERT_TRUE(conversion.layer.config().scale);
  EXPECT_EQ(*conversion.layer.config().scale, 0.4f);
  MLA mla = conversion.layer;
  const RowMatrix x = random_input(6, 21);
  EXPECT_LE(relative_difference(mla.forward(x), dense.forward(x)), 1e-4);
}

// Every score modifier of the dense layer carries over, and the MLA layer applies it: at full
// rank both paths give the dense layer's outputs, which differ from the unmodified layer's (so
// a dropped modifier fails here), over a fresh forward and, for causal layers, over a cache,
// prefill then steps.
TEST(LatentFromDense, EveryScoreModifierCarriesOver) {
  struct Case {
    const char* name;
    std::function<void(LayerConfig&)> set;
  };
  const Case cases[] = {
      {"not causal", [](LayerConfig& c) { c.causal = false; }},
      {"sliding window", [](LayerConfig& c) { c.window_left = 2; }},
      {"window both sides", [](LayerConfig& c) { c.causal = false, c.window_left = 1, c.window_right = 2; }},
      {"soft-cap", [](LayerConfig& c) { c.softcap = 0.05f; }},
      {"ALiBi", [](LayerConfig& c) { c.alibi = true; }},
      {"sinks", [](LayerConfig& c) { c.sinks = {1.0f, -0.5f, 2.0f, 0.0f, 3.0f, -1.0f, 0.5f, 1.5f}; }},
  };
  const std::int64_t batch = 2, prefill = 6, steps = 3, tokens = prefill + steps;
  for (const Case& test : cases) {
    SCOPED_TRACE(test.name);
    LayerConfig plain = config_of({2, 16}, true), c = plain;
    test.set(c);
    GQA dense(c), unmodified(plain);
    dense.init_random(30);
    unmodified.init_random(30);
    const LatentConversion conversion = latent_from_dense(dense, LatentRank::fixed(max_rank(c)));
    const auto& lc = conversion.layer.config();
    EXPECT_EQ(lc.causal, c.causal);
    EXPECT_EQ(lc.window_left, c.window_left);
    EXPECT_EQ(lc.window_right, c.window_right);
    EXPECT_EQ(lc.softcap, c.softcap);
    EXPECT_EQ(lc.alibi, c.alibi);
    EXPECT_EQ(lc.sinks, c.sinks);

    const RowMatrix x = random_input(batch * tokens, 31);
    const RowMatrix expected = dense.forward(x, ForwardOptions{batch, 0, {}});
    EXPECT_GT(relative_difference(unmodified.forward(x, ForwardOptions{batch, 0, {}}), expected),
              1e-3)
        << "the modifier changes nothing here: this case proves nothing";
    for (LatentPath path : {LatentPath::naive, LatentPath::absorbed}) {
      SCOPED_TRACE(path == LatentPath::naive ? "naive path" : "absorbed path");
      MLA mla = conversion.layer;
      EXPECT_LE(relative_difference(mla.forward(x, latent_options(batch, path)), expected), 1e-4);
      // Prefill, then single steps over a cache: the same outputs where no query sees a later
      // token (which a cache does not hold yet).
      if (!c.causal || c.window_right > 0) continue;
      LatentCache<float> cache(batch, tokens, lc.latent_dim, lc.rope_dim);
      RowMatrix y(batch * tokens, kModel);
      for (std::int64_t start = 0, n = prefill; start < tokens; start += n, n = 1) {
        RowMatrix chunk(batch * n, kModel), out;
        for (std::int64_t b = 0; b < batch; ++b)
          chunk.middleRows(b * n, n) = x.middleRows(b * tokens + start, n);
        LatentForwardOptions options = latent_options(batch, path);
        options.batch = 1;
        mla.forward(chunk, cache, out, options);
        for (std::int64_t b = 0; b < batch; ++b)
          y.middleRows(b * tokens + start, n) = out.middleRows(b * n, n);
      }
      EXPECT_LE(relative_difference(y, expected), 1e-4);
    }
  }
}

// ---- Truncation: the error it reports, and what it does to the outputs -------------------------

// Every rank: the reported ‖W − W_r‖/‖W‖ equals the one of the W_r the MLA layer holds, up to the
// fp32 rounding of its factors, and neither grows with the rank.
TEST(LatentFromDense, ReportedErrorIsTheLayersOwnAndShrinksWithRank) {
  for_each_layer(true, 30, [&](auto& dense) {
    const LayerConfig& c = dense.config();
    const Eigen::MatrixXd w = stacked_kv(dense);
    double last_reported = std::numeric_limits<double>::infinity(), last_formed = last_reported;
    for (std::int64_t r = 1; r <= max_rank(c); ++r) {
      SCOPED_TRACE("rank " + std::to_string(r));
      const LatentConversion conversion = latent_from_dense(dense, LatentRank::fixed(r));
      ASSERT_EQ(conversion.rank, r);
      ASSERT_EQ(conversion.singular_values.size(), max_rank(c));
      const double formed = (w - reconstructed_kv(conversion.layer, c)).norm() / w.norm();
      EXPECT_NEAR(conversion.relative_error, formed, 1e-6);
      EXPECT_NEAR(conversion.kept_energy + conversion.relative_error * conversion.relative_error,
                  1.0, 1e-12);
      EXPECT_LE(conversion.relative_error, last_reported);
      EXPECT_LE(formed, last_formed + 1e-6);
      last_reported = conversion.relative_error;
      last_formed = formed;
    }
    EXPECT_EQ(last_reported, 0.0);
    EXPECT_LT(last_formed, 1e-6);
  });
}

// Replaces [Wk; Wv] by random singular vectors with singular values falling as 0.7^i, at the
// Frobenius norm it had: a spectrum that decays, as trained layers' do (random ones are flat).
template <class Layer>
void give_decaying_spectrum(Layer& dense, std::uint64_t seed) {
  const Eigen::MatrixXd original = stacked_kv(dense);
  const std::int64_t rows = original.rows(), n = max_rank(dense.config());
  const auto orthonormal = [](std::int64_t m, std::int64_t cols, std::uint64_t s) {
    const std::vector<float> values = naive::random_vector(m * cols, s);
    const Eigen::MatrixXd a = Eigen::Map<const RowMatrix>(values.data(), m, cols).cast<double>();
    return Eigen::MatrixXd(Eigen::HouseholderQR<Eigen::MatrixXd>(a).householderQ() *
                           Eigen::MatrixXd::Identity(m, cols));
  };
  Eigen::VectorXd sigma(n);
  for (std::int64_t i = 0; i < n; ++i) sigma(i) = std::pow(0.7, static_cast<double>(i));
  Eigen::MatrixXd w = orthonormal(rows, n, seed) * sigma.asDiagonal() *
                      orthonormal(original.cols(), n, seed + 1).transpose();
  const RowMatrix scaled = (w * (original.norm() / w.norm())).cast<float>();
  const std::int64_t k_rows = dense.out_features(Projection::k);
  dense.set_weight(Projection::k, scaled.topRows(k_rows));
  dense.set_weight(Projection::v, scaled.bottomRows(rows - k_rows));
}

// The output error of the converted layer, max|y − y_dense| / max|y_dense| over x; the absorbed
// path must give what the naive one gives.
template <class Layer>
double output_error(Layer& dense, const LatentConversion& conversion, const RowMatrix& x,
                    std::int64_t batch) {
  MLA mla = conversion.layer;
  const RowMatrix naive = mla.forward(x, latent_options(batch, LatentPath::naive));
  EXPECT_LE(relative_difference(mla.forward(x, latent_options(batch, LatentPath::absorbed)), naive),
            1e-5);
  return relative_difference(naive, dense.forward(x, ForwardOptions{batch, 0, {}}));
}

// With a decaying spectrum, every rank's output error tracks its weight error (measured: within
// 0.4x to 2.5x of it): the heads read the right rows of the latent at every rank, not only at the
// full one. Rank 1 is far off.
TEST(LatentFromDense, OutputErrorTracksTheWeightError) {
  const std::int64_t batch = 2, tokens = 6;
  for_each_layer(true, 40, [&](auto& dense) {
    give_decaying_spectrum(dense, 45);
    const RowMatrix x = random_input(batch * tokens, 41);
    for (std::int64_t r = 1; r <= max_rank(dense.config()); ++r) {
      SCOPED_TRACE("rank " + std::to_string(r));
      const LatentConversion conversion = latent_from_dense(dense, LatentRank::fixed(r));
      const double error = output_error(dense, conversion, x, batch);
      EXPECT_LE(error, 4.0 * conversion.relative_error + 1e-5)
          << "weight error " << conversion.relative_error;
      if (r == 1) {
        EXPECT_GT(error, 0.3);
      }
    }
  });
}

// Random weights have a flat spectrum: rank 1 is far off, one direction short of full much closer.
TEST(LatentFromDense, RandomLayersAreFarOffAtRankOne) {
  const std::int64_t batch = 2, tokens = 6;
  for_each_layer(true, 50, [&](auto& dense) {
    const RowMatrix x = random_input(batch * tokens, 51);
    const std::int64_t high = max_rank(dense.config()) - 1;
    const double at_one =
        output_error(dense, latent_from_dense(dense, LatentRank::fixed(1)), x, batch);
    const double at_high =
        output_error(dense, latent_from_dense(dense, LatentRank::fixed(high)), x, batch);
    EXPECT_GT(at_one, 0.3);
    EXPECT_LT(at_high, 0.5 * at_one) << "rank " << high;
  });
}

// A layer whose [Wk; Wv] has rank 12 (as trained layers nearly do) converts without loss at 12,
// with visible loss at 11, and the energy rule finds 12.
TEST(LatentFromDense, ALowRankLayerConvertsWithoutLossAtItsRank) {
  const LayerConfig c = config_of({2, 24}, true);
  const std::int64_t k = 12, rows = c.kv_groups * (c.head_dim + c.v_dim());
  GQA dense(c);
  dense.init_random(50);
  const std::vector<float> left = naive::random_vector(rows * k, 51, -0.5f, 0.5f);
  const std::vector<float> right = naive::random_vector(k * c.model_dim, 52, -0.5f, 0.5f);
  const RowMatrix w = Eigen::Map<const RowMatrix>(left.data(), rows, k) *
                      Eigen::Map<const RowMatrix>(right.data(), k, c.model_dim);
  const std::int64_t k_rows = c.kv_groups * c.head_dim;
  dense.set_weight(Projection::k, w.topRows(k_rows));
  dense.set_weight(Projection::v, w.bottomRows(rows - k_rows));

  const RowMatrix x = random_input(8, 53);
  const RowMatrix expected = dense.forward(x);
  const LatentConversion exact = latent_from_dense(dense, LatentRank::fixed(k));
  const LatentConversion short_one = latent_from_dense(dense, LatentRank::fixed(k - 1));
  EXPECT_LT(exact.relative_error, 1e-6);
  EXPECT_GT(short_one.relative_error, 0.05);
  MLA exact_layer = exact.layer, short_layer = short_one.layer;
  EXPECT_LE(relative_difference(exact_layer.forward(x), expected), 1e-4);
  EXPECT_GT(relative_difference(short_layer.forward(x), expected), 1e-3);
  EXPECT_EQ(latent_from_dense(dense, LatentRank::keep_energy(1.0 - 1e-9)).rank, k);
  // σ_13.. are rounding, but not zero: keeping all the energy keeps them too.
  EXPECT_GT(latent_from_dense(dense, LatentRank::keep_energy(1.0)).rank, k);
}

// ---- Choosing the rank by energy ---------------------------------------------------------------

TEST(LatentFromDense, EnergyPicksTheSmallestRankKeepingTheFraction) {
  for_each_layer(false, 60, [&](auto& dense) {
    const LayerConfig& c = dense.config();
    const Eigen::JacobiSVD<Eigen::MatrixXd> svd(stacked_kv(dense));
    const Eigen::VectorXd sigma = svd.singularValues();
    ASSERT_EQ(sigma.size(), max_rank(c));
    const double total = sigma.squaredNorm();
    for (double fraction : {1e-6, 0.1, 0.5, 0.8, 0.9, 0.95, 0.99, 0.999, 1.0}) {
      SCOPED_TRACE("energy " + std::to_string(fraction));
      std::int64_t expected = 1;
      while (sigma.head(expected).squaredNorm() < fraction * total) ++expected;
      const LatentConversion conversion =
          latent_from_dense(dense, LatentRank::keep_energy(fraction));
      EXPECT_EQ(conversion.rank, expected);
      EXPECT_EQ(conversion.layer.config().latent_dim, expected);
      EXPECT_NEAR(conversion.relative_error,
                  std::sqrt(sigma.tail(max_rank(c) - expected).squaredNorm() / total), 1e-9);
      EXPECT_GE(conversion.kept_energy, fraction - 1e-12);
      EXPECT_LE((conversion.singular_values - sigma).cwiseAbs().maxCoeff(), 1e-9 * sigma(0));
    }
  });
}

// ---- Decoding over a latent cache ---------------------------------------------------------------

// Prefill 5 tokens, then 3 single steps: at full rank what the dense layer gives over all 8; at
// half rank what the converted layer itself gives over all 8.
TEST(LatentFromDense, DecodesOverALatentCacheAsTheDenseLayer) {
  const std::int64_t batch = 2, prefill = 5, steps = 3, tokens = prefill + steps;
  for_each_layer(true, 70, [&](auto& dense) {
    const LayerConfig& c = dense.config();
    const RowMatrix x = random_input(batch * tokens, 71);
    const RowMatrix whole_dense = dense.forward(x, ForwardOptions{batch, 0, {}});
    for (std::int64_t r : {max_rank(c), max_rank(c) / 2}) {
      SCOPED_TRACE("rank " + std::to_string(r));
      MLA mla = latent_from_dense(dense, LatentRank::fixed(r)).layer;
      LatentCache<float> cache(batch, tokens, r, 0);
      RowMatrix y(batch * tokens, c.model_dim), out;
      std::int64_t start = 0;
      for (std::int64_t n : {prefill, std::int64_t{1}, std::int64_t{1}, std::int64_t{1}}) {
        RowMatrix chunk(batch * n, c.model_dim);
        for (std::int64_t b = 0; b < batch; ++b)
          chunk.middleRows(b * n, n) = x.middleRows(b * tokens + start, n);
        mla.forward(chunk, cache, out);
        for (std::int64_t b = 0; b < batch; ++b)
          y.middleRows(b * tokens + start, n) = out.middleRows(b * n, n);
        start += n;
      }
      ASSERT_EQ(cache.length(), tokens);
      EXPECT_EQ(mla.kv_cache_bytes_per_token(), r * std::int64_t{sizeof(float)});
      if (r == max_rank(c))
        EXPECT_LE(relative_difference(y, whole_dense), 1e-4);
      else
        EXPECT_LE(relative_difference(y, mla.forward(x, latent_options(batch, LatentPath::naive))),
                  1e-5);
    }
  });
}

// ---- Errors -------------------------------------------------------------------------------------


TEST(LatentFromDense, RejectsWhatItCannotConvertNamingTheField) {
  GQA rope(with_rope(config_of({2, 16}, true), multihead::RopeLayout::rotate_half));
  EXPECT_INVALID("config.rope", latent_from_dense(rope, LatentRank::fixed(4)));
  MHA biased(make_config(kModel, kHeads, kHeads, kHeadDim, true, true));
  EXPECT_INVALID("config.bias", latent_from_dense(biased, LatentRank::fixed(4)));

  MQA dense(config_of({1, 16}, true));  // [Wk; Wv] is [32, 64]: ranks 1..32
  dense.init_random(80);
  EXPECT_INVALID("rank (0) must be in [1, min(rows of [Wk; Wv], model_dim)] = [1, min(32, 64)]",
                 latent_from_dense(dense, LatentRank::fixed(0)));
  EXPECT_INVALID("rank (33) must be in [1,", latent_from_dense(dense, LatentRank::fixed(33)));
  EXPECT_INVALID("rank (-2)", latent_from_dense(dense, LatentRank::fixed(-2)));
  EXPECT_INVALID("energy (0) must be in (0, 1]",
                 latent_from_dense(dense, LatentRank::keep_energy(0.0)));
  EXPECT_INVALID("energy (1.5)", latent_from_dense(dense, LatentRank::keep_energy(1.5)));
  EXPECT_INVALID("energy (-0.5)", latent_from_dense(dense, LatentRank::keep_energy(-0.5)));
  const double nan = std::numeric_limits<double>::quiet_NaN();
  EXPECT_INVALID("energy (nan)", latent_from_dense(dense, LatentRank::keep_energy(nan)));
  EXPECT_INVALID("set exactly one of rank and energy (rank unset, energy unset)",
                 latent_from_dense(dense, LatentRank{}));
  EXPECT_INVALID("set exactly one of rank and energy (rank set, energy set)",
                 latent_from_dense(dense, LatentRank{4, 0.5}));
  EXPECT_EQ(latent_from_dense(dense, LatentRank::fixed(32)).rank, 32);  // the bounds themselves
  EXPECT_EQ(latent_from_dense(dense, LatentRank::fixed(1)).rank, 1);
}

// A NaN or an infinity in a weight is refused, naming the weight and where: the SVD of such a
// matrix returned a negative singular value.
TEST(LatentFromDense, RejectsNonFiniteWeights) {
  for (const float bad : {std::numeric_limits<float>::quiet_NaN(),
                          std::numeric_limits<float>::infinity()})
    for (const Projection p : {Projection::q, Projection::k, Projection::v, Projection::o}) {
      MQA dense(config_of({1, 16}, true));
      dense.init_random(81);
      RowMatrix w = dense.weight(p);
      w(1, 2) = bad;
      dense.set_weight(p, w);
      EXPECT_INVALID("holds a non-finite value", latent_from_dense(dense, LatentRank::fixed(4)));
      EXPECT_INVALID("at row 1, column 2", latent_from_dense(dense, LatentRank::fixed(4)));
    }
}

// The conversion of a layer whose weights are all zero is rank 1 with no error, not a NaN.
TEST(LatentFromDense, AZeroLayerConvertsWithoutNaN) {
  GQA dense(config_of({2, 16}, true));
  const LatentConversion conversion = latent_from_dense(dense, LatentRank::keep_energy(0.9));
  EXPECT_EQ(conversion.rank, 1);
  EXPECT_EQ(conversion.relative_error, 0.0);
  EXPECT_EQ(conversion.kept_energy, 1.0);
}

}  // namespace
