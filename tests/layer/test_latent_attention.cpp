// Attention<Latent> (MLA) against the naive latent layer of naive_latent_reference.hpp (double
// oracle; the fp32 naive loop sets the accuracy bound): the naive and absorbed paths, whole
// sequences and incremental over latent caches, the DeepSeek-V2-Lite and V2 shapes and small
// ones with and without query compression, latent norm and RoPE; the weight API and errors.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include <multihead/multihead.hpp>

#include "support/naive_latent_reference.hpp"
#include "support/naive_reference.hpp"

namespace {

using multihead::bf16;
using multihead::fp16;
using multihead::LatentCache;
using multihead::LatentConfig;
using multihead::LatentForwardOptions;
using multihead::LatentPath;
using multihead::LatentWeight;
using multihead::MLA;
using multihead::RowMatrix;

const LatentWeight kWeights[] = {
    LatentWeight::q_proj,   LatentWeight::q_a_proj,           LatentWeight::q_a_layernorm,
    LatentWeight::q_b_proj, LatentWeight::kv_a_proj_with_mqa, LatentWeight::kv_a_layernorm,
    LatentWeight::kv_b_proj, LatentWeight::o_proj};

LatentConfig small_config(std::int64_t query_latent, std::int64_t rope_dim, bool kv_norm,
                          bool causal = true) {
  LatentConfig c;
  c.model_dim = 48;
  c.heads = 4;
  c.latent_dim = 24;
  if (query_latent > 0) c.query_latent_dim = query_latent;
  c.nope_dim = 16;
  c.rope_dim = rope_dim;
  c.value_dim = 12;
  c.kv_norm = kv_norm;
  c.causal = causal;
  return c;
}

// DeepSeek-V2's attention dims (128 heads, latents 512 and 1536, heads 128 + 64 / 128) with a
// model dim of 256 instead of 5120, which only sizes the input and output projections: the
// full o_proj alone would hold 84 M floats.
LatentConfig v2_attention_dims() {
  LatentConfig c = LatentConfig::deepseek_v2();
  c.model_dim = 256;
  return c;
}

std::string describe(const LatentConfig& c) {
  return "model " + std::to_string(c.model_dim) + ", heads " + std::to_string(c.heads) +
         ", d_c " + std::to_string(c.latent_dim) + ", d_c' " +
         (c.query_latent_dim ? std::to_string(*c.query_latent_dim) : "none") + ", nope " +
         std::to_string(c.nope_dim) + ", rope " + std::to_string(c.rope_dim) + ", v " +
         std::to_string(c.value_dim) + (c.kv_norm ? ", kv_norm" : "") +
         (c.causal ? ", causal" : "");
}

naive::LatentShape shape_of(const LatentConfig& c) {
  naive::LatentShape m;
  m.model_dim = c.model_dim;
  m.heads = c.heads;
  m.latent_dim = c.latent_dim;
  m.query_latent_dim = c.query_latent_dim.value_or(0);
  m.nope_dim = c.nope_dim;
  m.rope_dim = c.rope_dim;
  m.value_dim = c.value_dim;
  m.kv_norm = c.kv_norm;
  m.norm_eps = c.norm_eps;
  m.rope_base = c.rope_base;
  m.causal = c.causal;
  if (c.scale) m.scale = *c.scale;
  return m;
}

std::vector<float> to_vector(const RowMatrix& m) {
  return std::vector<float>(m.data(), m.data() + m.size());
}

naive::LatentWeights weights_of(const MLA& layer) {
  naive::LatentWeights w;
  const auto get = [&](LatentWeight which) {
    return layer.has_weight(which) ? to_vector(layer.weight(which)) : std::vector<float>{};
  };
  w.q_proj = get(LatentWeight::q_proj);
  w.q_a_proj = get(LatentWeight::q_a_proj);
  w.q_a_layernorm = get(LatentWeight::q_a_layernorm);
  w.q_b_proj = get(LatentWeight::q_b_proj);
  w.kv_a_proj_with_mqa = get(LatentWeight::kv_a_proj_with_mqa);
  w.kv_a_layernorm = get(LatentWeight::kv_a_layernorm);
  w.kv_b_proj = get(LatentWeight::kv_b_proj);
  w.o_proj = get(LatentWeight::o_proj);
  return w;
}

// A layer with nn.Linear-style random projections and random RMSNorm weights in [0.5, 1.5]
// (ones would hide a norm weight applied to the wrong dims).
MLA random_layer(const LatentConfig& c, std::uint64_t seed) {
  MLA layer(c);
  layer.init_random(seed);
  for (LatentWeight w : {LatentWeight::q_a_layernorm, LatentWeight::kv_a_layernorm})
    if (layer.has_weight(w)) {
      const auto shape = layer.weight_shape(w);
      layer.set_weight(w, naive::random_vector(shape[1], seed + 7, 0.5f, 1.5f).data(), shape[1]);
    }
  return layer;
}

RowMatrix to_matrix(const std::vector<float>& values, std::int64_t cols) {
  return Eigen::Map<const RowMatrix>(values.data(), static_cast<Eigen::Index>(values.size()) / cols,
                                     cols);
}

// The oracle's output (double) and the naive fp32 loop's, which sets the accuracy bound, for
// the layer on x fed in `chunks`, over a cache that reads values back through `stored`.
// A bf16 or fp16 cache rounds each latent once; the library rounds its fp32 latents, the oracle
// its exact ones, and where the two fall on either side of a rounding boundary they cache
// neighbouring values, one unit of roundoff apart. `rounding` bounds what that can do: what
// rounding every cached value changes in the oracle's output.
struct Oracle {
  std::vector<double> exact;
  std::vector<float> fp32;
  double rounding = 0.0;
};

Oracle oracle_of(const MLA& layer, const std::vector<float>& x, std::int64_t batch,
                 const std::vector<std::int64_t>& chunks = {},
                 const std::function<double(double)>& stored = nullptr) {
  const naive::LatentShape m = shape_of(layer.config());
  const naive::LatentWeights w = weights_of(layer);
  Oracle oracle{naive::latent_forward<double>(m, w, x, batch, chunks, stored),
                naive::latent_forward<float>(m, w, x, batch, chunks, stored)};
  if (stored)
    oracle.rounding = naive::max_abs_error(
        oracle.exact, naive::latent_forward<double>(m, w, x, batch, chunks));
  return oracle;
}

// y under the accuracy standard against the oracle, widened by the rounding term (0 for a float
// cache).
void expect_meets_standard(const RowMatrix& y, const Oracle& oracle) {
  const std::vector<float> lib = to_vector(y);
  ASSERT_EQ(lib.size(), oracle.exact.size());
  EXPECT_FALSE(naive::any_nan(lib));
  EXPECT_GT(naive::max_abs(oracle.exact), 1e-3) << "a degenerate case: the output is ~0";
  if (oracle.rounding == 0.0) {
    EXPECT_TRUE(naive::within_standard("y", lib, oracle.exact, oracle.fp32));
    return;
  }
  const double error = naive::max_abs_error(lib, oracle.exact);
  const double bound = 2.0 * naive::max_abs_error(oracle.fp32, oracle.exact) + 1e-6 + oracle.rounding;
  EXPECT_LE(error, bound) << "rounding term " << oracle.rounding;
  // The term is of the order of the unit roundoff (bf16: 2^-8) times the output, far below what
  // a step over a wrong set of keys changes.
  EXPECT_LT(oracle.rounding, 0x1p-8 * naive::max_abs(oracle.exact) * 4);
}

// ---- Config and parameters ---------------------------------------------------------------------

TEST(LatentConfigTest, RejectsBadSizesNamingTheField) {
  const auto message = [](LatentConfig c) {
    try {
      c.validate();
    } catch (const std::invalid_argument& e) {
      return std::string(e.what());
    }
    return std::string("no exception");
  };
  LatentConfig c = LatentConfig::deepseek_v2_lite();
  EXPECT_NO_THROW(c.validate());
  LatentConfig bad = c;
  bad.rope_dim = 63;
  EXPECT_NE(message(bad).find("rope_dim (63)"), std::string::npos) << message(bad);
  bad = c;
  bad.latent_dim = 0;
  EXPECT_NE(message(bad).find("latent_dim"), std::string::npos) << message(bad);
  bad = c;
  bad.query_latent_dim = -2;
  EXPECT_NE(message(bad).find("query_latent_dim"), std::string::npos) << message(bad);
  bad = c;
  bad.heads = 1LL << 40;
  bad.model_dim = 1LL << 30;
  EXPECT_NE(message(bad).find("overflow"), std::string::npos) << message(bad);
  EXPECT_THROW(MLA{bad}, std::invalid_argument);
}

// MLA layers take the score modifiers of dense layers (ScoreModifiers), checked the same way.
TEST(LatentConfigTest, RejectsBadModifiersNamingTheField) {
  const auto message = [](LatentConfig c) {
    try {
      MLA layer(c);
    } catch (const std::invalid_argument& e) {
      return std::string(e.what());
    }
    return std::string("no exception");
  };
  const LatentConfig c = small_config(0, 8, true);
  LatentConfig bad = c;
  bad.window_left = -2;
  EXPECT_NE(message(bad).find("window (left -2"), std::string::npos) << message(bad);
  bad = c;
  bad.softcap = -1.0f;
  EXPECT_NE(message(bad).find("softcap (-1)"), std::string::npos) << message(bad);
  bad = c;
  bad.sinks = {0.0f};
  EXPECT_NE(message(bad).find("sinks: one value per query head"), std::string::npos)
      << message(bad);
  bad.sinks.assign(static_cast<std::size_t>(c.heads), 0.0f);
  bad.sinks[1] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_NE(message(bad).find("sinks[1]"), std::string::npos) << message(bad);
  bad.sinks[1] = -std::numeric_limits<float>::infinity();  // no sink for that head: fine
  EXPECT_EQ(message(bad), "no exception");
}

TEST(LatentParameters, HuggingFaceShapesAndPresence) {
  const MLA lite(LatentConfig::deepseek_v2_lite());
  using Shape = std::array<std::int64_t, 2>;
  EXPECT_EQ(lite.weight_shape(LatentWeight::q_proj), (Shape{16 * 192, 2048}));
  EXPECT_EQ(lite.weight_shape(LatentWeight::kv_a_proj_with_mqa), (Shape{576, 2048}));
  EXPECT_EQ(lite.weight_shape(LatentWeight::kv_a_layernorm), (Shape{1, 512}));
  EXPECT_EQ(lite.weight_shape(LatentWeight::kv_b_proj), (Shape{16 * 256, 512}));
  EXPECT_EQ(lite.weight_shape(LatentWeight::o_proj), (Shape{2048, 16 * 128}));
  EXPECT_FALSE(lite.has_weight(LatentWeight::q_a_proj));
  EXPECT_THROW(lite.weight(LatentWeight::q_b_proj), std::invalid_argument);
  EXPECT_EQ(lite.kv_cache_bytes_per_token(2), 576 * 2);

  LatentConfig v2 = LatentConfig::deepseek_v2();
  v2.model_dim = 64;  // small enough to allocate here; the other dims are V2's
  const MLA layer(v2);
  EXPECT_FALSE(layer.has_weight(LatentWeight::q_proj));
  EXPECT_EQ(layer.weight_shape(LatentWeight::q_a_proj), (Shape{1536, 64}));
  EXPECT_EQ(layer.weight_shape(LatentWeight::q_b_proj), (Shape{128 * 192, 1536}));
  std::int64_t parameters = 0;
  for (LatentWeight w : kWeights)
    if (layer.has_weight(w)) parameters += layer.weight_shape(w)[0] * layer.weight_shape(w)[1];
  EXPECT_EQ(layer.parameter_count(), parameters);
}

TEST(LatentParameters, SetWeightChecksShapeAndKeepsTheOld) {
  MLA layer(small_config(0, 8, true));
  layer.init_random(1);
  const RowMatrix before = layer.weight(LatentWeight::kv_b_proj);
  const RowMatrix wrong = RowMatrix::Ones(5, 24);
  try {
    layer.set_weight(LatentWeight::kv_b_proj, wrong);
    FAIL() << "no exception";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("kv_b_proj shape [5, 24] must be [112, 24]"),
              std::string::npos)
        << e.what();
  }
  EXPECT_EQ(layer.weight(LatentWeight::kv_b_proj), before);
  const std::vector<float> buffer(10, 1.0f);
  EXPECT_THROW(layer.set_weight(LatentWeight::o_proj, buffer.data(), 10), std::invalid_argument);
  EXPECT_THROW(layer.set_weight(LatentWeight::q_a_proj, buffer.data(), 10), std::invalid_argument);
  // A checkpoint tensor goes in as it is: row-major [out, in].
  const std::vector<float> kv_b = naive::random_vector(112 * 24, 3);
  layer.set_weight(LatentWeight::kv_b_proj, kv_b.data(), 112 * 24);
  EXPECT_EQ(layer.weight(LatentWeight::kv_b_proj)(1, 0), kv_b[24]);
}

