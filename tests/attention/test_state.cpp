// The online-softmax state (state.hpp): states built by naive loops over two key sets, merged
// and normalised, must equal attention over the union of the key sets computed directly in
// double; the empty state must be the identity of merge and never produce NaN. Then merge_states,
// which merges whole attention outputs with their log-sum-exps (split-KV decoding, cascades):
// attention over two key sets merged equals attention over their union.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include <multihead/multihead.hpp>

#include "support/kernel_testing.hpp"
#include "support/naive_reference.hpp"
#include "support/testing.hpp"

namespace {

using test_support::kInf;

using multihead::SoftmaxState;

// One row's keys: a score and a value vector per key.
struct Keys {
  std::vector<double> scores;               // [keys]
  std::vector<std::vector<float>> values;   // [keys][dim]
};

// rows × keys scores from `lo + spread·uniform`, values uniform in [-1, 1).
std::vector<Keys> make_keys(std::int64_t rows, std::int64_t keys, std::int64_t dim,
                            std::uint64_t seed, const std::vector<double>& row_offsets,
                            double spread) {
  std::vector<Keys> out(static_cast<std::size_t>(rows));
  const std::vector<float> s = naive::random_vector(rows * keys, seed, 0.0f, 1.0f);
  const std::vector<float> v = naive::random_vector(rows * keys * dim, seed + 1);
  for (std::int64_t r = 0; r < rows; ++r) {
    Keys& k = out[static_cast<std::size_t>(r)];
    for (std::int64_t j = 0; j < keys; ++j) {
      // Scores are floats (what a kernel holds), offset per row.
      k.scores.push_back(static_cast<float>(
          row_offsets[static_cast<std::size_t>(r) % row_offsets.size()] +
          spread * s[static_cast<std::size_t>(r * keys + j)]));
      k.values.emplace_back(v.begin() + (r * keys + j) * dim, v.begin() + (r * keys + j + 1) * dim);
    }
  }
  return out;
}

// The state of each row over its keys, by the definition in state.hpp, computed in double:
// m = max s, l = Σ exp(s - m), o = Σ exp(s - m)·v. Rows without keys stay empty.
SoftmaxState state_of(const std::vector<Keys>& keys, std::int64_t dim) {
  SoftmaxState state(static_cast<std::int64_t>(keys.size()), dim);
  for (std::size_t r = 0; r < keys.size(); ++r) {
    const Keys& k = keys[r];
    if (k.scores.empty()) continue;
    const double m = *std::max_element(k.scores.begin(), k.scores.end());
    double l = 0;
    std::vector<double> o(static_cast<std::size_t>(dim), 0.0);
    for (std::size_t j = 0; j < k.scores.size(); ++j) {
      const double p = std::exp(k.scores[j] - m);
      l += p;
      for (std::int64_t c = 0; c < dim; ++c)
        o[static_cast<std::size_t>(c)] += p * k.values[j][static_cast<std::size_t>(c)];
    }
    const auto row = static_cast<std::int64_t>(r);
    state.max(row) = static_cast<float>(m);
    state.sum(row) = static_cast<float>(l);
    for (std::int64_t c = 0; c < dim; ++c) state.out(row)[c] = static_cast<float>(o[static_cast<std::size_t>(c)]);
  }
  return state;
}

// softmax(s)·v and log Σ exp(s) of each row over the keys of a and b together, in double.
void attention_over_union(const std::vector<Keys>& a, const std::vector<Keys>& b,
                          std::int64_t dim, std::vector<double>& out, std::vector<double>& lse) {
  out.assign(a.size() * static_cast<std::size_t>(dim), 0.0);
  lse.assign(a.size(), -std::numeric_limits<double>::infinity());
  for (std::size_t r = 0; r < a.size(); ++r) {
    std::vector<double> s = a[r].scores;
    s.insert(s.end(), b[r].scores.begin(), b[r].scores.end());
    std::vector<std::vector<float>> v = a[r].values;
    v.insert(v.end(), b[r].values.begin(), b[r].values.end());
    if (s.empty()) continue;
    const double m = *std::max_element(s.begin(), s.end());
    double l = 0;
    for (double x : s) l += std::exp(x - m);
    for (std::size_t j = 0; j < s.size(); ++j)
      for (std::int64_t c = 0; c < dim; ++c)
        out[r * static_cast<std::size_t>(dim) + static_cast<std::size_t>(c)] +=
            std::exp(s[j] - m) / l * v[j][static_cast<std::size_t>(c)];
    lse[r] = m + std::log(l);
  }
}

// max|got - want| <= rel · max(1, max|want|), infinities equal only to themselves.
::testing::AssertionResult close(const char* what, const std::vector<float>& got,
                                 const std::vector<double>& want, double rel) {
  const double error = naive::max_abs_error(got, want);
  double scale = 1.0;
  for (double x : want)
    if (std::isfinite(x)) scale = std::max(scale, std::abs(x));
  if (error <= rel * scale) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << what << ": max|diff| = " << error << " > " << rel
                                       << " * " << scale;
}

struct Normalized {
  std::vector<float> out, lse;
};

Normalized normalized(const SoftmaxState& state) {
  Normalized n;
  n.out.assign(static_cast<std::size_t>(state.rows() * state.dim()), std::nanf(""));
  n.lse.assign(static_cast<std::size_t>(state.rows()), std::nanf(""));
  state.normalize(n.out.data(), state.dim(), n.lse.data());
  return n;
}

// Row offsets that put A's max above, below, equal to and far from B's.
struct MergeCase {
  const char* name;
  std::vector<double> offsets_a, offsets_b;
  double spread;
};

TEST(SoftmaxState, MergedThenNormalizedEqualsAttentionOverTheUnion) {
  const MergeCase cases[] = {
      {"overlapping", {0.0}, {0.0}, 4.0},
      {"A above B", {5.0, 0.0}, {0.0, 5.0}, 2.0},
      {"far apart (one side underflows)", {0.0, -200.0}, {-200.0, 0.0}, 3.0},
      {"large logits", {1e4, -1e4, 3e3}, {1e4 + 3, -1e4 - 2, -3e3}, 6.0},
  };
  const std::int64_t rows = 6, dim = 7;
  for (const MergeCase& c : cases)
    for (std::int64_t keys_a : {1, 5, 40})
      for (std::int64_t keys_b : {1, 17}) {
        SCOPED_TRACE(std::string(c.name) + ", keys " + std::to_string(keys_a) + " + " +
                     std::to_string(keys_b));
        const auto a = make_keys(rows, keys_a, dim, 10 + static_cast<std::uint64_t>(keys_a), c.offsets_a, c.spread);
        const auto b = make_keys(rows, keys_b, dim, 20 + static_cast<std::uint64_t>(keys_b), c.offsets_b, c.spread);
        std::vector<double> want_out, want_lse;
        attention_over_union(a, b, dim, want_out, want_lse);
        for (bool a_first : {true, false}) {
          SoftmaxState merged = state_of(a_first ? a : b, dim);
          merged.merge(state_of(a_first ? b : a, dim));
          const Normalized n = normalized(merged);
          EXPECT_FALSE(naive::any_nan(n.out));
          EXPECT_TRUE(close("out", n.out, want_out, 1e-5));
          EXPECT_TRUE(close("lse", n.lse, want_lse, 1e-6)) << "(relative to |lse|)";
        }
      }
}

// Merging three shards in either association gives the same attention.
TEST(SoftmaxState, MergeOfThreeShards) {
  const std::int64_t rows = 4, dim = 5;
  const auto a = make_keys(rows, 9, dim, 1, {0.0, 3.0}, 5.0);
  const auto b = make_keys(rows, 4, dim, 2, {2.0, -1.0}, 5.0);
  const auto c = make_keys(rows, 13, dim, 3, {-2.0, 1.0}, 5.0);
  std::vector<Keys> bc(b);
  for (std::size_t r = 0; r < bc.size(); ++r) {
    bc[r].scores.insert(bc[r].scores.end(), c[r].scores.begin(), c[r].scores.end());
    bc[r].values.insert(bc[r].values.end(), c[r].values.begin(), c[r].values.end());
  }
  std::vector<double> want_out, want_lse;
  attention_over_union(a, bc, dim, want_out, want_lse);
  SoftmaxState left = state_of(a, dim);  // (a ∪ b) ∪ c
  left.merge(state_of(b, dim));
  left.merge(state_of(c, dim));
  SoftmaxState right = state_of(b, dim);  // a ∪ (b ∪ c)
  right.merge(state_of(c, dim));
  SoftmaxState all = state_of(a, dim);
  all.merge(right);
  for (const SoftmaxState* s : {&left, &all}) {
    const Normalized n = normalized(*s);
    EXPECT_TRUE(close("out", n.out, want_out, 1e-5));
    EXPECT_TRUE(close("lse", n.lse, want_lse, 1e-6));
  }
}

void expect_same_state(const SoftmaxState& x, const SoftmaxState& y) {
  ASSERT_EQ(x.rows(), y.rows());
  ASSERT_EQ(x.dim(), y.dim());
  for (std::int64_t r = 0; r < x.rows(); ++r) {
    EXPECT_EQ(x.max(r), y.max(r)) << "row " << r;
    EXPECT_EQ(x.sum(r), y.sum(r)) << "row " << r;
    for (std::int64_t c = 0; c < x.dim(); ++c) EXPECT_EQ(x.out(r)[c], y.out(r)[c]) << "row " << r;
  }
}

TEST(SoftmaxState, MergingAnEmptyStateIsTheIdentity) {
  const std::int64_t rows = 5, dim = 3;
  std::vector<Keys> keys = make_keys(rows, 6, dim, 7, {0.0, 1e4, -1e4}, 3.0);
  keys[2] = Keys{};  // one row that saw nothing
  const SoftmaxState original = state_of(keys, dim);
  const SoftmaxState empty(rows, dim);

  SoftmaxState x = original;  // x ∪ ∅ = x, bitwise
  x.merge(empty);
  expect_same_state(x, original);
  SoftmaxState y = empty;  // ∅ ∪ x = x, bitwise
  y.merge(original);
  expect_same_state(y, original);

  // A state cleared is empty again.
  SoftmaxState z = original;
  z.clear();
  expect_same_state(z, empty);
}

TEST(SoftmaxState, TwoEmptyStatesGiveZeroOutputAndMinusInfinityLse) {
  SoftmaxState x(3, 4);
  x.merge(SoftmaxState(3, 4));
  for (std::int64_t r = 0; r < 3; ++r) {
    EXPECT_EQ(x.max(r), -kInf);
    EXPECT_EQ(x.sum(r), 0.0f);
  }
  const Normalized n = normalized(x);
  for (float o : n.out) EXPECT_EQ(o, 0.0f);
  for (float l : n.lse) EXPECT_EQ(l, -kInf);
  EXPECT_FALSE(naive::any_nan(n.out));
}

TEST(SoftmaxState, NormalizeHonoursStrideAndOptionalLse) {
  const std::int64_t rows = 3, dim = 4, stride = 7;
  const auto keys = make_keys(rows, 5, dim, 5, {0.0}, 2.0);
  const SoftmaxState state = state_of(keys, dim);
  std::vector<float> out(static_cast<std::size_t>(rows * stride), 99.0f);
  state.normalize(out.data(), stride, nullptr);
  const Normalized packed = normalized(state);
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t c = 0; c < stride; ++c) {
      const float got = out[static_cast<std::size_t>(r * stride + c)];
      if (c < dim) {
        EXPECT_EQ(got, packed.out[static_cast<std::size_t>(r * dim + c)]);
      } else {
        EXPECT_EQ(got, 99.0f) << "normalize wrote into the padding";
      }
    }
}

