// bf16 and fp16 queries, keys, values and outputs (attention/activations.hpp; fused_attention,
// decode_attention and the varlen kernels over them) against the naive double reference over the
// same values, under the accuracy standard with the naive computation in the same precision:
// the inputs as given, scores, softmax and sums in fp32, the probabilities rounded to bf16 where
// the kernel may run its products on the bf16 dot product (Q, K and V all bf16: P is then an
// input of a bf16 product, as in any bf16 P·V), and the output rounded to its type.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "support/kernel_testing.hpp"
#include "support/naive_low_precision.hpp"

namespace {

using namespace kernel_testing;
using multihead::bf16;
using multihead::fp16;
using naive::naive_attention;
using naive::Result;
using naive::Visibility;

// Values of element type T and the floats they hold exactly.
template <class T>
struct Values {
  std::vector<T> stored;
  std::vector<float> exact;
};

template <class T>
Values<T> make_values(std::int64_t count, std::uint64_t seed, float magnitude) {
  Values<T> x;
  for (float f : naive::random_vector(count, seed, -magnitude, magnitude)) {
    x.stored.push_back(multihead::from_float<T>(f));
    x.exact.push_back(multihead::to_float(x.stored.back()));
  }
  return x;
}

template <class Q, class KV, class O>
struct Problem {
  AttentionShape shape;
  Values<Q> q;
  Values<KV> k, v;
  std::vector<O> o;
  std::vector<float> lse;

  Problem(const AttentionShape& s, std::uint64_t seed)
      : shape(s),
        q(make_values<Q>(s.q_size(), seed * 3 + 1, 2.0f)),
        k(make_values<KV>(s.k_size(), seed * 3 + 2, 2.0f)),
        v(make_values<KV>(s.v_size(), seed * 3 + 3, 1.0f)),
        o(std::size_t(s.o_size()), multihead::from_float<O>(std::nanf(""))),
        lse(std::size_t(s.lse_size()), std::nanf("")) {}

  TensorView<const Q> q_view() const {
    return {q.stored.data(), shape.q_size(), shape.batch, shape.q_len, shape.heads,
            shape.head_dim};
  }
  TensorView<const KV> k_view() const {
    return {k.stored.data(), shape.k_size(), shape.batch, shape.kv_len, shape.kv_groups,
            shape.head_dim};
  }
  TensorView<const KV> v_view() const {
    return {v.stored.data(), shape.v_size(), shape.batch, shape.kv_len, shape.kv_groups,
            shape.value_dim};
  }
  TensorView<O> o_view() {
    return {o.data(), shape.o_size(), shape.batch, shape.q_len, shape.heads, shape.value_dim};
  }
  LseOutput lse_out() { return {lse.data(), shape.lse_size()}; }