// ---- Whole sequences: both paths against the oracle -----------------------------------------

void check_forward(const LatentConfig& c, std::int64_t batch, std::int64_t tokens,
                   std::uint64_t seed) {
  SCOPED_TRACE(describe(c) + ", batch " + std::to_string(batch) + ", tokens " +
               std::to_string(tokens));
  MLA layer = random_layer(c, seed);
  const std::vector<float> x = naive::random_vector(batch * tokens * c.model_dim, seed + 1);
  const RowMatrix xm = to_matrix(x, c.model_dim);
  LatentForwardOptions options;
  options.batch = batch;
  const Oracle oracle = oracle_of(layer, x, batch);
  options.path = LatentPath::naive;
  const RowMatrix naive_y = layer.forward(xm, options);
  expect_meets_standard(naive_y, oracle);
  options.path = LatentPath::absorbed;
  const RowMatrix absorbed_y = layer.forward(xm, options);
  expect_meets_standard(absorbed_y, oracle);
  options.path = LatentPath::automatic;
  options.kernel = multihead::KernelChoice::reference;
  expect_meets_standard(layer.forward(xm, options), oracle);
  // The two paths compute the same products in another order.
  const double scale = naive_y.cwiseAbs().maxCoeff();
  EXPECT_LE((naive_y - absorbed_y).cwiseAbs().maxCoeff(), 1e-5 * scale);
}