TEST(SoftmaxState, MergeOfMismatchedShapesThrowsNamingBoth) {
  for (const auto& shapes : {std::vector<std::int64_t>{3, 4, 3, 5}, {3, 4, 2, 4}}) {
    SoftmaxState x(shapes[0], shapes[1]);
    const SoftmaxState y(shapes[2], shapes[3]);
    const std::string a = "[" + std::to_string(shapes[0]) + ", " + std::to_string(shapes[1]) + "]";
    const std::string b = "[" + std::to_string(shapes[2]) + ", " + std::to_string(shapes[3]) + "]";
    try {
      x.merge(y);
      ADD_FAILURE() << "merging " << a << " with " << b << " did not throw";
    } catch (const std::invalid_argument& e) {
      const std::string message = e.what();
      EXPECT_NE(message.find(a), std::string::npos) << message;
      EXPECT_NE(message.find(b), std::string::npos) << message;
    }
    // Nothing changed.
    expect_same_state(x, SoftmaxState(shapes[0], shapes[1]));
  }
}

TEST(SoftmaxState, OversizedStateThrows) {
  EXPECT_THROW(SoftmaxState(std::int64_t{1} << 40, std::int64_t{1} << 40), std::invalid_argument);
}

TEST(SoftmaxStateGuards, RescaleFactor) {
  EXPECT_EQ(multihead::rescale_factor(-kInf, 2.0f), 0.0f);     // nothing seen: carries nothing
  EXPECT_EQ(multihead::rescale_factor(-kInf, -kInf), 1.0f);    // both empty: no NaN
  EXPECT_EQ(multihead::rescale_factor(3.5f, 3.5f), 1.0f);
  EXPECT_EQ(multihead::rescale_factor(-1e4f, -1e4f), 1.0f);
  EXPECT_NEAR(multihead::rescale_factor(1.0f, 3.0f), std::exp(-2.0), 1e-7);
  EXPECT_EQ(multihead::rescale_factor(-1e4f, 1e4f), 0.0f);     // underflows to 0, not NaN
  EXPECT_FALSE(std::isnan(multihead::rescale_factor(-kInf, -kInf)));
}

