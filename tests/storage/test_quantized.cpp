// Quantized KV storage (storage/quantized.hpp, the q8 and q4 codecs of codec.hpp): each value
// decodes within half a step of what was appended, the step no larger than the format promises;
// a non-finite value spoils its own block and no other; the ISA's in-register loads decode what
// the blocks hold; and the decode kernel over every cache of q8 and q4 meets the accuracy
// standard against the naive double reference over the stored (dequantized) values. The blocks
// are read here by this file's own decoder, from the layout the header documents.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "support/kernel_testing.hpp"
#include "support/testing.hpp"

namespace {

using namespace kernel_testing;
using multihead::Codec;
using multihead::KvCache;
using multihead::LatentCache;
using multihead::PagedKvCache;
using multihead::PagedLatentCache;
using multihead::q4;
using multihead::q8;

// ---- This file's decoder: the documented layout, read field by field ---------------------------

double widen_bf16(std::uint16_t bits) {
  const std::uint32_t u = std::uint32_t{bits} << 16;
  float x;
  std::memcpy(&x, &u, sizeof x);
  return x;
}

double value_of(const q8& b, int i) { return widen_bf16(b.scale.bits) * b.q[i]; }
double value_of(const q4& b, int i) {
  const int level = (b.q[i % 16] >> (i < 16 ? 0 : 4)) & 15;
  return widen_bf16(b.min.bits) + widen_bf16(b.scale.bits) * level;
}
double step_of(const q8& b) { return widen_bf16(b.scale.bits); }
double step_of(const q4& b) { return widen_bf16(b.scale.bits); }

// A row of n values stored as blocks, decoded.
template <class B>
std::vector<double> decoded(const std::vector<B>& row, std::int64_t n) {
  std::vector<double> out(std::size_t(n), 0.0);
  for (std::int64_t i = 0; i < n; ++i) out[std::size_t(i)] = value_of(row[std::size_t(i / 32)], int(i % 32));
  return out;
}

template <class B>
std::vector<B> encoded(const std::vector<float>& x) {
  std::vector<B> row(std::size_t(Codec<B>::units(std::int64_t(x.size()))));
  Codec<B>::encode(x.data(), std::int64_t(x.size()), row.data());
  return row;
}

// The largest step each format allows for a block's values: 127 levels either side of 0 (q8),
// 15 steps from the minimum, rounded down to bf16, to the maximum (q4); the scale rounded up to
// bf16 (8 significant bits: up to 2^-7 more).
double promised_step(const q8*, double largest, double, double) { return largest / 127 * (1 + 1.0 / 128); }
double promised_step(const q4*, double, double lo, double hi) {
  return (hi - lo + std::abs(lo) / 128) / 15 * (1 + 1.0 / 128);
}

template <class B>
class Quantized : public ::testing::Test {};
using Formats = ::testing::Types<q8, q4>;
TYPED_TEST_SUITE(Quantized, Formats);

TYPED_TEST(Quantized, EveryValueWithinHalfAStepThatTheFormatBounds) {
  using B = TypeParam;
  // Whole and partial blocks; values of mixed scale, all positive, and with an outlier.
  for (std::int64_t n : {1, 5, 31, 32, 33, 64, 80, 128, 200}) {
    for (int kind = 0; kind < 3; ++kind) {
      SCOPED_TRACE("n " + std::to_string(n) + ", kind " + std::to_string(kind));
      std::vector<float> x = naive::random_vector(n, std::uint64_t(n * 7 + kind), -3.0f, 3.0f);
      if (kind == 1)
        for (float& e : x) e = std::abs(e) + 10.0f;
      if (kind == 2) x[std::size_t(n / 2)] = 250.0f;
      const std::vector<B> row = encoded<B>(x);
      const std::vector<double> y = decoded(row, n);
      for (std::int64_t b = 0; b * 32 < n; ++b) {
        double largest = 0, lo = 0, hi = 0;  // the block's values and its zero padding
        if (std::min<std::int64_t>(32, n - b * 32) == 32) lo = hi = x[std::size_t(b * 32)];
        for (std::int64_t i = b * 32; i < std::min(n, b * 32 + 32); ++i) {
          largest = std::max(largest, double(std::abs(x[std::size_t(i)])));
          lo = std::min(lo, double(x[std::size_t(i)]));
          hi = std::max(hi, double(x[std::size_t(i)]));
        }
        const double step = step_of(row[std::size_t(b)]);
        EXPECT_LE(step, promised_step(static_cast<const B*>(nullptr), largest, lo, hi)) << "block " << b;
        for (std::int64_t i = b * 32; i < std::min(n, b * 32 + 32); ++i)
          EXPECT_LE(std::abs(y[std::size_t(i)] - x[std::size_t(i)]), step / 2 * (1 + 1e-6) + 1e-30)
              << "value " << i << " of " << x[std::size_t(i)];
      }
    }
  }
}

// The kernels widen blocks in registers (Codec::load) and row by row (Codec::widen): both must
// give the values the blocks hold.
TYPED_TEST(Quantized, TheIsaDecodesWhatTheBlocksHold) {
  using B = TypeParam;
  using Ops = multihead::simd::Ops;
  for (std::int64_t n : {32, 37, 96, 576}) {
    SCOPED_TRACE("n " + std::to_string(n));
    const std::vector<float> x = naive::random_vector(n, std::uint64_t(n), -5.0f, 5.0f);
    const std::vector<B> row = encoded<B>(x);
    const std::vector<double> expected = decoded(row, n);
    std::vector<float> widened(std::size_t(n) + 1, -1.0f);
    Codec<B>::template widen<Ops>(row.data(), n, widened.data());
    EXPECT_EQ(widened[std::size_t(n)], -1.0f) << "written past n";
    alignas(64) float lanes[Ops::W];
    for (std::int64_t i = 0; i < n; ++i) {
      // One fused or two rounded float operations from the double value: within 2 ulp.
      const double tolerance = 2.5e-7 * (std::abs(expected[std::size_t(i)]) + step_of(row[std::size_t(i / 32)]) * 16);
      EXPECT_NEAR(widened[std::size_t(i)], expected[std::size_t(i)], tolerance) << "widen, value " << i;
      if (i % Ops::W == 0 && i + Ops::W <= Codec<B>::units(n) * 32) {
        Ops::store(lanes, Codec<B>::template load<Ops>(row.data(), i));
        for (int l = 0; l < Ops::W && i + l < n; ++l)
          EXPECT_NEAR(lanes[l], expected[std::size_t(i + l)], tolerance) << "load, value " << i + l;
      }
    }
  }
}

TYPED_TEST(Quantized, ANonFiniteValueSpoilsItsBlockAndNoOther) {
  using B = TypeParam;
  using Ops = multihead::simd::Ops;
  for (const float bad : {std::nanf(""), test_support::kInf, -test_support::kInf}) {
    std::vector<float> x = naive::random_vector(96, 3, -1.0f, 1.0f);
    x[40] = bad;  // block 1 of 3
    const std::vector<B> row = encoded<B>(x);
    std::vector<float> y(96);
    Codec<B>::template widen<Ops>(row.data(), 96, y.data());
    for (int i = 0; i < 96; ++i) {
      if (i / 32 == 1)
        EXPECT_TRUE(std::isnan(y[std::size_t(i)])) << "value " << i;
      else
        EXPECT_TRUE(std::isfinite(y[std::size_t(i)])) << "value " << i;
    }
    EXPECT_FALSE(Codec<B>::finite(row.data(), 96));
    EXPECT_TRUE(Codec<B>::finite(row.data(), 32));  // block 0 alone
  }
}

TYPED_TEST(Quantized, ZerosTinyAndHugeValuesStayFinite) {
  using B = TypeParam;
  const float big = std::numeric_limits<float>::max();
  const std::vector<std::vector<float>> rows = {
      std::vector<float>(32, 0.0f),
      std::vector<float>(32, 1e-44f),  // a scale below bf16's smallest subnormal
      {0.95f * big, -0.95f * big, big / 2, -big / 3, 1.0f, 0.0f},  // a span beyond FLT_MAX
      {-0.95f * big, -0.95f * big, -0.95f * big},
  };
  for (const auto& x : rows) {
    const std::vector<B> row = encoded<B>(x);
    EXPECT_TRUE(Codec<B>::finite(row.data(), std::int64_t(x.size())));
    const std::vector<double> y = decoded(row, std::int64_t(x.size()));
    for (std::size_t i = 0; i < x.size(); ++i) {
      EXPECT_TRUE(std::isfinite(y[i]));
      // Within a step of the block's span (values within 2 % of FLT_MAX may become ±inf).
      EXPECT_LE(std::abs(y[i] - x[i]), 0.01 * std::abs(double(x[i])) + step_of(row[0]) + 1e-40);
    }
  }
}

TEST(QuantizedCaches, BytesPerTokenCountTheBlocksAndTheirScales) {
  EXPECT_EQ(KvCache<q8>(1, 4, 8, 128).bytes_per_token(), 8 * 2 * 4 * 34);
  EXPECT_EQ(KvCache<q4>(1, 4, 8, 128).bytes_per_token(), 8 * 2 * 4 * 20);
  EXPECT_EQ(PagedKvCache<q8>(4, 16, 8, 80).bytes_per_token(), 8 * 2 * 3 * 34);
  EXPECT_EQ(LatentCache<q4>(1, 4, 512, 64).bytes_per_token(), (16 + 2) * 20);
  EXPECT_EQ(PagedLatentCache<q8>(4, 16, 512, 64).bytes_per_token(), (16 + 2) * 34);
}

TEST(QuantizedCaches, ALatentThatSplitsABlockIsRefusedNamingIt) {
  EXPECT_INVALID("latent_dim (500) must be a multiple of 32 in a quantized latent cache",
                 LatentCache<q8>(1, 4, 500, 64));
  EXPECT_INVALID("latent_dim (100) must be a multiple of 32 in a quantized latent cache",
                 PagedLatentCache<q4>(4, 16, 100, 0));
}

// ---- The decode kernel over quantized caches ----------------------------------------------------

// What a cache's rows decode to, by this file's decoder: [batch, tokens, groups, dim] floats from
// block views whose last axis counts blocks.
template <class B>
std::vector<float> decode_view(const multihead::TensorView<const B>& view, std::int64_t dim) {
  std::vector<float> out;
  for (std::int64_t b = 0; b < view.batch(); ++b)
    for (std::int64_t t = 0; t < view.tokens(); ++t)
      for (std::int64_t g = 0; g < view.heads(); ++g) {
        const B* row = view.row(b, t, g);
        for (std::int64_t i = 0; i < dim; ++i) out.push_back(float(value_of(row[i / 32], int(i % 32))));
      }
  return out;
}

LibResult new_result(const AttentionShape& shape) {
  LibResult lib;
  lib.o.assign(std::size_t(shape.o_size()), std::nanf(""));
  lib.lse.assign(std::size_t(shape.lse_size()), std::nanf(""));
  return lib;
}

// Rows per group from the row-major tiles (1, 4) to the transposed ones (32); head dims of whole
// blocks, of a partial last block read in place (80), and padded into a tile (37).
TYPED_TEST(Quantized, DecodeOverContiguousAndPagedCachesMeetsTheStandard) {
  using B = TypeParam;
  for (std::int64_t d : {128, 80, 37})
    for (int group_size : {1, 4, 32}) {
      const std::int64_t groups = 2, batch = 2, len = 300, q_len = 2;
      const AttentionShape shape = make_shape(batch, q_len, len, groups * group_size, groups, d, d);
      SCOPED_TRACE(describe(shape));
      Inputs in = make_inputs(shape, std::uint64_t(d * 5 + group_size), 2.0f);
      const multihead::TensorView<const float> k(in.k.data(), shape.k_size(), batch, len, groups, d);
      const multihead::TensorView<const float> v(in.v.data(), shape.v_size(), batch, len, groups, d);
      KvCache<B> cache(batch, len, groups, d);
      cache.append(k, v);
      PagedKvCache<B> paged(2 * ((len + 15) / 16), 16, groups, d);
      std::vector<std::int64_t> ids;
      for (std::int64_t b = 0; b < batch; ++b) {
        ids.push_back(paged.add_sequence());
        const std::int64_t token = groups * d;
        paged.append(ids.back(),
                     multihead::TensorView<const float>(in.k.data() + b * len * token, len * token, 1, len, groups, d),
                     multihead::TensorView<const float>(in.v.data() + b * len * token, len * token, 1, len, groups, d));
      }
      in.k = decode_view(cache.keys(), d);
      in.v = decode_view(cache.values(), d);
      KernelOptions options;
      options.causal = true;
      options.threads = 2;
      const Oracle oracle = run_oracle(in, options);
      const multihead::TensorView<const float> q(in.q.data(), shape.q_size(), batch, q_len, shape.heads, d);
      LibResult lib = new_result(shape);
      multihead::decode_attention(q, cache, multihead::TensorView<float>(lib.o.data(), shape.o_size(), batch, q_len, shape.heads, d),
                                  options, multihead::LseOutput{lib.lse.data(), shape.lse_size()});
      expect_meets_standard(lib, oracle);
      LibResult paged_lib = new_result(shape);
      multihead::decode_attention(q, paged, multihead::Span<const std::int64_t>{ids.data(), batch},
                                  multihead::TensorView<float>(paged_lib.o.data(), shape.o_size(), batch, q_len, shape.heads, d),
                                  options, multihead::LseOutput{paged_lib.lse.data(), shape.lse_size()});
      expect_meets_standard(paged_lib, oracle);
    }
}

// MLA's absorbed decoding over latent caches: 16 heads (the transposed tiles' wide-head rows)
// over 512 latent and 64 RoPE values per token, keys the whole row, values its latent.
TYPED_TEST(Quantized, DecodeOverLatentCachesMeetsTheStandard) {
  using B = TypeParam;
  const std::int64_t batch = 2, len = 200, latent = 512, rope = 64, heads = 16, q_len = 1;
  const AttentionShape shape = make_shape(batch, q_len, len, heads, 1, latent + rope, latent);
  Inputs in = make_inputs(shape, 41, 0.3f);
  // The rows as appended: c_kv is each key row's first 512 values, k_rope the rest.
  std::vector<float> c_kv, k_rope;
  for (std::int64_t t = 0; t < batch * len; ++t) {
    const float* row = in.k.data() + t * (latent + rope);
    c_kv.insert(c_kv.end(), row, row + latent);
    k_rope.insert(k_rope.end(), row + latent, row + latent + rope);
  }
  LatentCache<B> cache(batch, len, latent, rope);
  cache.append(multihead::TensorView<const float>(c_kv.data(), std::int64_t(c_kv.size()), batch, len, 1, latent),
               multihead::TensorView<const float>(k_rope.data(), std::int64_t(k_rope.size()), batch, len, 1, rope));
  PagedLatentCache<B> paged(2 * ((len + 15) / 16), 16, latent, rope);
  std::vector<std::int64_t> ids;
  for (std::int64_t b = 0; b < batch; ++b) {
    ids.push_back(paged.add_sequence());
    paged.append(ids.back(),
                 multihead::TensorView<const float>(c_kv.data() + b * len * latent, len * latent, 1, len, 1, latent),
                 multihead::TensorView<const float>(k_rope.data() + b * len * rope, len * rope, 1, len, 1, rope));
  }
  in.k = decode_view(cache.keys(), latent + rope);
  in.v = decode_view(cache.values(), latent);
  KernelOptions options;
  options.threads = 2;
  const Oracle oracle = run_oracle(in, options);
  const multihead::TensorView<const float> q(in.q.data(), shape.q_size(), batch, q_len, heads, latent + rope);
  LibResult lib = new_result(shape);
  multihead::decode_attention(q, cache, multihead::TensorView<float>(lib.o.data(), shape.o_size(), batch, q_len, heads, latent),
                              options, multihead::LseOutput{lib.lse.data(), shape.lse_size()});
  expect_meets_standard(lib, oracle);
  LibResult paged_lib = new_result(shape);
  multihead::decode_attention(q, paged, multihead::Span<const std::int64_t>{ids.data(), batch},
                              multihead::TensorView<float>(paged_lib.o.data(), shape.o_size(), batch, q_len, heads, latent),
                              options, multihead::LseOutput{paged_lib.lse.data(), shape.lse_size()});
  expect_meets_standard(paged_lib, oracle);
}

// A hidden key's block may hold anything: a NaN in the V of a key a causal row cannot see
// must not reach it (attention/modifiers.hpp), as for the plain types.
TYPED_TEST(Quantized, AHiddenKeysNonFiniteBlockNeverReachesARow) {
  using B = TypeParam;
  const std::int64_t len = 64, d = 64, heads = 4;
  const AttentionShape shape = make_shape(1, 2, len, heads, 1, d, d);
  Inputs in = make_inputs(shape, 9);
  in.v[std::size_t((len - 1) * d + 3)] = std::nanf("");  // the last key: the first query hides it
  KvCache<B> cache(1, len, 1, d);
  cache.append(multihead::TensorView<const float>(in.k.data(), shape.k_size(), 1, len, 1, d),
               multihead::TensorView<const float>(in.v.data(), shape.v_size(), 1, len, 1, d));
  KernelOptions options;
  options.causal = true;
  LibResult lib = new_result(shape);
  multihead::decode_attention(
      multihead::TensorView<const float>(in.q.data(), shape.q_size(), 1, 2, heads, d), cache,
      multihead::TensorView<float>(lib.o.data(), shape.o_size(), 1, 2, heads, d), options,
      multihead::LseOutput{lib.lse.data(), shape.lse_size()});
  // The NaN's block, V's columns 0 to 31, decodes to NaN; columns 32 to 63 stay finite.
  for (std::int64_t h = 0; h < heads; ++h)
    for (std::int64_t c = 0; c < d; ++c) {
      EXPECT_TRUE(std::isfinite(lib.o[std::size_t(h * d + c)])) << "query 0 sees the NaN block";
      EXPECT_EQ(std::isnan(lib.o[std::size_t((heads + h) * d + c)]), c < 32) << "query 1, column " << c;
    }
}

}  // namespace
