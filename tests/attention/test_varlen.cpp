// Ragged batches (varlen.hpp): packed sequences of different lengths in one call, for prefill
// (fused_attention_varlen) and decode (decode_attention_varlen), each sequence checked against
// the naive oracle with modifiers (naive_modified_reference.hpp) run on that sequence alone.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <utility>
#include <string>
#include <vector>

#include <multihead/multihead.hpp>

#include "support/naive_modified_reference.hpp"
#include "support/naive_reference.hpp"

namespace {

using multihead::KernelOptions;
using multihead::TensorView;
using Offsets = std::vector<std::int64_t>;

constexpr std::int64_t kHeads = 8, kGroups = 2, kDim = 40;

Offsets offsets_of(const std::vector<std::int64_t>& lengths) {
  Offsets cu = {0};
  for (std::int64_t n : lengths) cu.push_back(cu.back() + n);
  return cu;
}

// The modifiers of a case, for the library and for the oracle alike.
struct Case {
  const char* name;
  bool causal = true;
  std::int64_t window_left = -1;
  float softcap = 0.0f;
  bool alibi = false, sinks = false;
};

const std::vector<Case>& cases() {
  static const std::vector<Case> all = {
      {"plain", false}, {"causal"}, {"causal_window9_softcap3", true, 9, 3.0f},
      {"alibi_sinks", true, -1, 0.0f, true, true}, {"noncausal_window4", false, 4}};
  return all;
}

struct Modifiers {
  std::vector<float> slopes = multihead::alibi_slopes(kHeads), sinks;
  Modifiers() {
    for (std::int64_t h = 0; h < kHeads; ++h) sinks.push_back(0.3f * float(h) - 1.0f);
  }
  KernelOptions options(const Case& c, int threads) const {
    KernelOptions o;
    o.causal = c.causal;
    o.window_left = c.window_left;
    o.softcap = c.softcap;
    if (c.alibi) o.alibi_slopes = {slopes.data(), kHeads};
    if (c.sinks) o.sinks = {sinks.data(), kHeads};
    o.threads = threads;
    return o;
  }
  naive::Modifiers oracle(const Case& c) const {
    naive::Modifiers m;
    m.causal = c.causal;
    m.window_left = c.window_left;
    m.softcap = c.softcap;
    if (c.alibi) m.alibi_slopes.assign(slopes.begin(), slopes.end());
    if (c.sinks) m.sinks.assign(sinks.begin(), sinks.end());
    return m;
  }
};

// Sequence i of a packed [total, heads, dim] buffer, copied out.
std::vector<float> rows_of(const std::vector<float>& packed, const Offsets& cu, std::size_t i,
                           std::int64_t width) {
  return std::vector<float>(packed.begin() + cu[i] * width, packed.begin() + cu[i + 1] * width);
}

class Varlen : public ::testing::TestWithParam<int> {};  // threads

TEST_P(Varlen, PrefillEqualsEachSequenceAlone) {
  const int threads = GetParam();
  // Query and key lengths: equal, chunked prefill (fewer queries), no queries, no keys, one
  // token, tile boundaries.
  const std::vector<std::int64_t> q_lengths = {5, 0, 70, 1, 64, 3, 129};
  const std::vector<std::int64_t> k_lengths = {5, 3, 100, 1, 64, 0, 129};
  const Offsets cu_q = offsets_of(q_lengths), cu_k = offsets_of(k_lengths);
  const std::int64_t total_q = cu_q.back(), total_k = cu_k.back();
  const std::vector<float> q = naive::random_vector(total_q * kHeads * kDim, 1, -2.0f, 2.0f);
  const std::vector<float> k = naive::random_vector(total_k * kGroups * kDim, 2, -2.0f, 2.0f);
  const std::vector<float> v = naive::random_vector(total_k * kGroups * kDim, 3);
  const Modifiers modifiers;
  for (const Case& c : cases()) {
    SCOPED_TRACE(std::string(c.name) + ", threads " + std::to_string(threads));
    std::vector<float> o(q.size(), 7.0f), lse(static_cast<std::size_t>(kHeads * total_q), 7.0f);
    multihead::fused_attention_varlen(
        TensorView<const float>(q.data(), std::int64_t(q.size()), 1, total_q, kHeads, kDim),
        TensorView<const float>(k.data(), std::int64_t(k.size()), 1, total_k, kGroups, kDim),
        TensorView<const float>(v.data(), std::int64_t(v.size()), 1, total_k, kGroups, kDim),
        TensorView<float>(o.data(), std::int64_t(o.size()), 1, total_q, kHeads, kDim),
        {cu_q.data(), std::int64_t(cu_q.size())}, {cu_k.data(), std::int64_t(cu_k.size())},
        modifiers.options(c, threads), {lse.data(), std::int64_t(lse.size())});
    for (std::size_t i = 0; i < q_lengths.size(); ++i) {
      if (q_lengths[i] == 0) continue;
      SCOPED_TRACE("sequence " + std::to_string(i));
      naive::AttentionShape s;
      s.q_len = q_lengths[i];
      s.kv_len = k_lengths[i];
      s.heads = kHeads;
      s.kv_groups = kGroups;
      s.head_dim = s.value_dim = kDim;
      const std::vector<float> qi = rows_of(q, cu_q, i, kHeads * kDim),
                               ki = rows_of(k, cu_k, i, kGroups * kDim),
                               vi = rows_of(v, cu_k, i, kGroups * kDim);
      const naive::Modifiers m = modifiers.oracle(c);
      const auto exact = naive::modified_attention<double>(s, qi.data(), ki.data(), vi.data(), m);
      const auto fp32 = naive::modified_attention<float>(s, qi.data(), ki.data(), vi.data(), m);
      // lse is [heads, total_q]: this sequence's columns.
      std::vector<float> lib_lse;
      for (std::int64_t h = 0; h < kHeads; ++h)
        for (std::int64_t t = 0; t < s.q_len; ++t)
          lib_lse.push_back(lse[static_cast<std::size_t>(h * total_q + cu_q[i] + t)]);
      EXPECT_TRUE(naive::within_standard("o", rows_of(o, cu_q, i, kHeads * kDim), exact.o, fp32.o));
      EXPECT_TRUE(naive::within_standard("lse", lib_lse, exact.lse, fp32.lse));
    }
  }
}

TEST_P(Varlen, DecodeEqualsEachSequenceAlone) {
  const int threads = GetParam();
  const std::vector<std::int64_t> k_lengths = {1, 0, 300, 64, 1100, 17};
  const Offsets cu_k = offsets_of(k_lengths);
  const std::int64_t n = std::int64_t(k_lengths.size()), total_k = cu_k.back();
  const std::vector<float> k = naive::random_vector(total_k * kGroups * kDim, 4, -2.0f, 2.0f);
  const std::vector<float> v = naive::random_vector(total_k * kGroups * kDim, 5);
  const Modifiers modifiers;
  for (const std::int64_t q_len : {1, 2}) {
    const std::vector<float> q = naive::random_vector(n * q_len * kHeads * kDim, 6, -2.0f, 2.0f);
    for (const Case& c : cases()) {
      SCOPED_TRACE(std::string(c.name) + ", q_len " + std::to_string(q_len) + ", threads " +
                   std::to_string(threads));
      std::vector<float> o(q.size(), 7.0f), lse(static_cast<std::size_t>(n * kHeads * q_len));
      multihead::decode_attention_varlen<float>(
          TensorView<const float>(q.data(), std::int64_t(q.size()), n, q_len, kHeads, kDim),
          TensorView<const float>(k.data(), std::int64_t(k.size()), 1, total_k, kGroups, kDim),
          TensorView<const float>(v.data(), std::int64_t(v.size()), 1, total_k, kGroups, kDim),
          {cu_k.data(), std::int64_t(cu_k.size())},
          TensorView<float>(o.data(), std::int64_t(o.size()), n, q_len, kHeads, kDim),
          modifiers.options(c, threads), {lse.data(), std::int64_t(lse.size())});
      for (std::int64_t b = 0; b < n; ++b) {
        SCOPED_TRACE("sequence " + std::to_string(b));
        const std::size_t width = static_cast<std::size_t>(q_len * kHeads * kDim);
        const std::vector<float> qb(q.begin() + b * width, q.begin() + (b + 1) * width),
            ob(o.begin() + b * width, o.begin() + (b + 1) * width),
            lb(lse.begin() + b * kHeads * q_len, lse.begin() + (b + 1) * kHeads * q_len);
        const std::size_t i = static_cast<std::size_t>(b);
        const std::vector<float> kb = rows_of(k, cu_k, i, kGroups * kDim),
                                 vb = rows_of(v, cu_k, i, kGroups * kDim);
        if (k_lengths[i] == 0) {  // nothing to attend: output 0, lse −inf or the sink
          for (float x : ob) EXPECT_EQ(x, 0.0f);
          for (std::int64_t h = 0; h < kHeads; ++h)
            EXPECT_EQ(lb[static_cast<std::size_t>(h * q_len)],
                      c.sinks ? modifiers.sinks[static_cast<std::size_t>(h)]
                              : -std::numeric_limits<float>::infinity());
          continue;
        }
        naive::AttentionShape s;
        s.q_len = q_len;
        s.kv_len = k_lengths[i];
        s.heads = kHeads;
        s.kv_groups = kGroups;
        s.head_dim = s.value_dim = kDim;
        const naive::Modifiers m = modifiers.oracle(c);
        const auto exact = naive::modified_attention<double>(s, qb.data(), kb.data(), vb.data(), m);
        const auto fp32 = naive::modified_attention<float>(s, qb.data(), kb.data(), vb.data(), m);
        EXPECT_TRUE(naive::within_standard("o", ob, exact.o, fp32.o));
        EXPECT_TRUE(naive::within_standard("lse", lb, exact.lse, fp32.lse));
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Threads, Varlen, ::testing::Values(1, 2));

// A custom modifier sees the sequence index as ScoreSite::batch and positions within the
// sequence: a per-sequence sink through sink(b, h) and a bias on key 0 through logit().
struct PerSequence {
  float sink(std::int64_t b, std::int64_t h) const { return 0.5f * float(b) - 0.1f * float(h); }
  float logit(float s, const multihead::ScoreSite& at) const {
    return at.key == 0 ? s + 1.0f + float(at.batch) : s;
  }
};

TEST(VarlenModifier, CustomModifierSeesSequenceIndices) {
  const std::vector<std::int64_t> lengths = {7, 33, 12};
  const Offsets cu = offsets_of(lengths);
  const std::int64_t total = cu.back();
  const std::vector<float> q = naive::random_vector(total * kHeads * kDim, 7);
  const std::vector<float> k = naive::random_vector(total * kGroups * kDim, 8);
  const std::vector<float> v = naive::random_vector(total * kGroups * kDim, 9);
  std::vector<float> o(q.size()), lse(static_cast<std::size_t>(kHeads * total));
  const PerSequence custom;
  KernelOptions options;
  options.causal = true;
  options.modifier = multihead::ModifierRef(custom);
  multihead::fused_attention_varlen(
      TensorView<const float>(q.data(), std::int64_t(q.size()), 1, total, kHeads, kDim),
      TensorView<const float>(k.data(), std::int64_t(k.size()), 1, total, kGroups, kDim),
      TensorView<const float>(v.data(), std::int64_t(v.size()), 1, total, kGroups, kDim),
      TensorView<float>(o.data(), std::int64_t(o.size()), 1, total, kHeads, kDim),
      {cu.data(), std::int64_t(cu.size())}, {cu.data(), std::int64_t(cu.size())}, options,
      {lse.data(), std::int64_t(lse.size())});
  for (std::size_t i = 0; i < lengths.size(); ++i) {
    SCOPED_TRACE("sequence " + std::to_string(i));
    naive::AttentionShape s;
    s.q_len = s.kv_len = lengths[i];
    s.heads = kHeads;
    s.kv_groups = kGroups;
    s.head_dim = s.value_dim = kDim;
    naive::Modifiers m;
    m.causal = true;
    const double sequence = double(i);
    m.sink = [&](std::int64_t, std::int64_t h) { return 0.5 * sequence - 0.1 * double(h); };
    m.logit = [&](double x, std::int64_t, std::int64_t, std::int64_t, std::int64_t j) {
      return j == 0 ? x + 1.0 + sequence : x;
    };
    const std::vector<float> qi = rows_of(q, cu, i, kHeads * kDim),
                             ki = rows_of(k, cu, i, kGroups * kDim),
                             vi = rows_of(v, cu, i, kGroups * kDim);
    const auto exact = naive::modified_attention<double>(s, qi.data(), ki.data(), vi.data(), m);
    const auto fp32 = naive::modified_attention<float>(s, qi.data(), ki.data(), vi.data(), m);
    EXPECT_TRUE(naive::within_standard("o", rows_of(o, cu, i, kHeads * kDim), exact.o, fp32.o));
  }
}

TEST(VarlenModifier, BadOffsetsThrowAndWriteNothing) {
  const std::int64_t total = 10;
  const std::vector<float> q = naive::random_vector(total * kHeads * kDim, 1);
  const std::vector<float> kv = naive::random_vector(total * kGroups * kDim, 2);
  std::vector<float> o(q.size(), 7.0f);
  const TensorView<const float> Q(q.data(), std::int64_t(q.size()), 1, total, kHeads, kDim),
      K(kv.data(), std::int64_t(kv.size()), 1, total, kGroups, kDim);
  const TensorView<float> O(o.data(), std::int64_t(o.size()), 1, total, kHeads, kDim);
  const Offsets good = {0, 4, 10};
  const std::vector<Offsets> bad = {{4, 10}, {0, 6, 4, 10}, {0, 4, 9}, {0}};
  for (const Offsets& cu : bad) {
    EXPECT_THROW(multihead::fused_attention_varlen(Q, K, K, O, {cu.data(), std::int64_t(cu.size())},
                                                   {good.data(), 3}),
                 std::invalid_argument);
    EXPECT_THROW(multihead::fused_attention_varlen(Q, K, K, O, {good.data(), 3},
                                                   {cu.data(), std::int64_t(cu.size())}),
                 std::invalid_argument);
  }
  // Key offsets for another number of sequences, and masks, which have no per-sequence shape.
  const Offsets three = {0, 2, 4, 10};
  EXPECT_THROW(multihead::fused_attention_varlen(Q, K, K, O, {good.data(), 3}, {three.data(), 4}),
               std::invalid_argument);
  const std::unique_ptr<bool[]> mask(new bool[total]());
  KernelOptions masked;
  masked.boolean_mask = {mask.get(), total, 1, 1, 1, total};
  EXPECT_THROW(multihead::fused_attention_varlen(Q, K, K, O, {good.data(), 3}, {good.data(), 3},
                                                 masked),
               std::invalid_argument);
  // Decode: the sequences must match q's batch.
  EXPECT_THROW(multihead::decode_attention_varlen<float>(
                   TensorView<const float>(q.data(), kHeads * kDim * 2, 2, 1, kHeads, kDim), K, K,
                   {three.data(), 4}, TensorView<float>(o.data(), kHeads * kDim * 2, 2, 1, kHeads, kDim)),
               std::invalid_argument);
  for (float x : o) ASSERT_EQ(x, 7.0f);
}

}  // namespace