TEST(SoftmaxStateGuards, InverseSum) {
  EXPECT_EQ(multihead::inverse_sum(0.0f), 0.0f);
  EXPECT_EQ(multihead::inverse_sum(-0.0f), 0.0f);
  EXPECT_EQ(multihead::inverse_sum(4.0f), 0.25f);
  EXPECT_EQ(multihead::inverse_sum(1.0f), 1.0f);
}

TEST(SoftmaxStateGuards, LogSumExp) {
  EXPECT_EQ(multihead::log_sum_exp(-kInf, 0.0f), -kInf);
  EXPECT_EQ(multihead::log_sum_exp(5.0f, 0.0f), -kInf);
  EXPECT_NEAR(multihead::log_sum_exp(2.0f, std::exp(1.0f)), 3.0, 1e-6);
  EXPECT_NEAR(multihead::log_sum_exp(-1e4f, 3.0f), -1e4 + std::log(3.0), 1e-3);
  EXPECT_EQ(multihead::log_sum_exp(0.0f, 1.0f), 0.0f);
}

// ---- merge_states (merge.hpp): the same merge over whole output tensors ------------------------------------------------------------------------------

using kernel_testing::expect_meets_standard;
using kernel_testing::Inputs;
using kernel_testing::LibResult;
using kernel_testing::make_inputs;
using kernel_testing::make_shape;
using kernel_testing::run_oracle;
using multihead::KernelOptions;
using multihead::LseOutput;
using multihead::Span;
using multihead::TensorView;
using naive::AttentionShape;