TEST(LatentForward, SmallShapesBothPathsMatchNaive) {
  std::uint64_t seed = 100;
  for (std::int64_t query_latent : {0, 20})
    for (std::int64_t rope_dim : {0, 8})
      for (bool kv_norm : {false, true})
        for (bool causal : {false, true})
          check_forward(small_config(query_latent, rope_dim, kv_norm, causal), 2, 7, seed++);
}

TEST(LatentForward, CustomScaleAndRopeBase) {
  LatentConfig c = small_config(20, 8, true);
  c.scale = 0.3f;
  c.rope_base = 500.0;
  check_forward(c, 1, 9, 7);
}

TEST(LatentForward, DeepSeekV2LiteShape) {
  check_forward(LatentConfig::deepseek_v2_lite(), 1, 5, 11);
}

TEST(LatentForward, DeepSeekV2AttentionDims) { check_forward(v2_attention_dims(), 1, 3, 12); }

// ---- Incremental: prefill, then steps over a latent cache ------------------------------------

template <class Storage>
double stored_value(double x) {
  return static_cast<double>(multihead::to_float(multihead::from_float<Storage>(static_cast<float>(x))));
}

// Feeds each sequence's tokens in `chunks` through forward(x, cache) and checks every chunk's
// outputs against the oracle over the same chunks (with the cache's rounding), and the float
// cache against the layer's own forward over all tokens.
template <class Storage>
void check_incremental(const LatentConfig& c, std::int64_t batch,
                       const std::vector<std::int64_t>& chunks, LatentPath path,
                       std::uint64_t seed) {
  std::int64_t tokens = 0;
  for (std::int64_t n : chunks) tokens += n;
  SCOPED_TRACE(describe(c) + ", batch " + std::to_string(batch) + ", tokens " +
               std::to_string(tokens) + ", chunks " + std::to_string(chunks.size()) +
               ", path " + std::to_string(static_cast<int>(path)));
  MLA layer = random_layer(c, seed);
  const std::vector<float> x = naive::random_vector(batch * tokens * c.model_dim, seed + 1);
  LatentCache<Storage> cache(batch, tokens + 3, c.latent_dim, c.rope_dim);
  RowMatrix y(batch * tokens, c.model_dim);
  LatentForwardOptions options;
  options.path = path;
  std::int64_t start = 0;
  for (std::int64_t n : chunks) {
    RowMatrix chunk(batch * n, c.model_dim), out;
    for (std::int64_t b = 0; b < batch; ++b)
      for (std::int64_t t = 0; t < n; ++t)
        for (std::int64_t i = 0; i < c.model_dim; ++i)
          chunk(b * n + t, i) = x[static_cast<std::size_t>((b * tokens + start + t) * c.model_dim + i)];
    layer.forward(chunk, cache, out, options);
    for (std::int64_t b = 0; b < batch; ++b)
      y.middleRows(b * tokens + start, n) = out.middleRows(b * n, n);
    start += n;
  }
  ASSERT_EQ(cache.length(), tokens);
  const std::function<double(double)> stored =
      std::is_same_v<Storage, float> ? std::function<double(double)>{} : stored_value<Storage>;
  expect_meets_standard(y, oracle_of(layer, x, batch, chunks, stored));
  if constexpr (std::is_same_v<Storage, float>) {
    LatentForwardOptions whole;
    whole.batch = batch;
    const RowMatrix reference = layer.forward(to_matrix(x, c.model_dim), whole);
    EXPECT_LE((y - reference).cwiseAbs().maxCoeff(), 1e-5 * reference.cwiseAbs().maxCoeff());
  }
}

