// bf16 and fp16 conversions (half.hpp) against references written here from the formats'
// definitions: values decoded with ldexp, and narrowing by choosing the nearer of the two
// neighbouring representable values in double precision, ties to the even one. Widening is
// checked over all 65536 bit patterns; narrowing over every rounding boundary of both formats,
// a dense sweep of all floats and the special values. The bulk functions (SIMD where compiled
// in) must give exactly the scalar functions' bits, for lengths that leave every remainder.
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <iterator>
#include <limits>
#include <multihead/simd/convert.hpp>
#include <multihead/storage/half.hpp>
#include <type_traits>
#include <vector>

#include "support/testing.hpp"

namespace {

using test_support::bits_of;
using test_support::float_of;

using multihead::bf16;
using multihead::fp16;

static_assert(std::is_trivial_v<bf16> && std::is_standard_layout_v<bf16> && sizeof(bf16) == 2);
static_assert(std::is_trivial_v<fp16> && std::is_standard_layout_v<fp16> && sizeof(fp16) == 2);
static_assert(multihead::is_storage_type_v<float> && multihead::is_storage_type_v<bf16> &&
              multihead::is_storage_type_v<fp16> && !multihead::is_storage_type_v<double>);


bool is_nan_bits(std::uint32_t u) { return (u & 0x7fffffffu) > 0x7f800000u; }

// ---- references ---------------------------------------------------------------------------------

// The magnitude a sign-less bit pattern with `exponent_bits` and `mantissa_bits` encodes, by the
// IEEE formula; the all-ones exponent (inf) counts as the next power of two, which is how
// round-to-nearest decides overflow. Not called on NaNs.
double magnitude(std::uint32_t bits, int exponent_bits, int mantissa_bits) {
  const int bias = (1 << (exponent_bits - 1)) - 1;
  const std::uint32_t exponent = bits >> mantissa_bits;
  const std::uint32_t mantissa = bits & ((1u << mantissa_bits) - 1u);
  if (exponent == 0) return std::ldexp(static_cast<double>(mantissa), 1 - bias - mantissa_bits);
  return std::ldexp(static_cast<double>(mantissa + (1u << mantissa_bits)),
                    static_cast<int>(exponent) - bias - mantissa_bits);
}

// The widened float of a 16-bit pattern (1 sign bit, then exponent and mantissa); NaN is
// handled by the callers.
float widen_reference(std::uint16_t h, int exponent_bits) {
  const int mantissa_bits = 15 - exponent_bits;
  const std::uint32_t magnitude_bits = h & 0x7fffu;
  const bool infinite = (magnitude_bits >> mantissa_bits) == (1u << exponent_bits) - 1u;
  const double m = infinite ? std::numeric_limits<double>::infinity()
                            : magnitude(magnitude_bits, exponent_bits, mantissa_bits);
  return static_cast<float>((h & 0x8000u) ? -m : m);  // exact: every value fits in a float
}

// Round-to-nearest-even of a non-NaN float into the 15-bit magnitudes [0, max_bits], where
// max_bits is the infinity pattern: a binary search for the neighbours, then the nearer one.
std::uint16_t narrow_reference(float x, int exponent_bits) {
  const int mantissa_bits = 15 - exponent_bits;
  const std::uint32_t inf_bits = ((1u << exponent_bits) - 1u) << mantissa_bits;
  const auto value = [&](std::uint32_t b) { return magnitude(b, exponent_bits, mantissa_bits); };
  const std::uint16_t sign = std::signbit(x) ? 0x8000u : 0u;
  const double target = std::fabs(static_cast<double>(x));
  if (std::isinf(x)) return static_cast<std::uint16_t>(sign | inf_bits);
  // The largest pattern whose value is ≤ target.
  std::uint32_t lo = 0, hi = inf_bits;
  if (value(hi) <= target) return static_cast<std::uint16_t>(sign | inf_bits);
  while (hi - lo > 1) {
    const std::uint32_t mid = (lo + hi) / 2;
    (value(mid) <= target ? lo : hi) = mid;
  }
  const double below = target - value(lo), above = value(hi) - target;
  std::uint32_t pick;
  if (below < above)
    pick = lo;
  else if (above < below)
    pick = hi;
  else
    pick = (lo & 1u) == 0 ? lo : hi;
  return static_cast<std::uint16_t>(sign | pick);
}

// What narrowing must give a NaN: a quiet NaN with the same sign and the top payload bits.
std::uint16_t narrow_nan_reference(std::uint32_t u, int exponent_bits) {
  const int mantissa_bits = 15 - exponent_bits;
  const std::uint32_t exponent_ones = ((1u << exponent_bits) - 1u) << mantissa_bits;
  const std::uint32_t quiet = 1u << (mantissa_bits - 1);
  const std::uint32_t payload = (u & 0x7fffffu) >> (23 - mantissa_bits);
  return static_cast<std::uint16_t>(((u >> 16) & 0x8000u) | exponent_ones | quiet | payload);
}

std::uint16_t bf16_reference(float x) {
  return is_nan_bits(bits_of(x)) ? narrow_nan_reference(bits_of(x), 8) : narrow_reference(x, 8);
}
std::uint16_t fp16_reference(float x) {
  return is_nan_bits(bits_of(x)) ? narrow_nan_reference(bits_of(x), 5) : narrow_reference(x, 5);
}

// ---- inputs -------------------------------------------------------------------------------------

std::vector<float> special_values() {
  const std::vector<std::uint32_t> bits = {
      0x00000000, 0x80000000, 0x7f800000, 0xff800000,  // ±0, ±inf
      // Quiet and signalling NaNs, both signs, various payloads.
      0x7fc00000, 0xffc00000, 0x7f800001, 0xff800001, 0x7fa00000, 0x7fbfffff, 0x7fffffff,
      0xffffffff, 0x7f80ffff, 0x7f810000, 0x7fc0dead,
      // Float subnormals (to bf16: rounded, ties included), and the smallest normal float.
      0x00000001, 0x80000001, 0x007fffff, 0x807fffff, 0x00008000, 0x00018000, 0x00008001,
      0x0000ffff, 0x007f8000, 0x00800000, 0x80800000,
      // Near the top: to bf16 inf, or not.
      0x7f7fffff, 0xff7fffff, 0x7f7f7fff, 0x7f7f8000, 0x7f7effff, 0x7f7f0000,
      // bf16 ties to even, down and up, both signs, and just off them.
      0x3f808000, 0x3f818000, 0x3f808001, 0x3f807fff, 0xbf808000, 0xbf818000};
  const float max = std::numeric_limits<float>::max();
  const std::vector<float> decimals = {
      1.0f, -1.0f, 0.5f, 1.0f / 3.0f, 3.14159265f, max, -max, 1e6f, -1e30f,
      65504.0f, -65504.0f, 65519.996f, 65520.0f, -65520.0f, 65536.0f,  // fp16's top, and inf
      6.103515625e-05f,         // 2^-14, the smallest normal half
      6.097555160522461e-05f,   // the largest subnormal half
      6.100535e-05f,            // between them
      5.960464477539063e-08f,   // 2^-24, the smallest subnormal half
      2.9802322387695312e-08f,  // 2^-25: a tie, to 0
      2.9802326e-08f,           // just above: up to 2^-24
      8.940696716308594e-08f,   // 3·2^-25: a tie, up to 2·2^-24
      1.0f + 1.0f / 2048.0f,    // fp16 tie: to 1
      1.0f + 3.0f / 2048.0f,    // fp16 tie: up
      2047.5f, 2048.5f, 4097.0f, 4099.0f};
  std::vector<float> values;
  for (std::uint32_t b : bits) values.push_back(float_of(b));
  values.insert(values.end(), decimals.begin(), decimals.end());
  return values;
}

// The floats at and around every rounding boundary of both formats, a stride through all
// floats, and the special values.
std::vector<float> narrowing_inputs() {
  std::vector<float> values = special_values();
  for (std::uint32_t h = 0; h < 0x10000u; ++h) {  // bf16: exact, just above, tie, around it
    const std::uint32_t lo = h << 16;
    for (std::uint32_t offset : {0x0u, 0x1u, 0x7fffu, 0x8000u, 0x8001u, 0xffffu})
      values.push_back(float_of(lo | offset));
  }
  for (std::uint16_t h = 0; h < 0x7c00u; ++h) {  // fp16: exact, and the midpoint to the next
    const double here = magnitude(h, 5, 10), next = magnitude(h + 1u, 5, 10);
    const float mid = static_cast<float>((here + next) / 2);  // exact: 12 significant bits
    for (float x :
         {static_cast<float>(here), mid, std::nextafter(mid, 0.0f), std::nextafter(mid, 1e9f)}) {
      values.push_back(x);
      values.push_back(-x);
    }
  }
  for (std::uint64_t u = 0; u < (std::uint64_t{1} << 32); u += 4093)
    values.push_back(float_of(static_cast<std::uint32_t>(u)));
  return values;
}

// Lengths that leave every remainder of the 8- and 16-lane loops.
constexpr std::int64_t kLengths[] = {0, 1, 7, 15, 16, 17, 33, 1000};

// Runs the bulk conversion over all of src in chunks of the lengths above, each chunk at a
// different misalignment, and checks that no chunk writes past its end.
template <class From, class To, class Sentinel>
std::vector<To> convert_in_chunks(const std::vector<From>& src, Sentinel sentinel) {
  std::vector<To> out;
  out.reserve(src.size());
  std::size_t i = 0, round = 0;
  while (i < src.size()) {
    const auto n = static_cast<std::size_t>(std::min<std::int64_t>(
        kLengths[round % std::size(kLengths)], static_cast<std::int64_t>(src.size() - i)));
    const std::size_t at = 1 + round % 7;  // misaligned for every vector width
    std::vector<To> buffer(n + 16, sentinel);
    multihead::convert(src.data() + i, buffer.data() + at, static_cast<std::int64_t>(n));
    for (std::size_t j = 0; j < at; ++j)
      EXPECT_EQ(std::memcmp(&buffer[j], &sentinel, sizeof(To)), 0) << "write before the start";
    for (std::size_t j = at + n; j < buffer.size(); ++j)
      EXPECT_EQ(std::memcmp(&buffer[j], &sentinel, sizeof(To)), 0)
          << "write past the end, n = " << n;
    out.insert(out.end(), buffer.begin() + static_cast<std::ptrdiff_t>(at),
               buffer.begin() + static_cast<std::ptrdiff_t>(at + n));
    i += n;
    ++round;
  }
  return out;
}

// Reports at most a few mismatches, then the count.
class Mismatches {
 public:
  explicit Mismatches(const char* what) : what_(what) {}
  ~Mismatches() { EXPECT_EQ(count_, 0) << what_ << ": " << count_ << " mismatches"; }
  void check(bool ok, std::uint32_t input, std::uint32_t got, std::uint32_t expected) {
    if (ok) return;
    if (++count_ <= 5)
      ADD_FAILURE() << what_ << ": input 0x" << std::hex << input << " gave 0x" << got
                    << ", expected 0x" << expected;
  }

