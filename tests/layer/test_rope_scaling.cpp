// RoPE scaling (rope_scaling.hpp) against its formulas written out below in plain double loops,
// sharing no code with the library: a table's inverse frequencies and attention factor to 1e-6
// relative, and rotations far past the trained context (three times it) against cos and sin of
// those frequencies. The configs are published ones: Llama 3.1's llama3 scaling, a Qwen-style
// yarn and DeepSeek-V3's yarn (with and without mscale). Dynamic scaling is checked for the
// context each call rotates at, through apply_rope and through the caches of a dense layer (its
// steps and a step over sequences) and of an MLA layer.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include <multihead/multihead.hpp>

#include "support/module_testing.hpp"
#include "support/naive_reference.hpp"
#include "support/testing.hpp"

namespace {

using multihead::apply_rope;
using multihead::KvCache;
using multihead::LatentCache;
using multihead::LatentConfig;
using multihead::LatentWeight;
using multihead::LayerConfig;
using multihead::RopeConfig;
using multihead::RopeLayout;
using multihead::RopeScaling;
using multihead::RopeScalingType;
using multihead::RopeTable;
using multihead::RowMatrix;
using multihead::Span;
using multihead::TensorView;

const double kPi = std::acos(-1.0);

// ---- The formulas, written out ------------------------------------------------------------------

std::vector<double> default_frequencies(std::int64_t d, double base) {
  std::vector<double> inv;
  for (std::int64_t i = 0; i < d / 2; ++i)
    inv.push_back(1.0 / std::pow(base, static_cast<double>(2 * i) / static_cast<double>(d)));
  return inv;
}

std::vector<double> linear_frequencies(std::int64_t d, double base, double factor) {
  std::vector<double> inv = default_frequencies(d, base);
  for (double& f : inv) f = f / factor;
  return inv;
}

// Dynamic NTK at context length `context`: the default frequencies of a larger base.
std::vector<double> dynamic_frequencies(std::int64_t d, double base, double factor,
                                        std::int64_t original, std::int64_t context) {
  const double length = static_cast<double>(std::max(context, original));
  const double stretched =
      base * std::pow(factor * length / static_cast<double>(original) - (factor - 1.0),
                      static_cast<double>(d) / static_cast<double>(d - 2));
  return default_frequencies(d, stretched);
}

std::vector<double> llama3_frequencies(std::int64_t d, double base, double factor, double low,
                                       double high, std::int64_t original) {
  const double context = static_cast<double>(original);
  std::vector<double> inv = default_frequencies(d, base);
  for (double& f : inv) {
    const double wavelength = 2.0 * kPi / f;
    if (wavelength > context / low) {
      f = f / factor;
    } else if (wavelength >= context / high) {
      const double smooth = (context / wavelength - low) / (high - low);
      f = (1.0 - smooth) * f / factor + smooth * f;
    }
  }
  return inv;
}

struct Yarn {
  double base;
  std::int64_t d;
  double factor;
  std::int64_t original;
  double beta_fast = 32.0, beta_slow = 1.0;
  double mscale = 0.0, mscale_all_dim = 0.0;
  bool truncate = true;