TEST(LatentIncremental, PrefillThenStepsEqualsOneForward) {
  std::uint64_t seed = 200;
  for (std::int64_t query_latent : {0, 20})
    for (std::int64_t rope_dim : {0, 8}) {
      const LatentConfig c = small_config(query_latent, rope_dim, true);
      check_incremental<float>(c, 2, {5, 1, 1, 1}, LatentPath::automatic, seed++);
      check_incremental<float>(c, 1, {4, 3, 1}, LatentPath::automatic, seed++);  // chunked
      check_incremental<float>(c, 2, {3, 1, 2}, LatentPath::naive, seed++);
    }
}

TEST(LatentIncremental, HalfCachesWithinTheirRounding) {
  const LatentConfig c = small_config(20, 8, true);
  check_incremental<bf16>(c, 2, {5, 1, 1, 1}, LatentPath::automatic, 300);
  check_incremental<fp16>(c, 1, {6, 1, 2}, LatentPath::automatic, 301);
  check_incremental<bf16>(c, 1, {4, 1, 1}, LatentPath::naive, 302);
}

TEST(LatentIncremental, DeepSeekShapes) {
  check_incremental<float>(LatentConfig::deepseek_v2_lite(), 1, {5, 1, 1}, LatentPath::automatic,
                           400);
  check_incremental<bf16>(LatentConfig::deepseek_v2_lite(), 1, {4, 1, 1}, LatentPath::automatic,
                          401);
  check_incremental<float>(v2_attention_dims(), 1, {3, 1, 1}, LatentPath::automatic, 402);
}

