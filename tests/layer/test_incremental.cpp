// The incremental forward, Attention::forward(x, cache, y): with the causal mask, a prefill of N
// tokens and then M single-token steps (or a prefill in chunks) gives the outputs of one forward
// over the N + M tokens — for MHA, GQA and MQA, over float, bf16 and fp16 caches, with and without
// RoPE (the new tokens rotated at their true positions).
//
// Two yardsticks, both per case:
//  - the library's own forward over all the tokens. A float cache changes nothing but the order
//    of fp32 sums (projections of fewer rows, another kernel), so the two agree to 1e-5 of the
//    output's magnitude: each output goes through a few fp32 dot products of n <= 2048 terms,
//    whose rounding errors, of random sign, add up to about sqrt(n) · 2^-24 ≈ 3e-6 relative at
//    most (about 2e-7 is seen).
//    A bf16 or fp16 cache also rounds K and V once, by at most u = 2^-8 or 2^-11 relative. What
//    that does to the output is measured on a naive double model of the same steps with the same
//    rounding (the "rounding term", about 0.3·u·max|y| here, checked to stay below u·max|y|),
//    and the library may differ by twice it plus the float bound.
//  - the naive double module over all tokens (naive_reference.hpp), under the accuracy standard
//    of kernel_testing.hpp widened by the same rounding term.
// Negative checks show the bounds catch a step that sees one token too many or too few (such a
// step is off by ~0.05, the bounds are ~5e-6 for float, ~5e-4 for bf16).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include <multihead/multihead.hpp>

#include "support/module_testing.hpp"
#include "support/naive_reference.hpp"
#include "support/testing.hpp"