  RopeScaling scaling() const {
    RopeScaling s;
    s.type = RopeScalingType::yarn;
    s.factor = factor;
    s.original_context = original;
    s.beta_fast = beta_fast;
    s.beta_slow = beta_slow;
    s.mscale = mscale;
    s.mscale_all_dim = mscale_all_dim;
    s.truncate = truncate;
    return s;
  }
};

// The dim at which a pair turns `turns` times over the original context.
double yarn_dim(const Yarn& y, double turns) {
  return static_cast<double>(y.d) *
         std::log(static_cast<double>(y.original) / (turns * 2.0 * kPi)) /
         (2.0 * std::log(y.base));
}

std::vector<double> yarn_frequencies(const Yarn& y) {
  double low = yarn_dim(y, y.beta_fast), high = yarn_dim(y, y.beta_slow);
  if (y.truncate) {
    low = std::floor(low);
    high = std::ceil(high);
  }
  if (low < 0.0) low = 0.0;
  if (high > static_cast<double>(y.d - 1)) high = static_cast<double>(y.d - 1);
  if (low == high) high += 0.001;
  std::vector<double> inv;
  for (std::int64_t i = 0; i < y.d / 2; ++i) {
    const double kept = 1.0 / std::pow(y.base, static_cast<double>(2 * i) / y.d);
    const double slowed = kept / y.factor;
    double ramp = (static_cast<double>(i) - low) / (high - low);
    if (ramp < 0.0) ramp = 0.0;
    if (ramp > 1.0) ramp = 1.0;
    inv.push_back(slowed * ramp + kept * (1.0 - ramp));
  }
  return inv;
}

double yarn_m(double s, double k) { return s <= 1.0 ? 1.0 : 0.1 * k * std::log(s) + 1.0; }

double yarn_attention(const Yarn& y) {
  if (y.mscale != 0.0 && y.mscale_all_dim != 0.0)
    return yarn_m(y.factor, y.mscale) / yarn_m(y.factor, y.mscale_all_dim);
  return yarn_m(y.factor, 1.0);
}

// The published configs.
RopeScaling llama31() {
  RopeScaling s;
  s.type = RopeScalingType::llama3;
  s.factor = 8.0;
  s.low_freq_factor = 1.0;
  s.high_freq_factor = 4.0;
  s.original_context = 8192;
  return s;
}
const Yarn kQwen{1e6, 128, 4.0, 32768};
const Yarn kDeepSeekV3{10000.0, 64, 40.0, 4096, 32.0, 1.0, 1.0, 1.0};

RopeConfig rope_of(double base, RopeScaling scaling,
                   RopeLayout layout = RopeLayout::rotate_half) {
  RopeConfig c;
  c.base = base;
  c.layout = layout;
  c.scaling = scaling;
  return c;
}

// ---- Checks -------------------------------------------------------------------------------------

::testing::AssertionResult relatively_close(const std::vector<double>& lib,
                                            const std::vector<double>& expected,
                                            double tolerance = 1e-6) {
  if (lib.size() != expected.size())
    return ::testing::AssertionFailure() << lib.size() << " frequencies, expected "
                                         << expected.size();
  for (std::size_t i = 0; i < lib.size(); ++i)
    if (!(std::abs(lib[i] - expected[i]) <= tolerance * std::abs(expected[i])))
      return ::testing::AssertionFailure() << "pair " << i << ": " << lib[i] << ", expected "
                                           << expected[i];
  return ::testing::AssertionSuccess();
}

// x rotated in double at positions positions[t] by frequencies `inv` and cos/sin factor
// `attention`; x is [tokens, heads, d], the first `d` dims of each row rotating.
std::vector<double> rotated_exactly(const std::vector<float>& x, std::int64_t heads,
                                    std::int64_t d, RopeLayout layout,
                                    const std::vector<std::int64_t>& positions,
                                    const std::function<std::vector<double>(std::int64_t)>& inv_of,
                                    double attention) {
  std::vector<double> out(x.begin(), x.end());
  const std::int64_t pairs = d / 2;
  for (std::size_t t = 0; t < positions.size(); ++t) {
    const std::vector<double> inv = inv_of(static_cast<std::int64_t>(t));
    for (std::int64_t h = 0; h < heads; ++h) {
      double* row = out.data() + (static_cast<std::int64_t>(t) * heads + h) * d;
      for (std::int64_t i = 0; i < pairs; ++i) {
        const double angle = static_cast<double>(positions[t]) * inv[static_cast<std::size_t>(i)];
        const double c = std::cos(angle) * attention, s = std::sin(angle) * attention;
        double& a = layout == RopeLayout::rotate_half ? row[i] : row[2 * i];
        double& b = layout == RopeLayout::rotate_half ? row[pairs + i] : row[2 * i + 1];
        const double a0 = a, b0 = b;
        a = a0 * c - b0 * s;
        b = b0 * c + a0 * s;
      }
    }
  }
  return out;
}

// The library's rotation of random tokens at positions [offset, offset + 3), from a table that
// covers them, against rotated_exactly: the largest error over max|x|·attention.
double rotation_error(const RopeConfig& c, std::int64_t d, std::int64_t offset,
                      const std::vector<double>& inv, double attention, std::uint64_t seed) {
  const std::int64_t tokens = 3, heads = 2;
  const std::vector<float> x = naive::random_vector(tokens * heads * d, seed);
  std::vector<float> lib = x;
  const RopeTable table(c, d, offset + tokens);
  apply_rope(table, TensorView<float>(lib.data(), tokens * heads * d, 1, tokens, heads, d), offset);
  const std::vector<double> exact = rotated_exactly(
      x, heads, d, c.layout, {offset, offset + 1, offset + 2},
      [&](std::int64_t) { return inv; }, attention);
  return naive::max_abs_error(lib, exact) / (naive::max_abs(x) * attention);
}

// Runs `body`, expecting std::invalid_argument whose message contains every one of `parts`.
void expect_invalid(const std::function<void()>& body, const std::vector<std::string>& parts) {
  test_support::expect_invalid(body, parts, __FILE__, __LINE__);
}

// ---- Linear -------------------------------------------------------------------------------------

TEST(RopeScalingLinear, FrequenciesAndRotationFarOut) {
  RopeScaling s;
  s.type = RopeScalingType::linear;
  s.factor = 4.0;
  const RopeConfig c = rope_of(10000.0, s);
  const RopeTable table(c, 128);
  const std::vector<double> expected = linear_frequencies(128, 10000.0, 4.0);
  EXPECT_TRUE(relatively_close(table.inverse_frequencies(), expected));
  EXPECT_EQ(table.attention_factor(), 1.0);
  EXPECT_LE(rotation_error(c, 128, 3 * 4096, expected, 1.0, 1), 1e-6);
  // What linear scaling means: position 4p turns as position p did (angles exact in double:
  // the factor is a power of two).
  const RopeTable plain(rope_of(10000.0, RopeScaling()), 128, 1001);
  const RopeTable scaled(c, 128, 4001);
  EXPECT_TRUE(std::equal(plain.cos(1000), plain.cos(1000) + 128, scaled.cos(4000)));
  EXPECT_FALSE(std::equal(plain.cos(1000), plain.cos(1000) + 128, scaled.cos(1000)));
}

// ---- Dynamic ------------------------------------------------------------------------------------

RopeScaling dynamic(double factor, std::int64_t original) {
  RopeScaling s;
  s.type = RopeScalingType::dynamic;
  s.factor = factor;
  s.original_context = original;
  return s;
}

TEST(RopeScalingDynamic, FrequenciesByContextLength) {
  const RopeConfig c = rope_of(500000.0, dynamic(4.0, 8192));
  const RopeTable table(c, 128);
  const std::vector<double> plain = default_frequencies(128, 500000.0);
  EXPECT_TRUE(relatively_close(table.inverse_frequencies(), plain));  // the rows' frequencies
  EXPECT_EQ(table.attention_factor(), 1.0);
  // Within the trained context: the default frequencies, exactly those of the rows.
  for (std::int64_t context : {1, 4096, 8192}) {
    SCOPED_TRACE(context);
    EXPECT_EQ(table.inverse_frequencies(context), table.inverse_frequencies());
    EXPECT_TRUE(table.uses_rows(context));
  }
  // Past it: base'.
  for (std::int64_t context : {8193, 3 * 8192, 1000000}) {
    SCOPED_TRACE(context);
    const std::vector<double> expected = dynamic_frequencies(128, 500000.0, 4.0, 8192, context);
    EXPECT_TRUE(relatively_close(table.inverse_frequencies(context), expected));
    EXPECT_FALSE(relatively_close(expected, plain));  // a different rotation
    EXPECT_FALSE(table.uses_rows(context));
  }
}

// apply_rope rotates a call at its context, offset + tokens: within the trained context from the
// rows, past it with cos and sin of its own; the table never holds more than original_context
// rows, however far a call goes.
TEST(RopeScalingDynamic, ApplyRopeRotatesAtTheCallsContext) {
  const std::int64_t d = 64, original = 4096;
  for (RopeLayout layout : {RopeLayout::rotate_half, RopeLayout::interleaved}) {
    const RopeConfig c = rope_of(10000.0, dynamic(2.0, original), layout);
    RopeTable table(c, d, 1000000);
    EXPECT_EQ(table.positions(), original);
    table.reserve(std::int64_t(1) << 40);
    EXPECT_EQ(table.positions(), original);
    const std::int64_t tokens = 3, heads = 2;
    for (std::int64_t offset : {std::int64_t(0), std::int64_t(4093), std::int64_t(4094),
                                3 * original, std::int64_t(1000000000)}) {
      SCOPED_TRACE("offset " + std::to_string(offset));
      const std::vector<float> x = naive::random_vector(tokens * heads * d, 7);
      std::vector<float> lib = x;
      apply_rope(table, TensorView<float>(lib.data(), tokens * heads * d, 1, tokens, heads, d),
                 offset);
      const std::int64_t context = offset + tokens;
      const auto inv_at = [&](std::int64_t at) {
        return [&, at](std::int64_t) {
          return dynamic_frequencies(d, 10000.0, 2.0, original, at);
        };
      };
      const std::vector<std::int64_t> positions = {offset, offset + 1, offset + 2};
      const double error =
          naive::max_abs_error(lib, rotated_exactly(x, heads, d, layout, positions,
                                                    inv_at(context), 1.0));
      EXPECT_LE(error, 1e-6 * naive::max_abs(x));
      if (context > original + 1) {  // the context one short is another rotation
        const double off = naive::max_abs_error(
            lib, rotated_exactly(x, heads, d, layout, positions, inv_at(context - 1), 1.0));
        EXPECT_GT(off, 1e-4 * naive::max_abs(x));
      }
    }
  }
}

TEST(RopeScalingDynamic, ExplicitContextAndItsErrors) {
  const std::int64_t d = 16;
  const RopeConfig c = rope_of(10000.0, dynamic(2.0, 8));
  const RopeTable table(c, d, 4);
  const std::vector<float> x = naive::random_vector(2 * d, 8);
  const auto rotate = [&](std::int64_t offset, std::int64_t context) {
    std::vector<float> out = x;
    apply_rope(table, TensorView<float>(out.data(), 2 * d, 1, 1, 2, d), offset, context);
    return out;
  };
  // One token at position 3, rotated in a call of context 40 (other tokens of the call reach
  // further): base' of 40, not the default of its own position.
  const std::vector<double> expected = rotated_exactly(
      x, 2, d, RopeLayout::rotate_half, {3},
      [&](std::int64_t) { return dynamic_frequencies(d, 10000.0, 2.0, 8, 40); }, 1.0);
  EXPECT_LE(naive::max_abs_error(rotate(3, 40), expected), 1e-6 * naive::max_abs(x));
  EXPECT_GT(naive::max_abs_error(rotate(3, 4), expected), 1e-3);
  std::vector<float> untouched = x;
  const TensorView<float> view(untouched.data(), 2 * d, 1, 1, 2, d);
  expect_invalid([&] { apply_rope(table, view, 5, 5); },
                 {"positions [5, 6) from offset", "past the call's context (5 positions)"});
  // Within the original context the rows serve, and must be there.
  expect_invalid([&] { apply_rope(table, view, 4, 6); },
                 {"positions [4, 5)", "exceed the rope table's 4 positions"});
  expect_invalid([&] { apply_rope(table, view, -1, 9); }, {"offset (-1) must not be negative"});
  EXPECT_EQ(untouched, x);
}

// A dense layer's keys as its cache keeps them: token p of a prefill of n tokens rotated at
// context n, of a later step at p + 1 (Hugging Face's torch.max(position_ids) + 1), within the
// trained context the default rotation.
TEST(RopeScalingDynamic, DenseLayerStepsRotateAtTheirContext) {
  const std::int64_t d = 16, groups = 2, original = 16, total = 40;
  const double factor = 4.0, base = 10000.0;
  LayerConfig config = module_testing::make_config(32, 4, groups, d, false, true);
  config.rope = rope_of(base, dynamic(factor, original));
  multihead::GQA layer(config);
  layer.init_random(11);
  const std::vector<float> x = naive::random_vector(total * 32, 12);
  const RowMatrix xm = Eigen::Map<const RowMatrix>(x.data(), total, 32);
  const RowMatrix k = (xm.cast<double>() * layer.weight(multihead::Projection::k)
                                               .cast<double>()
                                               .transpose())
                          .cast<float>();  // [total, groups·d], exact to float rounding
  for (std::int64_t prefill : {10, 20}) {
    SCOPED_TRACE("prefill " + std::to_string(prefill));
    KvCache<float> cache(1, total, groups, d);
    RowMatrix y;
    layer.forward(xm.topRows(prefill), cache, y);
    for (std::int64_t p = prefill; p < total; ++p) layer.forward(xm.middleRows(p, 1), cache, y);
    const auto context_of = [&](std::int64_t p) { return p < prefill ? prefill : p + 1; };
    for (std::int64_t p = 0; p < total; ++p) {
      const std::vector<float> key(k.row(p).data(), k.row(p).data() + groups * d);
      std::vector<float> cached;
      for (std::int64_t g = 0; g < groups; ++g)
        cached.insert(cached.end(), cache.keys().row(0, p, g), cache.keys().row(0, p, g) + d);
      const auto expected_at = [&](std::int64_t context) {
        return rotated_exactly(key, groups, d, RopeLayout::rotate_half, {p}, [&](std::int64_t) {
          return dynamic_frequencies(d, base, factor, original, context);
        }, 1.0);
      };
      const double scale = naive::max_abs(key);
      EXPECT_LE(naive::max_abs_error(cached, expected_at(context_of(p))), 1e-5 * scale)
          << "position " << p;
      if (p >= original) {  // a step one context short would be caught
        EXPECT_GT(naive::max_abs_error(cached, expected_at(context_of(p) - 1)), 1e-3 * scale)
            << "position " << p;
      }
    }
  }
}

// A step over sequences is one call: every new token rotates at the step's context, the last
// position of any of them plus one, here sequence 0's.
TEST(RopeScalingDynamic, DenseStepOverSequencesRotatesAtTheStepsContext) {
  const std::int64_t d = 16, groups = 1, original = 16;
  LayerConfig config = module_testing::make_config(32, 2, groups, d, false, true);
  config.rope = rope_of(10000.0, dynamic(2.0, original));
  multihead::MQA layer(config);
  layer.init_random(13);
  const std::vector<float> x = naive::random_vector(34 * 32, 14);
  const RowMatrix xm = Eigen::Map<const RowMatrix>(x.data(), 34, 32);
  KvCache<float> cache(2, 40, groups, d);
  RowMatrix y;
  const std::int64_t first_ids[] = {0}, first_cu[] = {0, 30};
  layer.forward(xm.topRows(30), Span<const std::int64_t>{first_cu, 2}, cache,
                Span<const std::int64_t>{first_ids, 1}, y);
  const std::int64_t ids[] = {0, 1}, cu[] = {0, 1, 4};  // 0: position 30; 1: positions 0, 1, 2
  layer.forward(xm.bottomRows(4), Span<const std::int64_t>{cu, 3}, cache,
                Span<const std::int64_t>{ids, 2}, y);
  const RowMatrix k = xm * layer.weight(multihead::Projection::k).transpose();
  const auto check = [&](std::int64_t slot, std::int64_t p, std::int64_t row,
                         std::int64_t context) {
    const std::vector<float> key(k.row(row).data(), k.row(row).data() + d);
    const std::vector<float> cached(cache.keys().row(slot, p, 0), cache.keys().row(slot, p, 0) + d);
    const std::vector<double> expected =
        rotated_exactly(key, 1, d, RopeLayout::rotate_half, {p}, [&](std::int64_t) {
          return dynamic_frequencies(d, 10000.0, 2.0, original, context);
        }, 1.0);
    EXPECT_LE(naive::max_abs_error(cached, expected), 1e-5 * naive::max_abs(key))
        << "slot " << slot << ", position " << p << ", context " << context;
  };
  check(0, 5, 5, 30);  // the prefill of 30
  check(0, 30, 30, 31);
  for (std::int64_t p = 0; p < 3; ++p) check(1, p, 31 + p, 31);
}

// MLA's decoupled RoPE key, as cached: the rope rows of kv_a_proj_with_mqa times the token,
// rotated (interleaved) at each call's context.
TEST(RopeScalingDynamic, LatentLayerStepsRotateAtTheirContext) {
  LatentConfig c;
  c.model_dim = 48;
  c.heads = 4;
  c.latent_dim = 24;
  c.nope_dim = 16;
  c.rope_dim = 8;
  c.value_dim = 12;
  c.rope_scaling = dynamic(2.0, 8);
  multihead::MLA layer(c);
  layer.init_random(15);
  const std::int64_t total = 20, prefill = 6;
  const std::vector<float> x = naive::random_vector(total * c.model_dim, 16);
  const RowMatrix xm = Eigen::Map<const RowMatrix>(x.data(), total, c.model_dim);
  LatentCache<float> cache(1, total, c.latent_dim, c.rope_dim);
  RowMatrix y;
  layer.forward(xm.topRows(prefill), cache, y);
  for (std::int64_t p = prefill; p < total; ++p) layer.forward(xm.middleRows(p, 1), cache, y);
  const RowMatrix k_rope =
      xm * layer.weight(LatentWeight::kv_a_proj_with_mqa).bottomRows(c.rope_dim).transpose();
  for (std::int64_t p = 0; p < total; ++p) {
    const std::int64_t context = p < prefill ? prefill : p + 1;
    const std::vector<float> key(k_rope.row(p).data(), k_rope.row(p).data() + c.rope_dim);
    const float* row = cache.keys().row(0, p, 0) + c.latent_dim;
    const std::vector<double> expected =
        rotated_exactly(key, 1, c.rope_dim, RopeLayout::interleaved, {p}, [&](std::int64_t) {
          return dynamic_frequencies(c.rope_dim, 10000.0, 2.0, 8, context);
        }, 1.0);
    EXPECT_LE(naive::max_abs_error(std::vector<float>(row, row + c.rope_dim), expected),
              1e-5 * naive::max_abs(key))
        << "position " << p;
  }
}

// ---- Llama 3 ------------------------------------------------------------------------------------

TEST(RopeScalingLlama3, Llama31FrequenciesAndRotationFarOut) {
  const RopeConfig c = rope_of(500000.0, llama31());
  const RopeTable table(c, 128);
  const std::vector<double> expected = llama3_frequencies(128, 500000.0, 8.0, 1.0, 4.0, 8192);
  EXPECT_TRUE(relatively_close(table.inverse_frequencies(), expected));
  EXPECT_EQ(table.attention_factor(), 1.0);
  // Every band is present: kept, slowed by the factor, and blended.
  const std::vector<double> plain = default_frequencies(128, 500000.0);
  int kept = 0, slowed = 0, blended = 0;
  for (std::size_t i = 0; i < plain.size(); ++i) {
    if (expected[i] == plain[i]) ++kept;
    else if (std::abs(expected[i] * 8.0 - plain[i]) <= 1e-12 * plain[i]) ++slowed;
    else ++blended;
  }
  EXPECT_GT(kept, 0);
  EXPECT_GT(slowed, 0);
  EXPECT_GT(blended, 0);
  EXPECT_LE(rotation_error(c, 128, 3 * 8192, expected, 1.0, 2), 1e-6);
}

// ---- YaRN ---------------------------------------------------------------------------------------

void check_yarn(const Yarn& y, RopeLayout layout, double attention, std::uint64_t seed) {
  const RopeConfig c = rope_of(y.base, y.scaling(), layout);
  const RopeTable table(c, y.d);
  const std::vector<double> expected = yarn_frequencies(y);
  EXPECT_TRUE(relatively_close(table.inverse_frequencies(), expected));
  EXPECT_NEAR(table.attention_factor(), yarn_attention(y), 1e-12);
  EXPECT_NEAR(table.attention_factor(), attention, 1e-12);
  // The ramp is not degenerate: some pairs are kept, some slowed, some in between.
  const std::vector<double> plain = default_frequencies(y.d, y.base);
  EXPECT_DOUBLE_EQ(expected.front(), plain.front());
  EXPECT_DOUBLE_EQ(expected.back(), plain.back() / y.factor);
  EXPECT_LE(rotation_error(c, y.d, 3 * y.original, expected, attention, seed), 1e-6);
}

TEST(RopeScalingYarn, QwenStyle) {
  check_yarn(kQwen, RopeLayout::rotate_half, 0.1 * std::log(4.0) + 1.0, 3);
}

TEST(RopeScalingYarn, DeepSeekV3) {
  check_yarn(kDeepSeekV3, RopeLayout::interleaved, 1.0, 4);  // mscale = mscale_all_dim: 1
  Yarn v2 = kDeepSeekV3;
  v2.mscale = v2.mscale_all_dim = 0.707;
  check_yarn(v2, RopeLayout::interleaved, 1.0, 5);
  Yarn defaults = kDeepSeekV3;
  defaults.mscale = defaults.mscale_all_dim = 0.0;  // neither set: m(factor, 1)
  check_yarn(defaults, RopeLayout::interleaved, 0.1 * std::log(40.0) + 1.0, 6);
  Yarn uneven = kDeepSeekV3;
  uneven.mscale_all_dim = 0.8;  // the ratio m(40, 1) / m(40, 0.8)
  check_yarn(uneven, RopeLayout::interleaved,
             (0.1 * std::log(40.0) + 1.0) / (0.08 * std::log(40.0) + 1.0), 7);
}

TEST(RopeScalingYarn, UntruncatedRampAndGivenAttentionFactor) {
  Yarn y = kQwen;
  y.truncate = false;
  check_yarn(y, RopeLayout::rotate_half, 0.1 * std::log(4.0) + 1.0, 8);
  RopeScaling s = kQwen.scaling();
  s.attention_factor = 0.75;
  const RopeTable table(rope_of(kQwen.base, s), 128, 3);
  EXPECT_EQ(table.attention_factor(), 0.75);
  // Position 0 turns nothing: cos is the factor itself, sin 0.
  for (std::int64_t i = 0; i < 64; ++i) {
    EXPECT_EQ(table.cos(0)[i], 0.75f);
    EXPECT_EQ(table.sin(0)[i], 0.0f);
  }
}

// DeepSeek multiplies MLA's softmax scale by m(factor, mscale_all_dim)².
TEST(RopeScalingYarn, LatentSoftmaxScaleTakesMscaleAllDim) {
  LatentConfig c = LatentConfig::deepseek_v3();
  const float plain = 1.0f / std::sqrt(192.0f);
  EXPECT_EQ(c.resolved_scale(), plain);
  c.rope_scaling = kDeepSeekV3.scaling();
  EXPECT_NO_THROW(c.validate());
  const double m = 0.1 * 1.0 * std::log(40.0) + 1.0;
  EXPECT_NEAR(c.resolved_scale(), m * m / std::sqrt(192.0), 1e-6 * m * m / std::sqrt(192.0));
  c.rope_scaling.mscale_all_dim = 0.707;
  const double m707 = 0.1 * 0.707 * std::log(40.0) + 1.0;
  EXPECT_NEAR(c.resolved_scale(), m707 * m707 / std::sqrt(192.0), 1e-6);
  c.rope_scaling.mscale_all_dim = 0.0;  // unset: no term
  EXPECT_EQ(c.resolved_scale(), plain);
  c.rope_scaling.mscale_all_dim = 1.0;
  c.scale = 0.25f;  // a scale set by hand is taken as it is
  EXPECT_EQ(c.resolved_scale(), 0.25f);
  // The rope the layer builds carries the scaling.
  EXPECT_EQ(c.rope().scaling.type, RopeScalingType::yarn);
  EXPECT_EQ(c.rope().scaling.factor, 40.0);
}

// Yarn is static, so a dense layer's prefill then steps give its one causal forward over the
// whole sequence, past the trained context; and the scaling changes the outputs.
TEST(RopeScalingYarn, DenseLayerPrefillThenStepsEqualsOneForward) {
  Yarn y{10000.0, 16, 4.0, 8};
  LayerConfig config = module_testing::make_config(32, 4, 2, 16, false, true);
  config.rope = rope_of(y.base, y.scaling());
  multihead::GQA layer(config);
  layer.init_random(17);
  const std::int64_t total = 24, prefill = 10;
  const std::vector<float> x = naive::random_vector(total * 32, 18);
  const RowMatrix xm = Eigen::Map<const RowMatrix>(x.data(), total, 32);
  const RowMatrix whole = layer.forward(xm);
  KvCache<float> cache(1, total, 2, 16);
  RowMatrix stepped(total, 32), y_step;
  layer.forward(xm.topRows(prefill), cache, y_step);
  stepped.topRows(prefill) = y_step;
  for (std::int64_t p = prefill; p < total; ++p) {
    layer.forward(xm.middleRows(p, 1), cache, y_step);
    stepped.row(p) = y_step.row(0);
  }
  const double scale = whole.cwiseAbs().maxCoeff();
  EXPECT_LE((stepped - whole).cwiseAbs().maxCoeff(), 1e-5 * scale);
  LayerConfig unscaled = config;
  unscaled.rope->scaling = RopeScaling();
  multihead::GQA plain(unscaled);
  plain.init_random(17);
  EXPECT_GT((plain.forward(xm) - whole).cwiseAbs().maxCoeff(), 1e-3 * scale);
}

// ---- Validation ---------------------------------------------------------------------------------

TEST(RopeScalingConfig, DefaultsAndGoodConfigs) {
  const RopeScaling s;
  EXPECT_EQ(s.type, RopeScalingType::none);
  EXPECT_EQ(s.factor, 1.0);
  EXPECT_EQ(s.low_freq_factor, 1.0);
  EXPECT_EQ(s.high_freq_factor, 4.0);
  EXPECT_EQ(s.beta_fast, 32.0);
  EXPECT_EQ(s.beta_slow, 1.0);
  EXPECT_TRUE(s.truncate);
  EXPECT_FALSE(s.attention_factor.has_value());
  EXPECT_NO_THROW(rope_of(10000.0, s).validate(64));
  EXPECT_NO_THROW(rope_of(500000.0, llama31()).validate(128));
  EXPECT_NO_THROW(rope_of(1e6, kQwen.scaling()).validate(128));
  EXPECT_NO_THROW(rope_of(10000.0, kDeepSeekV3.scaling()).validate(64));
  EXPECT_NO_THROW(rope_of(10000.0, dynamic(1.0, 2048)).validate(4));
  RopeScaling linear;
  linear.type = RopeScalingType::linear;
  linear.factor = 2.0;  // needs no original context
  EXPECT_NO_THROW(rope_of(10000.0, linear).validate(64));
  // none reads no field, so none is checked.
  RopeScaling none;
  none.factor = -3.0;
  EXPECT_NO_THROW(rope_of(10000.0, none).validate(64));
  // Without scaling, every frequency and the factor are as before.
  const RopeTable table(rope_of(10000.0, RopeScaling()), 32);
  EXPECT_TRUE(relatively_close(table.inverse_frequencies(), default_frequencies(32, 10000.0)));
  EXPECT_EQ(table.attention_factor(), 1.0);
}

TEST(RopeScalingConfig, RejectsBadFieldsNamingThem) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const double inf = std::numeric_limits<double>::infinity();
  struct Case {
    std::function<void(RopeScaling&)> change;
    RopeScaling start;
    std::vector<std::string> parts;
  };
  const std::vector<Case> cases = {
      {[](RopeScaling& s) { s.factor = 0.5; }, llama31(),
       {"rope.scaling.factor (0.5) must be finite and at least 1", "llama3"}},
      {[&](RopeScaling& s) { s.factor = nan; }, kQwen.scaling(), {"rope.scaling.factor (nan)"}},
      {[&](RopeScaling& s) { s.factor = inf; }, dynamic(2.0, 8), {"rope.scaling.factor (inf)"}},
      {[](RopeScaling& s) { s.factor = 0.0; }, dynamic(2.0, 8), {"rope.scaling.factor (0)"}},
      {[](RopeScaling& s) { s.original_context = 0; }, dynamic(2.0, 8),
       {"rope.scaling.original_context (0) must be positive", "dynamic"}},
      {[](RopeScaling& s) { s.original_context = -5; }, kQwen.scaling(),
       {"rope.scaling.original_context (-5)", "yarn"}},
      {[](RopeScaling& s) { s.original_context = 0; }, llama31(),
       {"rope.scaling.original_context (0)", "llama3"}},
      {[](RopeScaling& s) { s.low_freq_factor = 0.0; }, llama31(),
       {"rope.scaling.low_freq_factor (0) must be positive"}},
      {[](RopeScaling& s) { s.high_freq_factor = 1.0; }, llama31(),
       {"rope.scaling.high_freq_factor (1) must be finite and above low_freq_factor (1)"}},
      {[](RopeScaling& s) { s.beta_slow = 0.0; }, kQwen.scaling(),
       {"rope.scaling.beta_slow (0) must be positive"}},
      {[](RopeScaling& s) { s.beta_fast = 1.0; }, kQwen.scaling(),
       {"rope.scaling.beta_fast (1) must be finite and above beta_slow (1)"}},
      {[](RopeScaling& s) { s.mscale = -1.0; }, kQwen.scaling(),
       {"rope.scaling.mscale (-1) must be finite and not negative"}},
      {[&](RopeScaling& s) { s.mscale_all_dim = nan; }, kQwen.scaling(),
       {"rope.scaling.mscale_all_dim (nan)"}},
      {[](RopeScaling& s) { s.attention_factor = 0.0; }, kQwen.scaling(),
       {"rope.scaling.attention_factor (0) must be positive and finite"}},
      {[](RopeScaling& s) { s.type = static_cast<RopeScalingType>(9); }, RopeScaling(),
       {"rope.scaling.type (9) is not a RopeScalingType"}},
  };
  for (const Case& c : cases) {
    RopeScaling s = c.start;
    c.change(s);
    SCOPED_TRACE(c.parts.front());
    expect_invalid([&] { rope_of(10000.0, s).validate(64); }, c.parts);
    expect_invalid([&] { RopeTable(rope_of(10000.0, s), 64); }, c.parts);  // tables check too
  }
  // What needs the rope's other fields: dynamic's exponent d/(d − 2), yarn's ln(base).
  expect_invalid([] { rope_of(10000.0, dynamic(2.0, 8)).validate(2); },
                 {"rope.rotary_dim (2) must be at least 4 for dynamic scaling"});
  expect_invalid([] { rope_of(1.0, kQwen.scaling()).validate(64); },
                 {"rope.base (1) must be above 1 for yarn scaling"});
  RopeConfig bad_layout;
  bad_layout.layout = static_cast<RopeLayout>(5);
  expect_invalid([&] { bad_layout.validate(64); },
                 {"rope.layout (5) must be rotate_half or interleaved"});
}