// The oracle tells a step that sees one key too few from a right one: a layer whose cache missed
// the prefill's last token gives a step output outside the bound.
TEST(LatentIncremental, AStepMissingATokenFails) {
  const LatentConfig c = small_config(0, 8, true);
  MLA layer = random_layer(c, 500);
  const std::int64_t tokens = 6;
  const std::vector<float> x = naive::random_vector(tokens * c.model_dim, 501);
  const RowMatrix xm = to_matrix(x, c.model_dim);
  LatentCache<float> cache(1, 8, c.latent_dim, c.rope_dim);
  layer.forward(xm.topRows(tokens - 2), cache);  // the prefill skips token tokens-2
  const RowMatrix step = layer.forward(xm.bottomRows(1), cache);
  const std::vector<double> exact =
      naive::latent_forward<double>(shape_of(c), weights_of(layer), x, 1);
  double error = 0.0;
  for (std::int64_t i = 0; i < c.model_dim; ++i)
    error = std::max(error, std::abs(step(0, i) - exact[static_cast<std::size_t>((tokens - 1) * c.model_dim + i)]));
  EXPECT_GT(error, 1e-3);
}

// ---- Errors: nothing touched ------------------------------------------------------------------

TEST(LatentIncremental, BadCallsThrowAndTouchNothing) {
  const LatentConfig c = small_config(0, 8, true);
  MLA layer = random_layer(c, 600);
  const RowMatrix x = to_matrix(naive::random_vector(3 * c.model_dim, 601), c.model_dim);
  LatentCache<float> cache(1, 4, c.latent_dim, c.rope_dim);
  layer.forward(x, cache);
  const RowMatrix sentinel = RowMatrix::Constant(2, c.model_dim, 7.0f);
  RowMatrix y = sentinel;
  // Past capacity: 3 cached, room for 1.
  EXPECT_THROW(layer.forward(to_matrix(naive::random_vector(2 * c.model_dim, 602), c.model_dim),
                             cache, y),
               std::invalid_argument);
  EXPECT_EQ(cache.length(), 3);
  EXPECT_EQ(y, sentinel);
  // A cache of another latent or rope size.
  LatentCache<float> other(1, 4, c.latent_dim + 1, c.rope_dim);
  EXPECT_THROW(layer.forward(x.topRows(1), other, y), std::invalid_argument);
  LatentCache<float> no_rope(1, 4, c.latent_dim, 0);
  EXPECT_THROW(layer.forward(x.topRows(1), no_rope, y), std::invalid_argument);
  EXPECT_EQ(other.length(), 0);
  // Wrong model dim, batch not dividing the rows.
  EXPECT_THROW(layer.forward(RowMatrix::Ones(1, c.model_dim + 1), cache, y), std::invalid_argument);
  LatentForwardOptions two;
  two.batch = 2;
  EXPECT_THROW(layer.forward(x.topRows(1), cache, y, two), std::invalid_argument);
  EXPECT_EQ(cache.length(), 3);
  EXPECT_EQ(y, sentinel);
}

