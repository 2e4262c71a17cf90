// The SIMD primitives of the ISA this executable is built for (simd::Ops) and the scalar exp:
// exp's accuracy against the correctly rounded exp, its special values, and the per-lane
// meaning of the masking and max operations the fused kernel relies on.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <iostream>
#include <limits>
#include <random>
#include <vector>

#include <multihead/multihead.hpp>

#include "support/testing.hpp"

namespace {

using test_support::bits_of;
using test_support::float_of;
using test_support::kInf;

using Ops = multihead::simd::Ops;
constexpr int W = Ops::W;

// The floats a vector holds, 64-byte aligned for the aligned loads and stores of every ISA.
struct alignas(64) Lanes {
  float v[W];
};

Lanes from_vector(typename Ops::V x) {
  Lanes out;
  Ops::store(out.v, x);
  return out;
}


// The distance in units in the last place: the number of floats between a and b (0 if equal;
// +0 and -0 are equal; a NaN is infinitely far).
std::int64_t ulp_distance(float a, float b) {
  if (std::isnan(a) || std::isnan(b)) return std::numeric_limits<std::int64_t>::max();
  if (a == b) return 0;
  const auto ordered = [](float x) {
    const std::int64_t b = bits_of(x);
    return (b & 0x80000000) ? -(b & 0x7fffffff) : b;
  };
  const std::int64_t d = ordered(a) - ordered(b);
  return d < 0 ? -d : d;
}

// exp(x) rounded to float: std::exp in double is accurate to well under a double ULP, so its
// rounding to float is the correctly rounded result except, rarely, by one float ULP at an
// exact tie, which the 2-ULP bound below does not depend on.
float correctly_rounded_exp(float x) { return static_cast<float>(std::exp(static_cast<double>(x))); }

// Ops::exp of every value, W at a time through load and store.
std::vector<float> vector_exp(const std::vector<float>& x) {
  std::vector<float> out(x.size());
  Lanes in;
  for (std::size_t i = 0; i < x.size(); i += W) {
    for (int l = 0; l < W; ++l) in.v[l] = i + l < x.size() ? x[i + l] : 0.0f;
    const Lanes r = from_vector(Ops::exp(Ops::load(in.v)));
    for (int l = 0; l < W && i + l < x.size(); ++l) out[i + l] = r.v[l];
  }
  return out;
}

std::vector<float> scalar_exp(const std::vector<float>& x) {
  std::vector<float> out(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) out[i] = multihead::simd::exp_scalar(x[i]);
  return out;
}

struct UlpReport {
  std::int64_t worst = 0;
  float worst_x = 0.0f;
  std::int64_t count = 0;
};

void accumulate(UlpReport& report, const std::vector<float>& x, const std::vector<float>& got) {
  for (std::size_t i = 0; i < x.size(); ++i) {
    const std::int64_t d = ulp_distance(got[i], correctly_rounded_exp(x[i]));
    if (d > report.worst) {
      report.worst = d;
      report.worst_x = x[i];
    }
  }
  report.count += static_cast<std::int64_t>(x.size());
}

constexpr float kLow = -87.3f, kHigh = 88.3f;  // the range of normal results the header claims

// Every float of [kLow, kHigh] whose bit pattern is a multiple of `stride` away from the ends,
// in both signs; plus every float within 2^-12 (relative) of x = (k + 1/2)·ln 2, where the
// reduction's rounding of x·log2 e switches from n = k to k + 1 (so r hits ±ln2/2); plus
// uniform random values over the range.
std::vector<std::vector<float>> sweep_chunks() {
  std::vector<std::vector<float>> chunks;
  std::vector<float> chunk;
  const auto push = [&](float x) {
    chunk.push_back(x);
    if (chunk.size() == (1u << 20)) {
      chunks.push_back(std::move(chunk));
      chunk.clear();
    }
  };
  const std::uint32_t stride = 61;
  for (std::uint32_t b = 0; b <= bits_of(kHigh); b += stride) push(float_of(b));
  for (std::uint32_t b = 0x80000000u; b <= bits_of(kLow); b += stride) push(float_of(b));
  push(kHigh);
  push(kLow);
  for (int k = -125; k <= 126; ++k) {
    const float centre = static_cast<float>((k + 0.5) * std::log(2.0));
    if (centre < kLow || centre > kHigh) continue;
    const float lo = centre - std::abs(centre) * 0x1p-12f, hi = centre + std::abs(centre) * 0x1p-12f;
    for (float x = lo; x <= hi; x = std::nextafter(x, kInf)) push(x);
  }
  std::mt19937_64 generator(2024);
  std::uniform_real_distribution<float> uniform(kLow, kHigh);
  for (int i = 0; i < (1 << 21); ++i) push(uniform(generator));
  chunks.push_back(std::move(chunk));
  return chunks;
}

TEST(SimdExp, WithinTwoUlpOverTheNormalRange) {
  UlpReport vector_report, scalar_report;
  for (const std::vector<float>& x : sweep_chunks()) {
    accumulate(vector_report, x, vector_exp(x));
    accumulate(scalar_report, x, scalar_exp(x));
  }
  std::cout << "[ info     ] " << Ops::name << " Ops::exp: max " << vector_report.worst
            << " ULP at x = " << vector_report.worst_x << "; exp_scalar: max "
            << scalar_report.worst << " ULP at x = " << scalar_report.worst_x << " ("
            << vector_report.count << " values)\n";
  EXPECT_GT(vector_report.count, 30'000'000);
  EXPECT_LE(vector_report.worst, 2) << "Ops::exp at x = " << vector_report.worst_x;
  EXPECT_LE(scalar_report.worst, 2) << "exp_scalar at x = " << scalar_report.worst_x;
}

TEST(SimdExp, SpecialValues) {
  const std::vector<float> x = {-kInf, 0.0f, -0.0f, 1.0f, -1.0f};
  for (const std::vector<float>& got : {vector_exp(x), scalar_exp(x)}) {
    // exp(-inf) is exactly +0: masked scores must contribute nothing, never NaN.
    EXPECT_EQ(got[0], 0.0f);
    EXPECT_FALSE(std::signbit(got[0]));
    EXPECT_EQ(got[1], 1.0f);
    EXPECT_EQ(got[2], 1.0f);
    EXPECT_LE(ulp_distance(got[3], correctly_rounded_exp(1.0f)), 2);
    EXPECT_LE(ulp_distance(got[4], correctly_rounded_exp(-1.0f)), 2);
  }
}

// Below the normal range the result is 0 or subnormal, never negative, with an absolute error
// below 1.2e-38; far below (and at -FLT_MAX) it is 0.
TEST(SimdExp, LargeNegativeArgumentsUnderflowGracefully) {
  std::vector<float> x;
  for (float v = kLow; v > -200.0f; v = std::nextafter(v, -kInf) - 0.0001f) x.push_back(v);
  for (float v : {-1e3f, -1e6f, -1e30f, -std::numeric_limits<float>::max()}) x.push_back(v);
  const float ln_min = std::log(std::numeric_limits<float>::min());  // -87.3365
  for (const std::vector<float>& got : {vector_exp(x), scalar_exp(x)})
    for (std::size_t i = 0; i < x.size(); ++i) {
      const double exact = std::exp(static_cast<double>(x[i]));
      ASSERT_GE(got[i], 0.0f) << "x = " << x[i];
      ASSERT_LT(std::abs(static_cast<double>(got[i]) - exact), 1.2e-38) << "x = " << x[i];
      if (x[i] < ln_min - 0.01f) {
        ASSERT_LT(got[i], std::numeric_limits<float>::min()) << "x = " << x[i];
      }
      if (x[i] <= -104.0f) {
        ASSERT_EQ(got[i], 0.0f) << "x = " << x[i];
      }
    }
}

// Above the largest x whose exp is a float the result is +inf. Between the end of the claimed
// range and that point, a result is either +inf or within 2 ULP.
TEST(SimdExp, LargePositiveArgumentsOverflowToInfinity) {
  const float ln_max = std::log(std::numeric_limits<float>::max());  // 88.7228
  std::vector<float> above, between;
  for (float v = std::nextafter(ln_max, kInf); v < 200.0f; v += 0.01f) above.push_back(v);
  for (float v : {1e3f, 1e30f, std::numeric_limits<float>::max(), kInf}) above.push_back(v);
  for (float v = kHigh; v <= ln_max; v = std::nextafter(v, kInf) + 1e-5f) between.push_back(v);
  for (const std::vector<float>& got : {vector_exp(above), scalar_exp(above)})
    for (std::size_t i = 0; i < above.size(); ++i)
      ASSERT_EQ(got[i], kInf) << "x = " << above[i];
  std::int64_t infinite = 0;
  for (const std::vector<float>& got : {vector_exp(between), scalar_exp(between)})
    for (std::size_t i = 0; i < between.size(); ++i) {
      if (got[i] == kInf) {
        ++infinite;
        continue;
      }
      ASSERT_LE(ulp_distance(got[i], correctly_rounded_exp(between[i])), 2)
          << "x = " << between[i] << ": " << got[i];
    }
  std::cout << "[ info     ] " << Ops::name << ": " << infinite << " of " << 2 * between.size()
            << " values of x in [88.3, ln FLT_MAX] give +inf\n";
}

// ---- Lane-wise semantics -----------------------------------------------------------------------

Lanes lanes_of(const std::vector<float>& values, int offset) {
  Lanes l;
  for (int i = 0; i < W; ++i) l.v[i] = values[static_cast<std::size_t>(offset + i) % values.size()];
  return l;
}

TEST(SimdLanes, SelectGreaterTakesYWhereAExceedsB) {
  // As the causal epilogue uses it: a key against each row's limit, hidden (−inf) past it.
  // limit: the last key a row may see, relative to the tile (-1: none, BC: all of it).
  const std::vector<float> limits = {-1.0f, 0.0f, 1.0f, 5.0f, 6.0f, 7.0f, 31.0f, 63.0f, 64.0f};
  const std::vector<float> scores = {0.5f, -2.0f, 1e4f, -1e4f, 0.0f, -kInf, 3.25f};
  for (int offset = 0; offset < 9; ++offset)
    for (float key : {0.0f, 1.0f, 6.0f, 7.0f, 63.0f}) {
      const Lanes limit = lanes_of(limits, offset), x = lanes_of(scores, offset);
      const Lanes r = from_vector(Ops::select_greater(Ops::set1(key), Ops::load(limit.v),
                                                      Ops::load(x.v), Ops::set1(-kInf)));
      for (int i = 0; i < W; ++i) {
        const float expected = key > limit.v[i] ? -kInf : x.v[i];
        EXPECT_EQ(bits_of(r.v[i]), bits_of(expected))
            << "lane " << i << ": key " << key << ", limit " << limit.v[i] << ", x " << x.v[i]
            << " gave " << r.v[i];
      }
    }
}

TEST(SimdLanes, NegInfToZeroChangesOnlyMinusInfinity) {
  const std::vector<float> values = {-kInf, 1.5f, kInf, -0.0f, 0.0f, -std::numeric_limits<float>::max(),
                                     -3.0f, std::numeric_limits<float>::denorm_min(), -kInf};
  for (int offset = 0; offset < 9; ++offset) {
    const Lanes x = lanes_of(values, offset);
    const Lanes r = from_vector(Ops::neg_inf_to_zero(Ops::load(x.v)));
    for (int i = 0; i < W; ++i) {
      const float expected = x.v[i] == -kInf ? 0.0f : x.v[i];  // +0, and -0 stays -0
      EXPECT_EQ(bits_of(r.v[i]), bits_of(expected)) << "lane " << i << ": x " << x.v[i];
    }
  }
}

TEST(SimdLanes, MaxIsLanewise) {
  const std::vector<float> a = {1.0f, 2.0f, -kInf, -5.0f, -kInf, 3.0f, kInf, -1e4f, 7.5f};
  const std::vector<float> b = {2.0f, 1.0f, -5.0f, -kInf, -kInf, 3.0f, 1.0f, -1e4f, -7.5f};
  for (int offset = 0; offset < 9; ++offset) {
    const Lanes x = lanes_of(a, offset), y = lanes_of(b, offset);
    const Lanes r = from_vector(Ops::max(Ops::load(x.v), Ops::load(y.v)));
    for (int i = 0; i < W; ++i)
      EXPECT_EQ(r.v[i], std::max(x.v[i], y.v[i])) << "lane " << i << ": " << x.v[i] << ", " << y.v[i];
  }
}

TEST(SimdLanes, ArithmeticIsLanewise) {
  Lanes a, b, c;
  for (int i = 0; i < W; ++i) {
    a.v[i] = 0.5f * static_cast<float>(i + 1);
    b.v[i] = -2.0f + static_cast<float>(i);
    c.v[i] = 100.0f - static_cast<float>(3 * i);
  }
  const auto A = Ops::load(a.v), B = Ops::load(b.v), C = Ops::load(c.v);
  const Lanes fma = from_vector(Ops::fma(A, B, C)), mul = from_vector(Ops::mul(A, B)),
              add = from_vector(Ops::add(A, B)), sub = from_vector(Ops::sub(A, B)),
              set = from_vector(Ops::set1(2.5f)), zero = from_vector(Ops::zero()),
              broadcast = from_vector(Ops::broadcast(&c.v[W - 1]));
  for (int i = 0; i < W; ++i) {  // small integers and halves: every result is exact
    EXPECT_EQ(fma.v[i], a.v[i] * b.v[i] + c.v[i]) << "lane " << i;
    EXPECT_EQ(mul.v[i], a.v[i] * b.v[i]) << "lane " << i;
    EXPECT_EQ(add.v[i], a.v[i] + b.v[i]) << "lane " << i;
    EXPECT_EQ(sub.v[i], a.v[i] - b.v[i]) << "lane " << i;
    EXPECT_EQ(set.v[i], 2.5f);
    EXPECT_EQ(bits_of(zero.v[i]), 0u);
    EXPECT_EQ(broadcast.v[i], c.v[W - 1]);
  }
}

}  // namespace
