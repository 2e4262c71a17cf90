// Rotary position embedding (rope.hpp) against the naive formula of naive_reference.hpp, which
// computes every angle, cos and sin in double from the definition and shares nothing with the
// library's table.
//
// The bound: each output is a·cos − b·sin (or b·cos + a·sin) of one pair (a, b). Rounding cos and
// sin to float, the two products and the sum each add at most u = 2^-24 relative, so the library
// is within about 2u·(|a| + |b|) of the exact value; the tests allow 8u·max|x|. An angle computed
// in float instead of double is off by up to p·6e-8 rad, 2e-4 at p = 3000 and 6e-3 at p = 10^5,
// which the bound catches (checked below).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include <multihead/multihead.hpp>

#include "support/module_testing.hpp"
#include "support/naive_reference.hpp"
#include "support/testing.hpp"

namespace {

using multihead::apply_rope;
using multihead::LayerConfig;
using multihead::RopeConfig;
using multihead::RopeLayout;
using multihead::RopeTable;
using multihead::TensorView;

constexpr double kUnit = 0x1p-24;

RopeConfig make_rope(RopeLayout layout, std::optional<std::int64_t> rotary_dim = std::nullopt,
                     double base = 10000.0) {
  RopeConfig c;
  c.layout = layout;
  c.rotary_dim = rotary_dim;
  c.base = base;
  return c;
}

std::string describe(const RopeConfig& c, std::int64_t head_dim) {
  return std::string(c.layout == RopeLayout::interleaved ? "interleaved" : "rotate_half") +
         ", rotary_dim " + std::to_string(c.rotary_dims(head_dim)) + " of " +
         std::to_string(head_dim) + ", base " + std::to_string(c.base);
}

naive::Rope naive_rope(const RopeConfig& c, std::int64_t head_dim) {
  naive::Rope r;
  r.rotary_dim = c.rotary_dims(head_dim);
  r.base = c.base;
  r.interleaved = c.layout == RopeLayout::interleaved;
  return r;
}

// A contiguous [batch, tokens, heads, head_dim] buffer.
struct Shape {
  std::int64_t batch, tokens, heads, head_dim;
  std::int64_t size() const { return batch * tokens * heads * head_dim; }
};

TensorView<float> view_of(std::vector<float>& x, const Shape& s) {
  return TensorView<float>(x.data(), static_cast<std::int64_t>(x.size()), s.batch, s.tokens,
                           s.heads, s.head_dim);
}

// The position of every token row, batch-major: offsets[b] + t.
std::vector<std::int64_t> positions_of(const Shape& s, const std::vector<std::int64_t>& offsets) {
  std::vector<std::int64_t> positions;
  for (std::int64_t b = 0; b < s.batch; ++b)
    for (std::int64_t t = 0; t < s.tokens; ++t)
      positions.push_back(offsets[static_cast<std::size_t>(b)] + t);
  return positions;
}

// x rotated by the naive formula in double, sequence b from position offsets[b].
std::vector<double> exact(const std::vector<float>& x, const Shape& s, const RopeConfig& c,
                          const std::vector<std::int64_t>& offsets) {
  std::vector<double> out(x.begin(), x.end());
  naive::rotate(out, s.heads, s.head_dim, naive_rope(c, s.head_dim), positions_of(s, offsets));
  return out;
}

// x rotated by the library from position `offset`, with a table that covers exactly what it needs.
std::vector<float> rotated(std::vector<float> x, const Shape& s, const RopeConfig& c,
                           std::int64_t offset) {
  const RopeTable table(c, s.head_dim, offset + s.tokens);
  apply_rope(table, view_of(x, s), offset);
  return x;
}

double bound_for(const std::vector<float>& input) { return 8.0 * kUnit * naive::max_abs(input); }

// The library's rotation of `input` against the exact one: within the bound, and the dims past
// rotary_dim bitwise unchanged.
::testing::AssertionResult matches_exact(const std::vector<float>& lib,
                                         const std::vector<double>& oracle,
                                         const std::vector<float>& input, const Shape& s,
                                         std::int64_t rotary_dim) {
  const double error = naive::max_abs_error(lib, oracle), bound = bound_for(input);
  if (!(error <= bound))
    return ::testing::AssertionFailure()
           << "max|lib - exact| = " << error << " exceeds the bound " << bound;
  for (std::size_t i = 0; i < lib.size(); ++i)
    if (static_cast<std::int64_t>(i) % s.head_dim >= rotary_dim && lib[i] != input[i])
      return ::testing::AssertionFailure()
             << "element " << i << ", dim " << static_cast<std::int64_t>(i) % s.head_dim
             << " past rotary_dim " << rotary_dim << " changed";
  return ::testing::AssertionSuccess() << "max|lib - exact| = " << error << " <= " << bound;
}

// ---- The config --------------------------------------------------------------------------------

// Runs `body`, expecting std::invalid_argument whose message contains every one of `parts`.
void expect_invalid(const std::function<void()>& body, const std::vector<std::string>& parts) {
  test_support::expect_invalid(body, parts, __FILE__, __LINE__);
}

TEST(RopeConfig, DefaultsAndGoodConfigs) {
  const RopeConfig c;
  EXPECT_FALSE(c.rotary_dim.has_value());
  EXPECT_EQ(c.rotary_dims(64), 64);  // the whole head by default
  EXPECT_EQ(c.base, 10000.0);
  EXPECT_EQ(c.layout, RopeLayout::rotate_half);
  EXPECT_NO_THROW(c.validate(64));
  EXPECT_NO_THROW(make_rope(RopeLayout::interleaved, 16, 500000.0).validate(64));
  EXPECT_NO_THROW(make_rope(RopeLayout::rotate_half, 2, 1.5).validate(2));
  EXPECT_NO_THROW(make_rope(RopeLayout::rotate_half, 64).validate(64));
}

TEST(RopeConfig, RejectsBadRotaryDim) {
  expect_invalid([] { make_rope(RopeLayout::rotate_half, 0).validate(64); },
                 {"rope.rotary_dim (0) must be positive"});
  expect_invalid([] { make_rope(RopeLayout::rotate_half, -4).validate(64); },
                 {"rope.rotary_dim (-4) must be positive"});
  expect_invalid([] { make_rope(RopeLayout::interleaved, 7).validate(64); },
                 {"rope.rotary_dim (7) must be even"});
  expect_invalid([] { make_rope(RopeLayout::rotate_half, 66).validate(64); },
                 {"rope.rotary_dim (66) must not exceed head_dim (64)"});
  // The default, the whole head, is named as such when the head_dim is odd.
  expect_invalid([] { RopeConfig().validate(15); }, {"rope.rotary_dim (15, the head_dim)", "even"});
}

TEST(RopeConfig, RejectsBadBase) {
  for (double base : {0.0, -10000.0, std::numeric_limits<double>::infinity(),
                      std::numeric_limits<double>::quiet_NaN()}) {
    SCOPED_TRACE(base);
    expect_invalid([&] { make_rope(RopeLayout::rotate_half, std::nullopt, base).validate(8); },
                   {"rope.base (", "must be positive and finite"});
  }
}

// LayerConfig::validate checks its rope against its head_dim, and so does every layer.
TEST(RopeConfig, LayerConfigChecksItsRope) {
  LayerConfig c = module_testing::make_config(64, 8, 2, 16, false, true);
  c.rope = make_rope(RopeLayout::interleaved, 8);
  EXPECT_NO_THROW(c.validate());
  c.rope = make_rope(RopeLayout::rotate_half, 32);
  expect_invalid([&] { c.validate(); }, {"rope.rotary_dim (32) must not exceed head_dim (16)"});
  expect_invalid([&] { multihead::GQA layer(c); }, {"rope.rotary_dim (32)"});
  c = module_testing::make_config(60, 4, 4, 15, false, true);
  c.rope = RopeConfig();
  expect_invalid([&] { multihead::MHA layer(c); }, {"(15, the head_dim) must be even"});
}

// ---- The table ---------------------------------------------------------------------------------

// Every entry is the float nearest the exact cos or sin, give or take the double computation.
TEST(RopeTable, EntriesMatchTheFormula) {
  for (const RopeConfig& c :
       {make_rope(RopeLayout::rotate_half), make_rope(RopeLayout::interleaved, 6, 500000.0)}) {
    SCOPED_TRACE(describe(c, 10));
    const RopeTable table(c, 10, 100001);
    EXPECT_EQ(table.positions(), 100001);
    EXPECT_EQ(table.head_dim(), 10);
    EXPECT_EQ(table.rotary_dim(), c.rotary_dims(10));
    const std::int64_t pairs = table.rotary_dim() / 2;
    for (std::int64_t p : {0, 1, 2, 17, 4095, 100000})
      for (std::int64_t i = 0; i < pairs; ++i) {
        const double angle =
            static_cast<double>(p) /
            std::pow(c.base, static_cast<double>(2 * i) / static_cast<double>(table.rotary_dim()));
        EXPECT_NEAR(table.cos(p)[i], std::cos(angle), kUnit) << "p " << p << ", pair " << i;
        EXPECT_NEAR(table.sin(p)[i], std::sin(angle), kUnit) << "p " << p << ", pair " << i;
      }
  }
}

TEST(RopeTable, ReserveGrowsGeometricallyAndKeepsRows) {
  RopeTable table(RopeConfig(), 8);
  EXPECT_EQ(table.positions(), 0);
  table.reserve(5);
  EXPECT_EQ(table.positions(), 5);
  const std::vector<float> first(table.cos(0), table.cos(0) + 5 * 8);
  table.reserve(3);  // already covered: nothing changes
  EXPECT_EQ(table.positions(), 5);
  table.reserve(6);  // one more position: the table doubles
  EXPECT_EQ(table.positions(), 10);
  table.reserve(27);  // far more: exactly that
  EXPECT_EQ(table.positions(), 27);
  EXPECT_EQ(std::vector<float>(table.cos(0), table.cos(0) + 5 * 8), first);
  // A grown table equals one built at its size.
  const RopeTable built(RopeConfig(), 8, 27);
  EXPECT_EQ(std::vector<float>(table.cos(0), table.cos(0) + 27 * 8),
            std::vector<float>(built.cos(0), built.cos(0) + 27 * 8));
}

TEST(RopeTable, RejectsBadArguments) {
  expect_invalid([] { RopeTable(RopeConfig(), 8, -1); }, {"positions (-1) must not be negative"});
  expect_invalid([] { RopeTable(RopeConfig(), 0); }, {"head_dim (0) must be positive"});
  expect_invalid([] { RopeTable(make_rope(RopeLayout::rotate_half, 10), 8); },
                 {"rope.rotary_dim (10) must not exceed head_dim (8)"});
  RopeTable table(RopeConfig(), 8, 4);
  expect_invalid([&] { table.reserve(-3); }, {"positions (-3) must not be negative"});
  EXPECT_EQ(table.positions(), 4);
}

// ---- Applying it -------------------------------------------------------------------------------

// Both layouts, whole and partial rotary, three bases, from position 0 and further on, over a
// batch of sequences of several heads.
TEST(ApplyRope, MatchesTheFormula) {
  const Shape s{2, 5, 3, 16};
  const std::vector<float> x = naive::random_vector(s.size(), 1);
  for (RopeLayout layout : {RopeLayout::rotate_half, RopeLayout::interleaved})
    for (std::optional<std::int64_t> rotary_dim :
         {std::optional<std::int64_t>(), std::optional<std::int64_t>(10),
          std::optional<std::int64_t>(2)})
      for (double base : {10000.0, 500000.0, 10.0})
        for (std::int64_t offset : {0, 7, 1000}) {
          const RopeConfig c = make_rope(layout, rotary_dim, base);
          SCOPED_TRACE(describe(c, s.head_dim) + ", offset " + std::to_string(offset));
          EXPECT_TRUE(matches_exact(rotated(x, s, c, offset), exact(x, s, c, {offset, offset}), x,
                                    s, c.rotary_dims(s.head_dim)));
        }
}

// What the bound catches: the other layout, a position one off, and the angle computed in float.
TEST(ApplyRope, WrongLayoutPositionOrFloatAnglesAreCaught) {
  const Shape s{1, 4, 2, 16};
  const std::vector<float> x = naive::random_vector(s.size(), 2);
  const RopeConfig half = make_rope(RopeLayout::rotate_half);
  const RopeConfig pairs = make_rope(RopeLayout::interleaved);
  const std::vector<float> lib = rotated(x, s, half, 30);
  ASSERT_TRUE(matches_exact(lib, exact(x, s, half, {30}), x, s, 16));
  EXPECT_FALSE(matches_exact(lib, exact(x, s, pairs, {30}), x, s, 16));
  EXPECT_FALSE(matches_exact(lib, exact(x, s, half, {31}), x, s, 16));
  EXPECT_FALSE(matches_exact(lib, exact(x, s, half, {29}), x, s, 16));

  // The formula with its angles in float, as a table computed in float would have them: at
  // position 3000 they are off by up to ~2e-4 rad.
  const std::int64_t far = 3000;
  ASSERT_TRUE(matches_exact(rotated(x, s, half, far), exact(x, s, half, {far}), x, s, 16));
  std::vector<double> float_angles(x.begin(), x.end());
  for (std::int64_t t = 0; t < s.tokens; ++t)
    for (std::int64_t h = 0; h < s.heads; ++h)
      for (std::int64_t i = 0; i < 8; ++i) {
        const float frequency = std::pow(10000.0f, -static_cast<float>(2 * i) / 16.0f);
        const float angle = static_cast<float>(far + t) * frequency;
        double* row = float_angles.data() + (t * s.heads + h) * s.head_dim;
        const double a = row[i], b = row[i + 8];
        row[i] = a * std::cos(angle) - b * std::sin(angle);
        row[i + 8] = b * std::cos(angle) + a * std::sin(angle);
      }
  EXPECT_FALSE(matches_exact(std::vector<float>(float_angles.begin(), float_angles.end()),
                             exact(x, s, half, {far}), x, s, 16));
}

// Far out, where an angle in float would be off by ~6e-3 rad, the table's double angles keep
// the result within the same bound as at position 0.
TEST(ApplyRope, LargePositionsStayAccurate) {
  const Shape s{1, 3, 2, 16};
  const std::vector<float> x = naive::random_vector(s.size(), 3);
  for (RopeLayout layout : {RopeLayout::rotate_half, RopeLayout::interleaved})
    for (std::int64_t offset : {100000, 262141}) {
      const RopeConfig c = make_rope(layout, std::nullopt, 500000.0);
      SCOPED_TRACE(describe(c, s.head_dim) + ", offset " + std::to_string(offset));
      EXPECT_TRUE(matches_exact(rotated(x, s, c, offset), exact(x, s, c, {offset}), x, s, 16));
    }
}

// A decode step, one token at position p, gives exactly row p of the whole sequence rotated at
// once: the same table entries, the same arithmetic.
TEST(ApplyRope, DecodeStepEqualsRowOfTheFullApplication) {
  const Shape whole{2, 12, 3, 8};
  const Shape step{2, 1, 3, 8};
  const std::vector<float> x = naive::random_vector(whole.size(), 4);
  for (RopeLayout layout : {RopeLayout::rotate_half, RopeLayout::interleaved}) {
    const RopeConfig c = make_rope(layout, 6);
    const RopeTable table(c, 8, 12);
    std::vector<float> all = x;
    apply_rope(table, view_of(all, whole), 0);
    const std::int64_t row = whole.heads * whole.head_dim;
    for (std::int64_t p = 0; p < whole.tokens; ++p) {
      std::vector<float> one, expected;  // token p of both sequences
      for (std::int64_t b = 0; b < whole.batch; ++b) {
        const std::int64_t at = (b * whole.tokens + p) * row;
        one.insert(one.end(), x.begin() + at, x.begin() + at + row);
        expected.insert(expected.end(), all.begin() + at, all.begin() + at + row);
      }
      const std::vector<float> input = one;
      apply_rope(table, view_of(one, step), p);
      EXPECT_EQ(one, expected) << "position " << p;
      if (p + 1 < whole.tokens) {  // the wrong position is not close
        std::vector<float> off = input;
        apply_rope(table, view_of(off, step), p + 1);
        EXPECT_GT(naive::max_abs_error(off, expected), 100 * bound_for(input)) << "position " << p;
      }
    }
  }
}

// One offset per sequence: each sequence as if rotated alone at its offset.
TEST(ApplyRope, PerSequenceOffsets) {
  const Shape s{3, 4, 2, 12};
  const Shape one{1, 4, 2, 12};
  const std::vector<float> x = naive::random_vector(s.size(), 5);
  const std::vector<std::int64_t> offsets = {0, 9, 40};
  for (RopeLayout layout : {RopeLayout::rotate_half, RopeLayout::interleaved}) {
    const RopeConfig c = make_rope(layout, 8, 1000.0);
    SCOPED_TRACE(describe(c, s.head_dim));
    const RopeTable table(c, s.head_dim, 44);
    std::vector<float> lib = x;
    apply_rope(table, view_of(lib, s), {offsets.data(), 3});
    EXPECT_TRUE(matches_exact(lib, exact(x, s, c, offsets), x, s, 8));
    const std::int64_t per = one.size();
    for (std::int64_t b = 0; b < s.batch; ++b) {
      std::vector<float> alone(x.begin() + b * per, x.begin() + (b + 1) * per);
      apply_rope(table, view_of(alone, one), offsets[static_cast<std::size_t>(b)]);
      EXPECT_TRUE(std::equal(alone.begin(), alone.end(), lib.begin() + b * per))
          << "sequence " << b;
    }
  }
}

// A view inside a larger buffer (here the head-major [batch, heads, tokens, dim] layout with a
// padded row) rotates its own elements only.
TEST(ApplyRope, StridedViewTouchesOnlyItsElements) {
  const std::int64_t batch = 2, tokens = 3, heads = 2, dim = 8, padded = 11;
  const std::int64_t size = batch * heads * tokens * padded;
  const std::vector<float> buffer = naive::random_vector(size, 6);
  std::vector<float> lib = buffer;
  const auto x = TensorView<float>::strided(lib.data(), size, batch, tokens, heads, dim,
                                            heads * tokens * padded, padded, tokens * padded);
  const RopeConfig c = make_rope(RopeLayout::interleaved);
  apply_rope(RopeTable(c, dim, 5), x, 2);
  // The same rows gathered into a contiguous buffer and rotated by the formula.
  const Shape s{batch, tokens, heads, dim};
  std::vector<float> dense, result;
  for (std::int64_t b = 0; b < batch; ++b)
    for (std::int64_t t = 0; t < tokens; ++t)
      for (std::int64_t h = 0; h < heads; ++h)
        for (std::int64_t d = 0; d < dim; ++d) {
          const std::int64_t at = ((b * heads + h) * tokens + t) * padded + d;
          dense.push_back(buffer[static_cast<std::size_t>(at)]);
          result.push_back(lib[static_cast<std::size_t>(at)]);
        }
  EXPECT_TRUE(matches_exact(result, exact(dense, s, c, {2, 2}), dense, s, dim));
  for (std::int64_t i = 0; i < size; ++i) {
    if (i % padded < dim) continue;
    EXPECT_EQ(lib[static_cast<std::size_t>(i)], buffer[static_cast<std::size_t>(i)])
        << "padding element " << i << " was written";
  }
}

// What RoPE is for: q·k depends on the positions' difference only, so moving a query and a key
// by the same distance leaves their product as it was, up to rounding.
TEST(ApplyRope, ProductsDependOnRelativePosition) {
  const Shape s{1, 1, 1, 32};
  const std::vector<float> q = naive::random_vector(32, 7), k = naive::random_vector(32, 8);
  const auto dot = [&](std::int64_t m, std::int64_t n, const RopeConfig& c) {
    const std::vector<float> a = rotated(q, s, c, m), b = rotated(k, s, c, n);
    double sum = 0;
    for (std::size_t i = 0; i < a.size(); ++i) sum += static_cast<double>(a[i]) * b[i];
    return sum;
  };
  for (const RopeConfig& c :
       {make_rope(RopeLayout::rotate_half), make_rope(RopeLayout::interleaved, 20)}) {
    SCOPED_TRACE(describe(c, 32));
    const double near = dot(10, 7, c);
    EXPECT_NEAR(dot(110, 107, c), near, 1e-5);
    EXPECT_NEAR(dot(5003, 5000, c), near, 1e-5);
    EXPECT_GT(std::abs(dot(10, 3, c) - near), 1e-3) << "another distance should differ";
  }
}

// ---- Errors: thrown before anything is written -------------------------------------------------

// `call` must throw std::invalid_argument mentioning each of `parts` and leave x as it was.
void expect_rejected(std::vector<float>& x, const std::function<void()>& call,
                     const std::vector<std::string>& parts) {
  const std::vector<float> before = x;
  expect_invalid(call, parts);
  EXPECT_EQ(x, before) << "x was written";
}

TEST(ApplyRopeErrors, ThrowBeforeWriting) {
  const Shape s{2, 3, 2, 8};
  std::vector<float> x = naive::random_vector(s.size(), 9);
  const RopeTable table(RopeConfig(), 8, 10);
  const TensorView<float> view = view_of(x, s);

  expect_rejected(x, [&] { apply_rope(RopeTable(RopeConfig(), 6, 10), view, 0); },
                  {"x.dim (8) must equal the rope table's head_dim (6)"});
  expect_rejected(x, [&] { apply_rope(table, view, -1); }, {"offset (-1) must not be negative"});
  expect_rejected(x, [&] { apply_rope(table, view, 8); },
                  {"positions [8, 11)", "exceed the rope table's 10 positions"});
  expect_rejected(x, [&] { apply_rope(table, view, std::numeric_limits<std::int64_t>::max() - 1); },
                  {"overflows"});
  // The view itself: its buffer, and rows that overlap (which would be rotated twice).
  expect_rejected(
      x, [&] { apply_rope(table, TensorView<float>(x.data(), s.size() - 1, 2, 3, 2, 8), 0); },
      {"x: buffer size (95)"});
  expect_rejected(
      x,
      [&] {
        apply_rope(table, TensorView<float>::strided(x.data(), s.size(), 2, 3, 2, 8, 48, 16, 4), 0);
      },
      {"overlap"});

  // Per-sequence offsets: their count, and each one; a bad last one stops the first being written.
  const std::int64_t good[] = {0, 7}, negative[] = {0, -2}, beyond[] = {1, 8}, three[] = {0, 0, 0};
  expect_rejected(x,
                  [&] {
                    apply_rope(table, view, {three, 3});
                  },
                  {"offsets: size (3) must equal x.batch (2)"});
  expect_rejected(x, [&] { apply_rope(table, view, {nullptr, 2}); }, {"data must not be null"});
  expect_rejected(x,
                  [&] {
                    apply_rope(table, view, {negative, 2});
                  },
                  {"offsets[1] (-2) must not be negative"});
  expect_rejected(x,
                  [&] {
                    apply_rope(table, view, {beyond, 2});
                  },
                  {"positions [8, 11) from offsets[1]", "10 positions"});
  EXPECT_NO_THROW(apply_rope(table, view, {good, 2}));
}

}  // namespace