  // The call's result against the oracle, under the standard.
  void expect_meets_standard(const Visibility& visible, bool round_p) const {
    const Result<double> exact =
        naive_attention<double, double>(shape, q.exact, k.exact, v.exact, visible, false);
    const Result<double> naive =
        naive_attention<float, O>(shape, q.exact, k.exact, v.exact, visible, round_p);
    std::vector<double> lib_o;
    for (const O& x : o) lib_o.push_back(multihead::to_float(x));
    EXPECT_FALSE(naive::any_nan(lib_o)) << "NaN in the output";
    EXPECT_TRUE(naive::within_standard("o", lib_o, exact.o, naive.o));
    EXPECT_TRUE(naive::within_standard("lse", lse, exact.lse, naive.lse));
  }
};

constexpr bool kBf16Products(bool q, bool kv) { return q && kv; }

struct Case {
  AttentionShape shape;
  Visibility visible;
};

std::vector<Case> fused_cases() {
  return {{make_shape(2, 37, 150, 8, 2, 64, 64), {true, -1}},
          {make_shape(1, 70, 70, 4, 4, 128, 128), {true, -1}},
          {make_shape(2, 19, 40, 6, 3, 40, 24), {false, -1}},
          {make_shape(1, 33, 200, 2, 1, 256, 256), {true, 50}},
          {make_shape(1, 5, 300, 16, 1, 128, 128), {false, -1}}};
}

template <class Q, class KV, class O>
void check_fused() {
  std::uint64_t seed = 1;
  for (const Case& c : fused_cases()) {
    SCOPED_TRACE(describe(c.shape) + ", q " + multihead::element_name<Q>() + ", k/v " +
                 multihead::element_name<KV>() + ", o " + multihead::element_name<O>());
    Problem<Q, KV, O> p(c.shape, seed++);
    KernelOptions options;
    options.causal = c.visible.causal;
    if (c.visible.window_left >= 0) options.window_left = c.visible.window_left;
    multihead::fused_attention(p.q_view(), p.k_view(), p.v_view(), p.o_view(), options,
                               p.lse_out());
    p.expect_meets_standard(c.visible, kBf16Products(std::is_same_v<Q, bf16>,
                                                     std::is_same_v<KV, bf16>));
  }
}

TEST(LowPrecisionFused, Bf16Everywhere) { check_fused<bf16, bf16, bf16>(); }
TEST(LowPrecisionFused, Bf16InFloatOut) { check_fused<bf16, bf16, float>(); }
TEST(LowPrecisionFused, Fp16Everywhere) { check_fused<fp16, fp16, fp16>(); }
TEST(LowPrecisionFused, FloatQueriesOverBf16) { check_fused<float, bf16, float>(); }
TEST(LowPrecisionFused, Bf16QueriesOverFloat) { check_fused<bf16, float, bf16>(); }
TEST(LowPrecisionFused, Fp16QueriesOverBf16) { check_fused<fp16, bf16, fp16>(); }

template <class Q, class KV, class O>
void check_decode() {
  std::uint64_t seed = 40;
  // Row-major tiles (GQA 32/8: 4 rows; bf16 in pairs at d 128), transposed ones (MQA: 32 rows),
  // general dims, several query tokens with causal masking.
  const Case cases[] = {{make_shape(2, 1, 300, 32, 8, 128, 128), {false, -1}},
                        {make_shape(2, 1, 300, 32, 1, 128, 128), {false, -1}},
                        {make_shape(1, 3, 150, 8, 2, 40, 24), {true, -1}},
                        {make_shape(2, 4, 500, 8, 1, 64, 64), {true, -1}}};
  for (const Case& c : cases) {
    SCOPED_TRACE(describe(c.shape) + ", q " + multihead::element_name<Q>() + ", k/v " +
                 multihead::element_name<KV>() + ", o " + multihead::element_name<O>());
    Problem<Q, KV, O> p(c.shape, seed++);
    KernelOptions options;
    options.causal = c.visible.causal;
    multihead::decode_attention(p.q_view(), p.k_view(), p.v_view(), p.o_view(), options,
                                p.lse_out());
    // The transposed tiles run bf16 queries over bf16 rows on the bf16 products.
    p.expect_meets_standard(c.visible, std::is_same_v<Q, bf16> && std::is_same_v<KV, bf16>);
  }
}

TEST(LowPrecisionDecode, Bf16Everywhere) { check_decode<bf16, bf16, bf16>(); }
TEST(LowPrecisionDecode, Fp16QueriesFloatOut) { check_decode<fp16, bf16, float>(); }
TEST(LowPrecisionDecode, FloatQueriesFp16Out) { check_decode<float, fp16, fp16>(); }

// The caches hand the kernel the same rows as views of their layout: bitwise the same result.
TEST(LowPrecisionDecode, CachesTakeBf16Queries) {
  const AttentionShape s = make_shape(2, 1, 90, 8, 2, 64, 64);
  Problem<bf16, bf16, bf16> p(s, 7);
  multihead::decode_attention(p.q_view(), p.k_view(), p.v_view(), p.o_view());

  multihead::KvCache<bf16> cache(s.batch, s.kv_len, s.kv_groups, s.head_dim, s.value_dim);
  std::vector<float> k(p.k.exact), v(p.v.exact);
  cache.append(TensorView<const float>(k.data(), s.k_size(), s.batch, s.kv_len, s.kv_groups,
                                       s.head_dim),
               TensorView<const float>(v.data(), s.v_size(), s.batch, s.kv_len, s.kv_groups,
                                       s.value_dim));
  std::vector<bf16> o(p.o.size());
  multihead::decode_attention(p.q_view(), cache,
                              TensorView<bf16>(o.data(), s.o_size(), s.batch, s.q_len, s.heads,
                                               s.value_dim));
  for (std::size_t i = 0; i < o.size(); ++i) ASSERT_EQ(o[i].bits, p.o[i].bits) << "element " << i;
}

// Paged sequences: the bf16 products gather a tile's runs (an odd one ends a gathering: a pair
// never spans two runs), each sequence against its oracle.
void check_paged_bf16(std::int64_t block, std::int64_t heads, std::int64_t groups, std::int64_t q_len) {
  SCOPED_TRACE("blocks of " + std::to_string(block) + ", " + std::to_string(heads) + " heads / " +
               std::to_string(groups) + " groups, " + std::to_string(q_len) + " queries");
  const std::int64_t lengths[] = {200, 37}, d = 64;
  multihead::PagedKvCache<bf16> cache(80, block, groups, d);
  std::vector<Problem<bf16, bf16, float>> alone;
  std::vector<std::int64_t> ids;
  std::vector<bf16> q;
  for (std::int64_t i = 0; i < 2; ++i) {
    alone.emplace_back(make_shape(1, q_len, lengths[i], heads, groups, d, d), 60 + i);
    const Problem<bf16, bf16, float>& p = alone.back();
    ids.push_back(cache.add_sequence());
    const std::int64_t size = lengths[i] * groups * d;
    cache.append(ids.back(),
                 TensorView<const float>(p.k.exact.data(), size, 1, lengths[i], groups, d),
                 TensorView<const float>(p.v.exact.data(), size, 1, lengths[i], groups, d));
    q.insert(q.end(), p.q.stored.begin(), p.q.stored.end());
  }
  std::vector<float> o(q.size()), lse(std::size_t(2 * heads * q_len));
  KernelOptions options;
  options.causal = true;
  multihead::decode_attention(TensorView<const bf16>(q.data(), std::int64_t(q.size()), 2, q_len, heads, d),
                              cache, {ids.data(), 2},
                              TensorView<float>(o.data(), std::int64_t(o.size()), 2, q_len, heads, d),
                              options, {lse.data(), std::int64_t(lse.size())});
  for (std::size_t i = 0; i < 2; ++i) {
    SCOPED_TRACE("sequence " + std::to_string(i));
    Problem<bf16, bf16, float>& p = alone[i];
    std::copy(o.begin() + std::int64_t(i * p.o.size()), o.begin() + std::int64_t((i + 1) * p.o.size()), p.o.begin());
    std::copy(lse.begin() + std::int64_t(i * p.lse.size()), lse.begin() + std::int64_t((i + 1) * p.lse.size()), p.lse.begin());
    p.expect_meets_standard({true, -1}, true);
  }
}

TEST(LowPrecisionDecode, PagedOddBlocksTakeBf16Queries) { check_paged_bf16(7, 16, 1, 2); }
TEST(LowPrecisionDecode, PagedBlocksGatherTheirRuns) {
  check_paged_bf16(16, 8, 2, 12);
  check_paged_bf16(6, 8, 2, 12);
}

// An infinite value in a bf16 pool: in a paged chunk on the bf16 products, the rows
// that see its key get a non-finite output in its column, the others are as if it were 0 (the
// masked tile holding it takes the scalar update).
TEST(LowPrecisionDecode, PagedInfinityReachesOnlyTheRowsThatSeeIt) {
  const std::int64_t heads = 16, d = 64, tokens = 200, q_len = 20, key = 190, column = 5;
  const std::vector<float> k = naive::random_vector(std::size_t(tokens * d), 3);
  const std::vector<float> q = naive::random_vector(std::size_t(q_len * heads * d), 5);
  std::vector<bf16> qb(q.size());
  for (std::size_t i = 0; i < q.size(); ++i) qb[i] = multihead::to_bf16(q[i]);
  const auto decode = [&](float value) {
    std::vector<float> v = naive::random_vector(std::size_t(tokens * d), 4);
    v[std::size_t(key * d + column)] = value;
    multihead::PagedKvCache<bf16> cache(16, 16, 1, d);
    const auto seq = cache.add_sequence();
    cache.append(seq, TensorView<const float>(k.data(), tokens * d, 1, tokens, 1, d),
                 TensorView<const float>(v.data(), tokens * d, 1, tokens, 1, d));
    std::vector<float> o(q.size());
    KernelOptions options;
    options.causal = true;
    multihead::decode_attention(TensorView<const bf16>(qb.data(), std::int64_t(qb.size()), 1, q_len, heads, d),
                                cache, {&seq, 1},
                                TensorView<float>(o.data(), std::int64_t(o.size()), 1, q_len, heads, d),
                                options);
    return o;
  };
  const std::vector<float> seen = decode(std::numeric_limits<float>::infinity());
  const std::vector<float> clean = decode(0.0f);
  for (std::int64_t i = 0; i < q_len; ++i)
    for (std::int64_t h = 0; h < heads; ++h)
      for (std::int64_t c = 0; c < d; ++c) {
        const std::size_t x = std::size_t((i * heads + h) * d + c);
        const bool sees = tokens - q_len + i >= key;
        EXPECT_EQ(std::isfinite(seen[x]), !(sees && c == column)) << "query " << i << " column " << c;
        if (!sees || c != column) {
          EXPECT_NEAR(seen[x], clean[x], 2e-2f) << "query " << i;
        }
      }
}

// Packed sequences give, bitwise, what each sequence gives alone.
TEST(LowPrecisionVarlen, FusedEqualsEachSequenceAlone) {
  const std::vector<std::int64_t> cu_q = {0, 5, 5, 45}, cu_k = {0, 30, 31, 121};
  const std::int64_t heads = 4, groups = 2, d = 64;
  const AttentionShape packed = make_shape(1, cu_q.back(), cu_k.back(), heads, groups, d, d);
  Problem<bf16, bf16, bf16> p(packed, 11);
  KernelOptions options;
  options.causal = true;
  multihead::fused_attention_varlen(p.q_view(), p.k_view(), p.v_view(), p.o_view(),
                                    {cu_q.data(), 4}, {cu_k.data(), 4}, options);
  for (std::size_t i = 0; i + 1 < cu_q.size(); ++i) {
    const std::int64_t lq = cu_q[i + 1] - cu_q[i], lk = cu_k[i + 1] - cu_k[i];
    if (lq == 0) continue;
    std::vector<bf16> o(std::size_t(lq * heads * d));
    multihead::fused_attention(
        TensorView<const bf16>(p.q.stored.data() + cu_q[i] * heads * d, lq * heads * d, 1, lq,
                               heads, d),
        TensorView<const bf16>(p.k.stored.data() + cu_k[i] * groups * d, lk * groups * d, 1, lk,
                               groups, d),
        TensorView<const bf16>(p.v.stored.data() + cu_k[i] * groups * d, lk * groups * d, 1, lk,
                               groups, d),
        TensorView<bf16>(o.data(), lq * heads * d, 1, lq, heads, d), options);
    for (std::size_t x = 0; x < o.size(); ++x)
      ASSERT_EQ(o[x].bits, p.o[std::size_t(cu_q[i] * heads * d) + x].bits)
          << "sequence " << i << ", element " << x;
  }
}

TEST(LowPrecisionVarlen, DecodeTakesFp16Queries) {
  const std::vector<std::int64_t> cu = {0, 100, 260};
  const std::int64_t heads = 8, groups = 2, d = 64;
  const AttentionShape all = make_shape(1, 1, cu.back(), heads, groups, d, d);
  Problem<fp16, bf16, float> p(all, 13);
  std::vector<fp16> q = p.q.stored;
  q.insert(q.end(), p.q.stored.begin(), p.q.stored.end());  // the same query for both
  std::vector<float> o(std::size_t(2 * heads * d));
  multihead::decode_attention_varlen(TensorView<const fp16>(q.data(), 2 * heads * d, 2, 1, heads, d),
                                     p.k_view(), p.v_view(), {cu.data(), 3},
                                     TensorView<float>(o.data(), 2 * heads * d, 2, 1, heads, d));
  // Sequence 0 alone, as a batch of one over its own tokens.
  AttentionShape first = make_shape(1, 1, cu[1], heads, groups, d, d);
  Problem<fp16, bf16, float> alone(first, 0);
  alone.q.stored = p.q.stored;
  alone.q.exact = p.q.exact;
  alone.k.exact.assign(p.k.exact.begin(), p.k.exact.begin() + cu[1] * groups * d);
  alone.v.exact.assign(p.v.exact.begin(), p.v.exact.begin() + cu[1] * groups * d);
  alone.o.assign(o.begin(), o.begin() + heads * d);
  alone.lse.assign(std::size_t(heads), 0.0f);
  // lse was not asked for: compare the outputs only, against the oracle.
  const Result<double> exact = naive_attention<double, double>(first, alone.q.exact, alone.k.exact,
                                                               alone.v.exact, {}, false);
  const Result<double> naive =
      naive_attention<float, float>(first, alone.q.exact, alone.k.exact, alone.v.exact, {}, false);
  EXPECT_TRUE(naive::within_standard("o", alone.o, exact.o, naive.o));
}

// ---- Arguments ---------------------------------------------------------------------------------

TEST(LowPrecisionArguments, OutputOverQueriesOfAnotherTypeIsRejected) {
  const AttentionShape s = make_shape(1, 4, 6, 2, 1, 8, 8);
  Problem<float, float, float> p(s, 3);
  // o (bf16) laid over q's floats: not in place, an overlap.
  const TensorView<bf16> o(reinterpret_cast<bf16*>(p.q.stored.data()), s.o_size(), 1, 4, 2, 8);
  EXPECT_THROW(multihead::fused_attention(p.q_view(), p.k_view(), p.v_view(), o),
               std::invalid_argument);
}

TEST(LowPrecisionArguments, InPlaceBf16EqualsOutOfPlace) {
  const AttentionShape s = make_shape(2, 9, 30, 4, 2, 16, 16);
  Problem<bf16, bf16, bf16> p(s, 5);
  multihead::fused_attention(p.q_view(), p.k_view(), p.v_view(), p.o_view());
  std::vector<bf16> q = p.q.stored;
  const TensorView<bf16> inout(q.data(), s.q_size(), s.batch, s.q_len, s.heads, s.head_dim);
  multihead::fused_attention(inout, p.k_view(), p.v_view(), inout);
  for (std::size_t i = 0; i < q.size(); ++i) ASSERT_EQ(q[i].bits, p.o[i].bits) << "element " << i;
}

}  // namespace