// Attention over [A; B] = merge of attention over A and over B, for key sets split anywhere,
// including causal rows that see nothing of B (lse_b = −inf).
TEST(MergeStates, AttentionOverBothPartsEqualsTheMergeOfEach) {
  const AttentionShape whole = make_shape(2, 5, 150, 8, 2, 32, 24);
  const Inputs in = make_inputs(whole, 4711, 2.0f);
  for (std::int64_t split : {1, 70, 149}) {
    SCOPED_TRACE("split at " + std::to_string(split));
    // The two parts as strided views into the whole K/V: tokens [0, split) and [split, 150).
    const auto part = [&](const std::vector<float>& x, std::int64_t dim, std::int64_t t0,
                          std::int64_t n) {
      return TensorView<const float>::strided(x.data() + t0 * 2 * dim,
                                              std::int64_t(x.size()) - t0 * 2 * dim, 2, n, 2, dim,
                                              150 * 2 * dim, 2 * dim, dim);
    };
    const TensorView<const float> q(in.q.data(), whole.q_size(), 2, 5, 8, 32);
    std::vector<float> o_a(whole.o_size()), o_b(whole.o_size()), lse_a(whole.lse_size()),
        lse_b(whole.lse_size());
    KernelOptions options;  // not causal: each part sees all its keys
    multihead::fused_attention(q, part(in.k, 32, 0, split), part(in.v, 24, 0, split),
                               TensorView<float>(o_a.data(), whole.o_size(), 2, 5, 8, 24), options,
                               LseOutput{lse_a.data(), whole.lse_size()});
    multihead::fused_attention(q, part(in.k, 32, split, 150 - split),
                               part(in.v, 24, split, 150 - split),
                               TensorView<float>(o_b.data(), whole.o_size(), 2, 5, 8, 24), options,
                               LseOutput{lse_b.data(), whole.lse_size()});
    LibResult merged;
    merged.o.assign(std::size_t(whole.o_size()), std::nanf(""));
    merged.lse.assign(std::size_t(whole.lse_size()), std::nanf(""));
    multihead::merge_states(TensorView<const float>(o_a.data(), whole.o_size(), 2, 5, 8, 24),
                            Span<const float>{lse_a.data(), whole.lse_size()},
                            TensorView<const float>(o_b.data(), whole.o_size(), 2, 5, 8, 24),
                            Span<const float>{lse_b.data(), whole.lse_size()},
                            TensorView<float>(merged.o.data(), whole.o_size(), 2, 5, 8, 24),
                            LseOutput{merged.lse.data(), whole.lse_size()});
    expect_meets_standard(merged, run_oracle(in, options));

    // In place, into A's buffers: the same bits.
    multihead::merge_states(TensorView<const float>(o_a.data(), whole.o_size(), 2, 5, 8, 24),
                            Span<const float>{lse_a.data(), whole.lse_size()},
                            TensorView<const float>(o_b.data(), whole.o_size(), 2, 5, 8, 24),
                            Span<const float>{lse_b.data(), whole.lse_size()},
                            TensorView<float>(o_a.data(), whole.o_size(), 2, 5, 8, 24),
                            LseOutput{lse_a.data(), whole.lse_size()});
    EXPECT_EQ(0, std::memcmp(o_a.data(), merged.o.data(), o_a.size() * sizeof(float)));
    EXPECT_EQ(0, std::memcmp(lse_a.data(), merged.lse.data(), lse_a.size() * sizeof(float)));
  }
}