// A layer's config checks its rope's scaling; MLA's needs a RoPE to scale.
TEST(RopeScalingConfig, LayerConfigsCheckTheirScaling) {
  LayerConfig dense = module_testing::make_config(64, 4, 2, 16, false, true);
  dense.rope = rope_of(10000.0, dynamic(0.5, 8));
  expect_invalid([&] { dense.validate(); }, {"rope.scaling.factor (0.5)"});
  expect_invalid([&] { multihead::GQA layer(dense); }, {"rope.scaling.factor (0.5)"});
  LatentConfig latent = LatentConfig::deepseek_v2_lite();
  latent.rope_scaling = kDeepSeekV3.scaling();
  latent.rope_scaling.beta_fast = 0.5;
  expect_invalid([&] { latent.validate(); }, {"rope.scaling.beta_fast (0.5)"});
  latent.rope_scaling = kDeepSeekV3.scaling();
  latent.rope_dim = 0;
  expect_invalid([&] { latent.validate(); },
                 {"rope_scaling (yarn) needs a RoPE to scale but rope_dim is 0"});
  // Finite fields whose factors are not (found by fuzz_config): m(40, 1e200)² overflows double,
  // m(40, 1e21)² · 1/sqrt(192) overflows float, m(1e300, 1e307) overflows double.
  latent = LatentConfig::deepseek_v2_lite();
  latent.rope_scaling = kDeepSeekV3.scaling();
  latent.rope_scaling.mscale_all_dim = 1e200;
  expect_invalid([&] { latent.validate(); },
                 {"rope.scaling.mscale_all_dim (1e+200) makes the softmax scale's factor infinite"});
  latent.rope_scaling.mscale_all_dim = 1e21;
  latent.rope_scaling.mscale = 0.0;
  expect_invalid([&] { latent.validate(); }, {"must be positive and finite in float"});
  latent.rope_scaling.factor = 1e300;
  latent.rope_scaling.mscale = 1e307;
  latent.rope_scaling.mscale_all_dim = 1.0;
  expect_invalid([&] { latent.validate(); }, {"rope.scaling: the attention factor (inf)"});
}

}  // namespace