 private:
  const char* what_;
  std::int64_t count_ = 0;
};

// ---- widening -----------------------------------------------------------------------------------

TEST(Half, Bf16WideningIsExactForAllPatterns) {
  Mismatches scalar("bf16 -> float, scalar");
  std::vector<bf16> all(0x10000);
  for (std::uint32_t h = 0; h < 0x10000u; ++h) {
    all[h] = bf16{static_cast<std::uint16_t>(h)};
    const std::uint32_t got = bits_of(multihead::to_float(all[h]));
    if ((h & 0x7fffu) > 0x7f80u) {  // NaN: stays NaN, same sign and payload
      scalar.check(is_nan_bits(got) && got == h << 16, h, got, h << 16);
    } else {
      const std::uint32_t expected = bits_of(widen_reference(static_cast<std::uint16_t>(h), 8));
      scalar.check(got == expected, h, got, expected);
    }
  }
  Mismatches bulk("bf16 -> float, bulk");
  const std::vector<float> widened = convert_in_chunks<bf16, float>(all, -7.0f);
  for (std::uint32_t h = 0; h < 0x10000u; ++h) {
    const std::uint32_t got = bits_of(widened[h]), expected = bits_of(multihead::to_float(all[h]));
    bulk.check(got == expected, h, got, expected);
  }
}

TEST(Half, Fp16WideningIsExactForAllPatterns) {
  Mismatches scalar("fp16 -> float, scalar");
  std::vector<fp16> all(0x10000);
  for (std::uint32_t h = 0; h < 0x10000u; ++h) {
    all[h] = fp16{static_cast<std::uint16_t>(h)};
    const std::uint32_t got = bits_of(multihead::to_float(all[h]));
    if ((h & 0x7fffu) > 0x7c00u) {  // NaN: quiet, same sign, payload kept in the top bits
      const std::uint32_t expected = ((h & 0x8000u) << 16) | 0x7fc00000u | ((h & 0x3ffu) << 13);
      scalar.check(got == expected, h, got, expected);
    } else {
      const std::uint32_t expected = bits_of(widen_reference(static_cast<std::uint16_t>(h), 5));
      scalar.check(got == expected, h, got, expected);
    }
  }
  Mismatches bulk("fp16 -> float, bulk");
  const std::vector<float> widened = convert_in_chunks<fp16, float>(all, -7.0f);
  for (std::uint32_t h = 0; h < 0x10000u; ++h) {
    const std::uint32_t got = bits_of(widened[h]), expected = bits_of(multihead::to_float(all[h]));
    bulk.check(got == expected, h, got, expected);
  }
}

// Narrowing what widening produced gives back the same bits, for every non-NaN pattern.
TEST(Half, RoundTripsEveryNonNanPattern) {
  Mismatches bf("bf16 round trip"), fp("fp16 round trip");
  for (std::uint32_t h = 0; h < 0x10000u; ++h) {
    const auto b = static_cast<std::uint16_t>(h);
    if ((h & 0x7fffu) <= 0x7f80u) {
      const std::uint16_t got = multihead::to_bf16(multihead::to_float(bf16{b})).bits;
      bf.check(got == b, h, got, b);
    }
    if ((h & 0x7fffu) <= 0x7c00u) {
      const std::uint16_t got = multihead::to_fp16(multihead::to_float(fp16{b})).bits;
      fp.check(got == b, h, got, b);
    }
  }
}

// ---- narrowing ----------------------------------------------------------------------------------

TEST(Half, Bf16NarrowingRoundsToNearestEven) {
  const std::vector<float> inputs = narrowing_inputs();
  Mismatches scalar("float -> bf16, scalar");
  for (float x : inputs) {
    const std::uint16_t got = multihead::to_bf16(x).bits, expected = bf16_reference(x);
    scalar.check(got == expected, bits_of(x), got, expected);
  }
  Mismatches bulk("float -> bf16, bulk");
  const std::vector<bf16> narrowed = convert_in_chunks<float, bf16>(inputs, bf16{0x5555});
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    const std::uint16_t got = narrowed[i].bits, expected = multihead::to_bf16(inputs[i]).bits;
    bulk.check(got == expected, bits_of(inputs[i]), got, expected);
  }
}