// ---- The order k_R is kept in -----------------------------------------------------------------

// Whether the RoPE part of a cached row in Hugging Face's order (`halves`) is the one in
// DeepSeek's interleaved order (`pairs`) permuted, its even dims first, then its odd ones.
::testing::AssertionResult is_deinterleaved(const float* halves, const float* pairs,
                                            std::int64_t rope_dim) {
  for (std::int64_t i = 0; i < rope_dim / 2; ++i)
    if (halves[i] != pairs[2 * i] || halves[rope_dim / 2 + i] != pairs[2 * i + 1])
      return ::testing::AssertionFailure() << "pair " << i << ": (" << halves[i] << ", "
                                           << halves[rope_dim / 2 + i] << "), expected ("
                                           << pairs[2 * i] << ", " << pairs[2 * i + 1] << ")";
  return ::testing::AssertionSuccess();
}

// The same weights in Hugging Face's order (rope_layout rotate_half) and in the interleaved
// default: the same outputs (the oracle's, which rotates interleaved pairs) over a prefill,
// steps and a step over sequences, on both paths, and caches whose latents are equal and whose
// k_R rows are the interleaved ones permuted, bit for bit (each pair turns by the same
// arithmetic).
TEST(LatentRopeLayout, HuggingFaceOrderGivesTheSameOutputsAndPermutedKeys) {
  std::uint64_t seed = 700;
  for (std::int64_t query_latent : {0, 20})
    for (LatentPath path : {LatentPath::automatic, LatentPath::naive}) {
      const LatentConfig c = small_config(query_latent, 8, true);
      SCOPED_TRACE(describe(c) + ", path " + std::to_string(static_cast<int>(path)));
      LatentConfig hf_config = c;
      hf_config.rope_layout = multihead::RopeLayout::rotate_half;
      MLA pairs = random_layer(c, seed++);
      MLA halves(hf_config);
      for (LatentWeight w : kWeights)
        if (pairs.has_weight(w)) halves.set_weight(w, pairs.weight(w));
      const std::int64_t batch = 2, tokens = 8;
      const std::vector<float> x = naive::random_vector(batch * tokens * c.model_dim, seed++);
      const RowMatrix xm = to_matrix(x, c.model_dim);
      LatentForwardOptions whole;
      whole.batch = batch;
      const RowMatrix y_pairs = pairs.forward(xm, whole), y_halves = halves.forward(xm, whole);
      const double scale = y_pairs.cwiseAbs().maxCoeff();
      EXPECT_LE((y_halves - y_pairs).cwiseAbs().maxCoeff(), 1e-5 * scale);
      expect_meets_standard(y_halves, oracle_of(halves, x, batch));

      // Prefill 5 tokens per sequence, then 3 steps of one.
      LatentCache<float> cache_pairs(batch, tokens + 2, c.latent_dim, c.rope_dim);
      LatentCache<float> cache_halves(batch, tokens + 2, c.latent_dim, c.rope_dim);
      LatentForwardOptions options;
      options.path = path;
      std::int64_t start = 0;
      for (std::int64_t n : {5, 1, 1, 1}) {
        RowMatrix chunk(batch * n, c.model_dim), out_pairs, out_halves;
        for (std::int64_t b = 0; b < batch; ++b)
          chunk.middleRows(b * n, n) = xm.middleRows(b * tokens + start, n);
        pairs.forward(chunk, cache_pairs, out_pairs, options);
        halves.forward(chunk, cache_halves, out_halves, options);
        EXPECT_LE((out_halves - out_pairs).cwiseAbs().maxCoeff(), 1e-5 * scale)
            << "chunk from " << start;
        start += n;
      }
      // A step over sequences: one token of sequence 0, two of sequence 1.
      const std::int64_t ids[] = {0, 1}, cu[] = {0, 1, 3};
      RowMatrix out_pairs, out_halves;
      const RowMatrix step = xm.middleRows(0, 3);
      pairs.forward(step, {cu, 3}, cache_pairs, {ids, 2}, out_pairs);
      halves.forward(step, {cu, 3}, cache_halves, {ids, 2}, out_halves);
      EXPECT_LE((out_halves - out_pairs).cwiseAbs().maxCoeff(), 1e-5 * scale);

      for (std::int64_t b = 0; b < batch; ++b)
        for (std::int64_t t = 0; t < cache_pairs.length(b); ++t) {
          const float* row_pairs = cache_pairs.keys().row(b, t, 0);
          const float* row_halves = cache_halves.keys().row(b, t, 0);
          EXPECT_TRUE(std::equal(row_pairs, row_pairs + c.latent_dim, row_halves))
              << "latent of sequence " << b << ", token " << t;
          EXPECT_TRUE(is_deinterleaved(row_halves + c.latent_dim, row_pairs + c.latent_dim,
                                       c.rope_dim))
              << "k_R of sequence " << b << ", token " << t;
        }
    }
}

TEST(LatentRopeLayout, DefaultIsInterleavedAndAnUnknownOneIsRejected) {
  LatentConfig c = small_config(0, 8, true);
  EXPECT_EQ(c.rope_layout, multihead::RopeLayout::interleaved);
  EXPECT_EQ(c.rope().layout, multihead::RopeLayout::interleaved);
  c.rope_layout = static_cast<multihead::RopeLayout>(3);
  try {
    c.validate();
    ADD_FAILURE() << "did not throw";
  } catch (const std::invalid_argument& error) {
    EXPECT_NE(std::string(error.what()).find("rope.layout (3) must be rotate_half or interleaved"),
              std::string::npos)
        << error.what();
  }
}

}  // namespace