namespace {

using test_support::stored;

using namespace module_testing;

using multihead::bf16;
using multihead::ForwardOptions;
using multihead::fp16;
using multihead::KernelChoice;
using multihead::KvCache;
using multihead::LayerConfig;
using multihead::Projection;
using multihead::RowMatrix;
using multihead::TensorView;

// Incremental forward is for causal (decoder) layers.
LayerConfig causal_config(std::int64_t model_dim, std::int64_t heads, std::int64_t kv_groups,
                          std::int64_t head_dim, bool bias, std::int64_t value_dim = 0) {
  return make_config(model_dim, heads, kv_groups, head_dim, bias, true, value_dim);
}

// The unit roundoff of a Storage: elements are stored with a relative error of at most this.
template <class Storage>
double unit_roundoff() {
  if constexpr (std::is_same_v<Storage, bf16>) return 0x1p-8;
  if constexpr (std::is_same_v<Storage, fp16>) return 0x1p-11;
  return 0x1p-24;
}

template <class Storage>
const char* storage_name() {
  if constexpr (std::is_same_v<Storage, bf16>) return "bf16";
  if constexpr (std::is_same_v<Storage, fp16>) return "fp16";
  return "float";
}





std::int64_t sum(const std::vector<std::int64_t>& chunks) {
  std::int64_t total = 0;
  for (std::int64_t n : chunks) total += n;
  return total;
}

std::string describe(const std::vector<std::int64_t>& chunks) {
  std::string text;
  for (std::int64_t n : chunks) text += (text.empty() ? "" : " + ") + std::to_string(n);
  return text;
}

// Tokens [t0, t0 + n) of every sequence of `all` [batch·total, cols] (batch-major), as
// [batch·n, cols].
RowMatrix slice(const RowMatrix& all, std::int64_t batch, std::int64_t t0, std::int64_t n) {
  const std::int64_t total = all.rows() / batch;
  RowMatrix part(batch * n, all.cols());
  for (std::int64_t b = 0; b < batch; ++b)
    part.middleRows(b * n, n) = all.middleRows(b * total + t0, n);
  return part;
}

// Runs `layer` incrementally over x [batch·total, model_dim], one call per entry of `chunks`
// (their sizes, summing to total), and returns y [batch·total, model_dim] reassembled.
template <class Layer, class Storage>
RowMatrix run_incremental(Layer& layer, KvCache<Storage>& cache, const RowMatrix& x,
                          std::int64_t batch, const std::vector<std::int64_t>& chunks,
                          int threads = 0) {
  const std::int64_t total = x.rows() / batch;
  RowMatrix y_all(x.rows(), x.cols()), y;
  std::int64_t t0 = 0;
  for (std::int64_t n : chunks) {
    layer.forward(slice(x, batch, t0, n), cache, y, ForwardOptions{batch, threads});
    for (std::int64_t b = 0; b < batch; ++b)
      y_all.middleRows(b * total + t0, n) = y.middleRows(b * n, n);
    t0 += n;
  }
  return y_all;
}

// The naive module in double, run as the incremental forward runs it: chunk by chunk, each
// chunk's queries over every token so far, causal, with K and V as a Storage cache holds them —
// rounded once to Storage, except in the first chunk, a prefill into an empty cache, which reads
// its fresh K/V. With a rope, q and k are rotated at their positions in the whole sequence before
// anything is cached. With float storage this is the naive module over all tokens.
template <class Storage>
std::vector<double> naive_incremental(const naive::ModuleShape& m, const naive::ModuleWeights& w,
                                      const std::vector<float>& x, std::int64_t batch,
                                      const std::vector<std::int64_t>& chunks) {
  const std::int64_t rows = static_cast<std::int64_t>(x.size()) / m.model_dim;
  const std::int64_t total = rows / batch;
  const std::int64_t kd = m.kv_groups * m.head_dim, vd = m.kv_groups * m.value_dim;
  const std::int64_t qd = m.heads * m.head_dim, od = m.heads * m.value_dim;
  std::vector<double> q = naive::linear<double>(x, rows, m.model_dim, w.wq, qd, w.bq);
  std::vector<double> k = naive::linear<double>(x, rows, m.model_dim, w.wk, kd, w.bk);
  const std::vector<double> v = naive::linear<double>(x, rows, m.model_dim, w.wv, vd, w.bv);
  if (m.rope) {
    const std::vector<std::int64_t> positions = naive::sequence_positions(batch, total);
    naive::rotate(q, m.heads, m.head_dim, *m.rope, positions);
    naive::rotate(k, m.kv_groups, m.head_dim, *m.rope, positions);
  }
  // As a cache holds them: fp32 as projected, then rounded once to Storage.
  const auto cached = [](std::vector<double> values) {
    for (double& x : values) x = stored<Storage>(static_cast<float>(x));
    return values;
  };
  const std::vector<double> k_cached = cached(k), v_cached = cached(v);

  std::vector<double> attended(static_cast<std::size_t>(rows * od));
  std::int64_t t0 = 0;
  for (std::int64_t n : chunks) {
    const std::vector<double>& keys = t0 == 0 ? k : k_cached;
    const std::vector<double>& values = t0 == 0 ? v : v_cached;
    naive::AttentionShape s;
    s.q_len = n;
    s.kv_len = t0 + n;
    s.heads = m.heads;
    s.kv_groups = m.kv_groups;
    s.head_dim = m.head_dim;
    s.value_dim = m.value_dim;
    for (std::int64_t b = 0; b < batch; ++b) {  // one sequence at a time: its rows are contiguous
      const std::size_t first = static_cast<std::size_t>(b * total);
      const naive::AttentionResult<double> a = naive::attention<double>(
          s, q.data() + (first + static_cast<std::size_t>(t0)) * static_cast<std::size_t>(qd),
          keys.data() + first * static_cast<std::size_t>(kd),
          values.data() + first * static_cast<std::size_t>(vd), m.causal, m.scale);
      std::copy(a.o.begin(), a.o.end(),
                attended.begin() + static_cast<std::ptrdiff_t>((first + t0) * od));
    }
    t0 += n;
  }
  return naive::linear<double>(attended, rows, od, w.wo, m.model_dim, w.bo);
}

double max_abs_error(const RowMatrix& a, const RowMatrix& b) {
  return (a.cast<double>() - b.cast<double>()).cwiseAbs().maxCoeff();
}

// What a case measures: the library's incremental output against its forward over all tokens
// and against the naive double module, with the bounds of the header comment.
struct Comparison {
  double vs_forward = 0, forward_bound = 0;  // max|incremental - forward| and its bound
  double vs_exact = 0, exact_bound = 0;      // max|incremental - naive double| and its bound
  double rounding = 0;                       // what the cache's rounding does to the naive model
};

template <class Storage>
Comparison compare(const RowMatrix& incremental, const RowMatrix& forward, const LayerConfig& c,
                   const naive::ModuleWeights& w, const std::vector<float>& x, std::int64_t batch,
                   const std::vector<std::int64_t>& chunks) {
  const naive::ModuleShape m = shape_of(c);
  const std::vector<double> exact = naive::module_forward<double>(m, w, x, batch);
  const std::vector<float> fp32 = naive::module_forward<float>(m, w, x, batch);
  const std::vector<float> lib = to_vector(incremental);
  Comparison r;
  r.rounding = naive::max_abs_error(naive_incremental<Storage>(m, w, x, batch, chunks), exact);
  r.vs_forward = max_abs_error(incremental, forward);
  r.forward_bound = 1e-5 * forward.cwiseAbs().maxCoeff() + 2.0 * r.rounding;
  r.vs_exact = naive::max_abs_error(lib, exact);
  r.exact_bound = 2.0 * (naive::max_abs_error(fp32, exact) + r.rounding) + 1e-6;
  return r;
}

// Prefill and steps as `chunks` says, for a layer of `config`, must match the forward over all
// tokens.
template <class Layer, class Storage>
void check_incremental(const LayerConfig& config, std::int64_t batch,
                       const std::vector<std::int64_t>& chunks, std::uint64_t seed,
                       int threads = 0) {
  SCOPED_TRACE(std::string(Layer::variant_name()) + ", " + storage_name<Storage>() +
               " cache, batch " + std::to_string(batch) + ", chunks " + describe(chunks) +
               ", threads " + std::to_string(threads));
  Layer layer(config);
  layer.init_random(seed);
  const std::int64_t total = sum(chunks);
  const std::vector<float> x = naive::random_vector(batch * total * config.model_dim, seed + 1);
  const RowMatrix x_all = Eigen::Map<const RowMatrix>(x.data(), batch * total, config.model_dim);
  KvCache<Storage> cache(batch, total + 3, config.kv_groups, config.head_dim, config.v_dim());

  const RowMatrix incremental = run_incremental(layer, cache, x_all, batch, chunks, threads);
  EXPECT_EQ(cache.length(), total);
  const RowMatrix forward = layer.forward(x_all, ForwardOptions{batch, threads});
  ASSERT_TRUE(incremental.allFinite());
  EXPECT_GT(forward.cwiseAbs().maxCoeff(), 1e-2) << "a degenerate case: the output is ~0";

  const Comparison r = compare<Storage>(incremental, forward, config, weights_of(layer), x, batch,
                                        chunks);
  EXPECT_LE(r.vs_forward, r.forward_bound) << "rounding term " << r.rounding;
  EXPECT_LE(r.vs_exact, r.exact_bound) << "rounding term " << r.rounding;
  // The rounding term is what rounding by u should do, so the bound means something: K and V
  // off by u relative move the output by less than u times its magnitude.
  EXPECT_LE(r.rounding, unit_roundoff<Storage>() * forward.cwiseAbs().maxCoeff());
  if (!std::is_same_v<Storage, float>) {
    EXPECT_GT(r.rounding, 0.0) << "the naive model of the cache rounded nothing";
  }
}

template <class Storage>
class IncrementalForward : public ::testing::Test {};

struct StorageNames {
  template <class T>
  static std::string GetName(int) {
    return storage_name<T>();
  }
};

using Storages = test_support::StorageTypes;
TYPED_TEST_SUITE(IncrementalForward, Storages, StorageNames);

// Prefill lengths from 1 (the first step sees a one-token cache) to past one K/V tile.
const std::vector<std::int64_t> kPlans[] = {
    {1, 1, 1, 1, 1}, {7, 1, 1, 1, 1}, {16, 1, 1}, {33, 1, 1, 1}};

TYPED_TEST(IncrementalForward, MultiHeadPrefillThenSteps) {
  for (std::int64_t batch : {1, 2})
    for (const auto& plan : kPlans)
      check_incremental<multihead::MHA, TypeParam>(causal_config(48, 4, 4, 12, true), batch, plan,
                                                   static_cast<std::uint64_t>(10 + batch));
}

TYPED_TEST(IncrementalForward, GroupedQueryPrefillThenSteps) {
  for (std::int64_t batch : {1, 2})
    for (const auto& plan : kPlans)
      check_incremental<multihead::GQA, TypeParam>(causal_config(64, 8, 2, 16, false), batch, plan,
                                                   static_cast<std::uint64_t>(20 + batch));
}

TYPED_TEST(IncrementalForward, MultiQueryPrefillThenSteps) {
  for (std::int64_t batch : {1, 2})
    for (const auto& plan : kPlans)
      check_incremental<multihead::MQA, TypeParam>(causal_config(32, 4, 1, 8, true), batch, plan,
                                                   static_cast<std::uint64_t>(30 + batch));
}

// A prefill in chunks: the later chunks attend over the cache, causally within themselves.
TYPED_TEST(IncrementalForward, ChunkedPrefillThenSteps) {
  for (std::int64_t batch : {1, 2}) {
    check_incremental<multihead::GQA, TypeParam>(causal_config(64, 8, 2, 16, true), batch,
                                                 {5, 6, 1, 1}, 40);
    check_incremental<multihead::MQA, TypeParam>(causal_config(32, 4, 1, 8, false, 20), batch,
                                                 {1, 9, 4, 1}, 41);
    check_incremental<multihead::MHA, TypeParam>(causal_config(40, 5, 5, 8, true, 4), batch,
                                                 {3, 3, 3, 1, 1}, 42);
  }
}

// Head dim 128 (the kernels' fixed-size path) over contexts of several K/V tiles, on one and two
// threads: GQA with few query rows per K/V head, and MQA with many (16 heads on one), whose single
// sequence leaves the second thread to share the cache.
TYPED_TEST(IncrementalForward, HeadDim128LongerContextAndThreads) {
  for (int threads : {1, 2}) {
    check_incremental<multihead::GQA, TypeParam>(causal_config(128, 4, 2, 128, true), 2,
                                                 {70, 1, 1, 1}, 50, threads);
    check_incremental<multihead::MQA, TypeParam>(causal_config(64, 16, 1, 128, false), 1,
                                                 {150, 1, 1}, 51, threads);
  }
}

// With a rope, each call rotates its tokens at their true positions, from the cache's length on:
// the same plans as above, both layouts, whole and partial rotary, and a long-context base.
TYPED_TEST(IncrementalForward, RopePrefillThenSteps) {
  using multihead::RopeLayout;
  for (std::int64_t batch : {1, 2})
    for (RopeLayout layout : {RopeLayout::rotate_half, RopeLayout::interleaved}) {
      const std::uint64_t seed = 100 + static_cast<std::uint64_t>(batch) * 10 +
                                 (layout == RopeLayout::interleaved) * 5;
      for (const auto& plan : kPlans) {
        check_incremental<multihead::MHA, TypeParam>(
            with_rope(causal_config(48, 4, 4, 12, true), layout), batch, plan, seed);
        check_incremental<multihead::GQA, TypeParam>(
            with_rope(causal_config(64, 8, 2, 16, false), layout, 8, 500000.0), batch, plan,
            seed + 1);
        check_incremental<multihead::MQA, TypeParam>(
            with_rope(causal_config(32, 4, 1, 8, true, 12), layout, 4), batch, plan, seed + 2);
      }
      check_incremental<multihead::GQA, TypeParam>(
          with_rope(causal_config(64, 8, 2, 16, true), layout), batch, {5, 6, 1, 1}, seed + 3);
    }
  check_incremental<multihead::GQA, TypeParam>(
      with_rope(causal_config(128, 4, 2, 128, true), RopeLayout::rotate_half), 2, {70, 1, 1, 1},
      150, 2);
}

// A step rotated one position off, against the naive module: with the steps' q and k one
// position further on, the bound of the honest run is exceeded many times over.
TYPED_TEST(IncrementalForward, RopeStepAtTheWrongPositionIsCaught) {
  const LayerConfig c =
      with_rope(causal_config(64, 8, 2, 16, true), multihead::RopeLayout::rotate_half);
  const std::int64_t batch = 2, prefill = 8, total = 11;
  const std::vector<std::int64_t> chunks = {prefill, 1, 1, 1};
  multihead::GQA layer(c);
  layer.init_random(160);
  const std::vector<float> x = naive::random_vector(batch * total * c.model_dim, 161);
  const RowMatrix x_all = Eigen::Map<const RowMatrix>(x.data(), batch * total, c.model_dim);
  KvCache<TypeParam> cache(batch, total, c.kv_groups, c.head_dim);
  const RowMatrix incremental = run_incremental(layer, cache, x_all, batch, chunks);
  const RowMatrix forward = layer.forward(x_all, ForwardOptions{batch});
  const naive::ModuleWeights w = weights_of(layer);
  const Comparison r = compare<TypeParam>(incremental, forward, c, w, x, batch, chunks);
  ASSERT_LE(r.vs_exact, r.exact_bound);

  std::vector<std::int64_t> slipped = naive::sequence_positions(batch, total);
  for (std::int64_t& p : slipped)
    if (p >= prefill) p += 1;
  const std::vector<double> wrong =
      naive::module_forward<double>(shape_of(c), w, x, batch, slipped);
  EXPECT_GT(naive::max_abs_error(to_vector(incremental), wrong), 10 * r.exact_bound);
}

// The bounds catch the slip of one position: a step that also sees an extra token, or that
// misses the first one, differs from the forward by more than the bound allows.
TYPED_TEST(IncrementalForward, OffByOneTokenIsCaught) {
  const LayerConfig c = causal_config(64, 8, 2, 16, true);
  const std::int64_t batch = 2, prefill = 8, steps = 3, total = prefill + steps;
  const std::vector<std::int64_t> chunks = {prefill, 1, 1, 1};
  multihead::GQA layer(c);
  layer.init_random(60);
  const std::vector<float> x = naive::random_vector(batch * total * c.model_dim, 61);
  const RowMatrix x_all = Eigen::Map<const RowMatrix>(x.data(), batch * total, c.model_dim);
  const RowMatrix forward = layer.forward(x_all, ForwardOptions{batch});

  // The honest run, for its bound.
  KvCache<TypeParam> cache(batch, total + 1, c.kv_groups, c.head_dim);
  const RowMatrix honest = run_incremental(layer, cache, x_all, batch, chunks);
  const Comparison r = compare<TypeParam>(honest, forward, c, weights_of(layer), x, batch, chunks);
  ASSERT_LE(r.vs_forward, r.forward_bound);

  // One token too many: a copy of the last prefill token's K/V slipped in before the steps.
  cache.clear();
  RowMatrix y;
  layer.forward(slice(x_all, batch, 0, prefill), cache, y, ForwardOptions{batch});
  std::vector<float> k(static_cast<std::size_t>(batch * c.kv_groups * c.head_dim), 0.0f);
  std::vector<float> v(k.size(), 0.0f);
  for (std::int64_t b = 0; b < batch; ++b)
    for (std::int64_t g = 0; g < c.kv_groups; ++g)
      for (std::int64_t d = 0; d < c.head_dim; ++d) {
        const std::size_t at = static_cast<std::size_t>((b * c.kv_groups + g) * c.head_dim + d);
        k[at] = multihead::to_float(cache.keys().row(b, prefill - 1, g)[d]);
        v[at] = multihead::to_float(cache.values().row(b, prefill - 1, g)[d]);
      }
  const std::int64_t n = static_cast<std::int64_t>(k.size());
  cache.append(TensorView<const float>(k.data(), n, batch, 1, c.kv_groups, c.head_dim),
               TensorView<const float>(v.data(), n, batch, 1, c.kv_groups, c.head_dim));
  double worst = 0;
  for (std::int64_t t = prefill; t < total; ++t) {
    layer.forward(slice(x_all, batch, t, 1), cache, y, ForwardOptions{batch});
    worst = std::max(worst, max_abs_error(y, slice(forward, batch, t, 1)));
  }
  EXPECT_GT(worst, r.forward_bound) << "a step that saw an extra token passed";

  // One token too few: the same steps after a prefill that lacks the first token.
  cache.clear();
  layer.forward(slice(x_all, batch, 1, prefill - 1), cache, y, ForwardOptions{batch});
  worst = 0;
  for (std::int64_t t = prefill; t < total; ++t) {
    layer.forward(slice(x_all, batch, t, 1), cache, y, ForwardOptions{batch});
    worst = std::max(worst, max_abs_error(y, slice(forward, batch, t, 1)));
  }
  EXPECT_GT(worst, r.forward_bound) << "a step that missed a token passed";
}

// A prefill into an empty cache is forward(x) itself, bitwise, whatever the cache stores: it
// attends over the fresh fp32 K/V with the chosen kernel (rotated alike when there is a rope).
TEST(IncrementalForwardPrefill, EqualsForwardBitwise) {
  const LayerConfig configs[] = {
      causal_config(64, 8, 2, 16, true),
      with_rope(causal_config(64, 8, 2, 16, true), multihead::RopeLayout::interleaved, 10)};
  for (const LayerConfig& c : configs) {
    multihead::GQA layer(c);
    layer.init_random(70);
    const RowMatrix x =
        Eigen::Map<const RowMatrix>(naive::random_vector(2 * 9 * 64, 71).data(), 18, 64);
    for (KernelChoice kernel : {KernelChoice::fused, KernelChoice::reference}) {
      const ForwardOptions options{2, 1, kernel};
      KvCache<float> f32(2, 9, 2, 16);
      KvCache<bf16> b16(2, 9, 2, 16);
      const RowMatrix expected = layer.forward(x, options);
      EXPECT_TRUE(layer.forward(x, f32, options) == expected);
      EXPECT_TRUE(layer.forward(x, b16, options) == expected);
      EXPECT_EQ(b16.length(), 9);
    }
  }
}

// options.batch may be left at 1 (the cache's batch is used) or given; after clear() the same
// sequence gives the same outputs, and the returning overload equals the one writing into y.
TEST(IncrementalForwardPrefill, BatchDefaultClearAndOverloads) {
  const LayerConfig c = causal_config(32, 4, 1, 8, true);
  multihead::MQA layer(c);
  layer.init_random(80);
  const RowMatrix x =
      Eigen::Map<const RowMatrix>(naive::random_vector(2 * 6 * 32, 81).data(), 12, 32);
  KvCache<bf16> cache(2, 6, 1, 8);
  const RowMatrix first = run_incremental(layer, cache, x, 2, {4, 1, 1});
  cache.clear();
  RowMatrix y;
  RowMatrix again(12, 32);
  layer.forward(slice(x, 2, 0, 4), cache, y);  // options.batch left at 1
  again.topRows(4) = y.topRows(4);
  again.middleRows(6, 4) = y.bottomRows(4);
  for (std::int64_t t = 4; t < 6; ++t) {
    const RowMatrix step = layer.forward(slice(x, 2, t, 1), cache);
    again.row(t) = step.row(0);
    again.row(6 + t) = step.row(1);
  }
  EXPECT_TRUE(again == first);
  EXPECT_EQ(cache.length(), 6);
}

// ---- Errors: thrown before the cache or y changes ----------------------------------------------

// The cache's K then V, as floats: its whole observable contents.
template <class Storage>
std::vector<float> contents(const KvCache<Storage>& cache) {
  std::vector<float> all;
  if (cache.length() == 0) return all;
  for (const TensorView<const Storage>& view : {cache.keys(), cache.values()})
    for (std::int64_t b = 0; b < view.batch(); ++b)
      for (std::int64_t t = 0; t < view.tokens(); ++t)
        for (std::int64_t h = 0; h < view.heads(); ++h)
          for (std::int64_t d = 0; d < view.dim(); ++d)
            all.push_back(multihead::to_float(view.row(b, t, h)[d]));
  return all;
}

// forward(x, cache, y, options) must throw std::invalid_argument mentioning each of `parts`,
// leaving the cache's length and contents and y exactly as they were.
template <class Layer, class Storage>
void expect_rejected(Layer& layer, const RowMatrix& x, KvCache<Storage>& cache,
                     const ForwardOptions& options, const std::vector<std::string>& parts) {
  const std::int64_t length = cache.length();
  const std::vector<float> before = contents(cache);
  RowMatrix y = RowMatrix::Constant(x.rows(), layer.config().model_dim, 7.0f);
  const RowMatrix y_before = y;
  try {
    layer.forward(x, cache, y, options);
    ADD_FAILURE() << "no exception";
  } catch (const std::invalid_argument& error) {
    const std::string message = error.what();
    for (const std::string& part : parts)
      EXPECT_NE(message.find(part), std::string::npos)
          << "'" << part << "' missing from: " << message;
  }
  EXPECT_EQ(cache.length(), length);
  EXPECT_EQ(contents(cache), before);
  EXPECT_TRUE(y == y_before) << "y was written";
}

// A cache with a few tokens in it already, so that "unchanged" means something.
template <class Storage>
KvCache<Storage> filled_cache(std::int64_t batch, std::int64_t capacity, std::int64_t groups,
                              std::int64_t head_dim, std::int64_t value_dim, std::int64_t tokens) {
  KvCache<Storage> cache(batch, capacity, groups, head_dim, value_dim);
  const std::vector<float> k = naive::random_vector(batch * tokens * groups * head_dim, 5);
  const std::vector<float> v = naive::random_vector(batch * tokens * groups * value_dim, 6);
  cache.append(TensorView<const float>(k.data(), static_cast<std::int64_t>(k.size()), batch,
                                       tokens, groups, head_dim),
               TensorView<const float>(v.data(), static_cast<std::int64_t>(v.size()), batch,
                                       tokens, groups, value_dim));
  return cache;
}

TEST(IncrementalForwardErrors, CacheShapeMustMatchTheLayer) {
  const LayerConfig c = causal_config(64, 8, 2, 16, true, 24);
  multihead::GQA layer(c);
  layer.init_random(90);
  const RowMatrix x = RowMatrix::Random(2, 64);
  auto groups = filled_cache<bf16>(2, 8, 4, 16, 24, 3);
  expect_rejected(layer, x, groups, {}, {"kv_groups (4)", "layer's kv_groups (2)"});
  auto head_dim = filled_cache<float>(2, 8, 2, 8, 24, 3);
  expect_rejected(layer, x, head_dim, {}, {"head_dim (8)", "layer's head_dim (16)"});
  auto value_dim = filled_cache<fp16>(2, 8, 2, 16, 16, 3);
  expect_rejected(layer, x, value_dim, {}, {"value_dim (16)", "layer's value_dim (24)"});
}

TEST(IncrementalForwardErrors, CapacityOverflowLeavesEverythingAsItWas) {
  const LayerConfig c = causal_config(32, 4, 2, 8, false);
  multihead::GQA layer(c);
  layer.init_random(91);
  const RowMatrix x = RowMatrix::Random(2 * 7, 32);
  KvCache<bf16> cache(2, 6, 2, 8);
  RowMatrix y;
  layer.forward(slice(x, 2, 0, 4), cache, y);
  expect_rejected(layer, slice(x, 2, 4, 3), cache, {}, {"3 tokens", "room for 2", "capacity 6"});
  // An empty cache too small for the prefill.
  KvCache<float> small(2, 2, 2, 8);
  expect_rejected(layer, slice(x, 2, 0, 3), small, {}, {"room for 2"});
  // Exactly filling the cache is fine; one more step is not.
  layer.forward(slice(x, 2, 4, 2), cache, y);
  EXPECT_EQ(cache.length(), 6);
  expect_rejected(layer, slice(x, 2, 0, 1), cache, {}, {"room for 0"});
}

TEST(IncrementalForwardErrors, BatchAndInputMustMatch) {
  const LayerConfig c = causal_config(32, 4, 1, 8, true);
  multihead::MQA layer(c);
  layer.init_random(92);
  auto cache = filled_cache<float>(2, 8, 1, 8, 8, 2);
  expect_rejected(layer, RowMatrix::Random(6, 32), cache, ForwardOptions{3},
                  {"batch (3)", "cache's batch (2)"});
  expect_rejected(layer, RowMatrix::Random(3, 32), cache, {}, {"x.rows (3)", "batch (2)"});
  expect_rejected(layer, RowMatrix::Random(2, 31), cache, {}, {"x.cols (31)", "model_dim (32)"});
  expect_rejected(layer, RowMatrix::Random(2, 32), cache, ForwardOptions{2, -1},
                  {"threads (-1)"});
  // The same call with options.batch 2 is fine.
  RowMatrix y;
  layer.forward(RowMatrix::Random(2, 32), cache, y, ForwardOptions{2});
  EXPECT_EQ(cache.length(), 3);
}

}  // namespace