TEST(Half, Fp16NarrowingRoundsToNearestEven) {
  const std::vector<float> inputs = narrowing_inputs();
  Mismatches scalar("float -> fp16, scalar");
  for (float x : inputs) {
    const std::uint16_t got = multihead::to_fp16(x).bits, expected = fp16_reference(x);
    scalar.check(got == expected, bits_of(x), got, expected);
  }
  Mismatches bulk("float -> fp16, bulk");
  const std::vector<fp16> narrowed = convert_in_chunks<float, fp16>(inputs, fp16{0x5555});
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    const std::uint16_t got = narrowed[i].bits, expected = multihead::to_fp16(inputs[i]).bits;
    bulk.check(got == expected, bits_of(inputs[i]), got, expected);
  }
}

// A few values spelled out, so a reader sees the contract (and a wrong reference cannot hide it).
TEST(Half, KnownValues) {
  using multihead::to_bf16;
  using multihead::to_fp16;
  const float inf = std::numeric_limits<float>::infinity();
  EXPECT_EQ(to_bf16(1.0f).bits, 0x3f80);
  EXPECT_EQ(to_bf16(float_of(0x3f808000)).bits, 0x3f80);  // tie, to even (down)
  EXPECT_EQ(to_bf16(float_of(0x3f818000)).bits, 0x3f82);  // tie, to even (up)
  EXPECT_EQ(to_bf16(float_of(0x3f808001)).bits, 0x3f81);
  EXPECT_EQ(to_bf16(std::numeric_limits<float>::max()).bits, 0x7f80);  // rounds up to inf
  EXPECT_EQ(to_bf16(-inf).bits, 0xff80);
  EXPECT_EQ(to_bf16(-0.0f).bits, 0x8000);
  EXPECT_EQ(to_bf16(float_of(0x7f800001)).bits, 0x7fc0);  // signalling NaN becomes quiet
  EXPECT_EQ(to_bf16(float_of(0xffc00000)).bits, 0xffc0);
  EXPECT_EQ(to_bf16(float_of(0x00018000)).bits, 0x0002);  // float subnormal, tie up to even
  EXPECT_EQ(to_fp16(1.0f).bits, 0x3c00);
  EXPECT_EQ(to_fp16(65504.0f).bits, 0x7bff);
  EXPECT_EQ(to_fp16(65519.996f).bits, 0x7bff);
  EXPECT_EQ(to_fp16(65520.0f).bits, 0x7c00);  // the tie above the largest half: inf
  EXPECT_EQ(to_fp16(-1e30f).bits, 0xfc00);
  EXPECT_EQ(to_fp16(5.960464477539063e-08f).bits, 0x0001);   // 2^-24
  EXPECT_EQ(to_fp16(2.9802322387695312e-08f).bits, 0x0000);  // 2^-25, a tie: to 0
  EXPECT_EQ(to_fp16(8.940696716308594e-08f).bits, 0x0002);   // 3·2^-25, a tie: up to 2
  EXPECT_EQ(to_fp16(6.1005353927612305e-05f).bits, 0x0400);  // tie below 2^-14: up, a normal
  EXPECT_EQ(to_fp16(float_of(0x7f800001)).bits, 0x7e00);
  EXPECT_EQ(to_fp16(float_of(0xffc00000)).bits, 0xfe00);
  EXPECT_EQ(multihead::to_float(fp16{0x0001}), 5.960464477539063e-08f);
  EXPECT_EQ(multihead::to_float(fp16{0xfbff}), -65504.0f);
  EXPECT_EQ(multihead::to_float(bf16{0x4049}), 3.140625f);
  EXPECT_EQ(multihead::from_float<bf16>(1.0f).bits, 0x3f80);
  EXPECT_EQ(multihead::from_float<fp16>(1.0f).bits, 0x3c00);
  EXPECT_EQ(multihead::from_float<float>(1.5f), 1.5f);
}