TEST(MergeStates, EmptySidesContributeNothing) {
  // Row 0: only A saw keys; row 1: only B; row 2: neither.
  const float o_a[] = {1, 2, 5, 6, 9, 9}, o_b[] = {3, 4, 7, 8, 9, 9};
  const float lse_a[] = {0.5f, -kInf, -kInf}, lse_b[] = {-kInf, 2.0f, -kInf};
  float o[6], lse[3];
  multihead::merge_states(TensorView<const float>(o_a, 6, 1, 1, 3, 2), Span<const float>{lse_a, 3},
                          TensorView<const float>(o_b, 6, 1, 1, 3, 2), Span<const float>{lse_b, 3},
                          TensorView<float>(o, 6, 1, 1, 3, 2), LseOutput{lse, 3});
  EXPECT_EQ(o[0], 1.0f);
  EXPECT_EQ(o[1], 2.0f);
  EXPECT_EQ(o[2], 7.0f);
  EXPECT_EQ(o[3], 8.0f);
  EXPECT_EQ(o[4], 0.0f);
  EXPECT_EQ(o[5], 0.0f);
  EXPECT_EQ(lse[0], 0.5f);
  EXPECT_EQ(lse[1], 2.0f);
  EXPECT_EQ(lse[2], -kInf);
}

TEST(MergeStates, BadShapesAndPartialOverlapsThrowAndWriteNothing) {
  std::vector<float> a(30, 1.0f), b(24, 2.0f), out(24, 7.0f), la(4, 0.0f), lb(4, 0.0f);
  const TensorView<const float> va(a.data(), 24, 1, 2, 2, 6), vb(b.data(), 24, 1, 2, 2, 6);
  const Span<const float> sa{la.data(), 4}, sb{lb.data(), 4};
  EXPECT_THROW(multihead::merge_states(va, sa, TensorView<const float>(b.data(), 24, 1, 2, 3, 4),
                                       sb, TensorView<float>(out.data(), 24, 1, 2, 2, 6)),
               std::invalid_argument);
  EXPECT_THROW(multihead::merge_states(va, Span<const float>{la.data(), 3}, vb, sb,
                                       TensorView<float>(out.data(), 24, 1, 2, 2, 6)),
               std::invalid_argument);
  // o shifted by one element into a: neither the same view nor apart.
  EXPECT_THROW(multihead::merge_states(va, sa, vb, sb,
                                       TensorView<float>::strided(a.data() + 1, 29, 1, 2, 2, 6,
                                                                  12, 6, 6)),
               std::invalid_argument);
  for (float x : out) EXPECT_EQ(x, 7.0f);
  for (float x : a) EXPECT_EQ(x, 1.0f);
}

}  // namespace