// Lengths known at compile time, as a caller's fixed-size buffers give: the bulk functions
// inline with their loop bounds folded, where GCC 12 once warned of undefined behaviour in the
// remainder loops (-Waggressive-loop-optimizations, an error under this build's -Werror).
TEST(Half, FixedLengthBulkConversionsMatchTheScalarOnes) {
  constexpr std::size_t n = 64;
  std::array<float, n> src{}, from_bf16{}, from_fp16{};
  std::array<bf16, n> b{};
  std::array<fp16, n> h{};
  for (std::size_t i = 0; i < n; ++i) src[i] = static_cast<float>(i) * 0.37f - 9.0f;
  multihead::convert(src.data(), b.data(), n);
  multihead::convert(src.data(), h.data(), n);
  multihead::convert(b.data(), from_bf16.data(), n);
  multihead::convert(h.data(), from_fp16.data(), n);
  for (std::size_t i = 0; i < n; ++i) {
    EXPECT_EQ(b[i].bits, multihead::to_bf16(src[i]).bits) << i;
    EXPECT_EQ(h[i].bits, multihead::to_fp16(src[i]).bits) << i;
    EXPECT_EQ(from_bf16[i], multihead::to_float(b[i])) << i;
    EXPECT_EQ(from_fp16[i], multihead::to_float(h[i])) << i;
  }
}

TEST(Half, FloatToFloatIsACopy) {
  std::vector<float> src(33), dst(33, 0.0f);
  for (std::size_t i = 0; i < src.size(); ++i) src[i] = static_cast<float>(i) * 0.25f - 3.0f;
  multihead::convert(src.data(), dst.data(), 33);
  EXPECT_EQ(src, dst);
  multihead::convert(src.data(), dst.data(), 0);  // nothing, and no null-pointer memcpy
}

}  // namespace
