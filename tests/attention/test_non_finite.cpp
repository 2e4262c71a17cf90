// Non-finite values: one semantics, the reference's, in every kernel and ISA
// (include/multihead/attention/modifiers.hpp, "Non-finite values"). A NaN or +inf score makes
// its row NaN; a non-finite V reaches the rows that see its key, and only those; hidden keys
// never touch a row; rows that see nothing stay 0 with log-sum-exp −inf. Each case poisons one
// input and checks every row against the same kernel on the clean input: poisoned rows as the
// semantics say, all others unchanged. The shapes take the fused kernel's tiles, the decode
// kernel's row-major and transposed tiles, fixed and run-time dims.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "support/kernel_testing.hpp"
#include "support/testing.hpp"

namespace {

using namespace kernel_testing;
using multihead::KvCache;
using multihead::MaskView;
using test_support::kInf;

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

// Fused blocks and decode's transposed tiles (many rows per group), decode's row-major tiles
// (few rows of head dim 128), and run-time dims that the decode kernel widens into tiles.
const AttentionShape kShapes[] = {
    make_shape(2, 37, 150, 4, 2, 64, 64),
    make_shape(2, 2, 300, 8, 2, 128, 128),
    make_shape(1, 5, 90, 3, 1, 40, 24),
};

struct Row {
  std::int64_t b, i, h;
};

// What a poisoned row must look like: all NaN (scores), or non-finite in `column` with its other
// columns and log-sum-exp as on clean input (a value).
enum class Poison { scores, value };

struct Case {
  std::string name;
  // Makes the poisoned inputs and options from clean ones.
  std::function<void(const AttentionShape&, Inputs&, KernelOptions&)> poison;
  Poison kind;
  std::function<bool(const AttentionShape&, const Row&)> poisoned;
  std::int64_t column = 0;  // for Poison::value
};

std::int64_t offset(const AttentionShape& s) { return s.kv_len - s.q_len; }
std::int64_t key_of(const AttentionShape& s) { return s.kv_len / 3; }  // the poisoned key
std::int64_t group_of(const AttentionShape& s, std::int64_t h) {
  return h / (s.heads / s.kv_groups);
}
float& k_at(const AttentionShape& s, Inputs& in, std::int64_t b, std::int64_t j, std::int64_t g,
            std::int64_t p) {
  return in.k[std::size_t(((b * s.kv_len + j) * s.kv_groups + g) * s.head_dim + p)];
}
float& v_at(const AttentionShape& s, Inputs& in, std::int64_t b, std::int64_t j, std::int64_t g,
            std::int64_t c) {
  return in.v[std::size_t(((b * s.kv_len + j) * s.kv_groups + g) * s.value_dim + c)];
}
// Whether row r sees key j of its batch entry under a causal mask (bottom-right).
bool causal_sees(const AttentionShape& s, const Row& r, std::int64_t j) {
  return j <= r.i + offset(s);
}
// The rows of group 0 of batch entry 0 that see the poisoned key, under `sees`.
bool sees_poisoned_key(const AttentionShape& s, const Row& r,
                       const std::function<bool(const AttentionShape&, const Row&, std::int64_t)>& sees) {
  return r.b == 0 && group_of(s, r.h) == 0 && sees(s, r, key_of(s));
}

std::vector<Case> cases() {
  const auto causal = [](KernelOptions& o) { o.causal = true; };
  std::vector<Case> list;
  list.push_back({"NaN in a query",
                  [=](const AttentionShape& s, Inputs& in, KernelOptions& o) {
                    causal(o);
                    in.q[std::size_t(((s.batch - 1) * s.q_len + s.q_len - 1) * s.heads * s.head_dim +
                                     (s.heads - 1) * s.head_dim)] = kNaN;
                  },
                  Poison::scores,
                  [](const AttentionShape& s, const Row& r) {
                    return r.b == s.batch - 1 && r.i == s.q_len - 1 && r.h == s.heads - 1;
                  }});
  list.push_back({"NaN in a key, seen by later rows only",
                  [=](const AttentionShape& s, Inputs& in, KernelOptions& o) {
                    causal(o);
                    k_at(s, in, 0, key_of(s), 0, 1) = kNaN;
                  },
                  Poison::scores,
                  [](const AttentionShape& s, const Row& r) {
                    return sees_poisoned_key(s, r, causal_sees);
                  }});
  for (const float bad : {kNaN, kInf})
    list.push_back({bad != bad ? "NaN in a value, hidden from earlier rows"
                               : "Infinity in a value, hidden from earlier rows",
                    [=](const AttentionShape& s, Inputs& in, KernelOptions& o) {
                      causal(o);
                      v_at(s, in, 0, key_of(s), 0, 3) = bad;
                    },
                    Poison::value,
                    [](const AttentionShape& s, const Row& r) {
                      return sees_poisoned_key(s, r, causal_sees);
                    },
                    3});
  list.push_back({"NaN in a value outside a sliding window",
                  [=](const AttentionShape& s, Inputs& in, KernelOptions& o) {
                    causal(o);
                    o.window_left = 6;
                    v_at(s, in, 0, key_of(s), 0, 0) = kNaN;
                  },
                  Poison::value,
                  [](const AttentionShape& s, const Row& r) {
                    return sees_poisoned_key(s, r, [](const AttentionShape& s, const Row& r,
                                                      std::int64_t j) {
                      return j <= r.i + offset(s) && j >= r.i + offset(s) - 6;
                    });
                  },
                  0});
  // A key-padding mask hides the poisoned key of batch entry 0 from every row.
  list.push_back({"NaN in a value a boolean mask hides",
                  [=](const AttentionShape& s, Inputs& in, KernelOptions& o) {
                    static thread_local std::unique_ptr<bool[]> keep;
                    keep.reset(new bool[std::size_t(s.batch * s.kv_len)]);
                    for (std::int64_t x = 0; x < s.batch * s.kv_len; ++x) keep[x] = true;
                    keep[key_of(s)] = false;
                    o.boolean_mask = MaskView<bool>(keep.get(), s.batch * s.kv_len, s.batch, 1, 1, s.kv_len);
                    v_at(s, in, 0, key_of(s), 0, 0) = kNaN;
                    v_at(s, in, 0, key_of(s), 0, 1) = -kInf;
                  },
                  Poison::value, [](const AttentionShape&, const Row&) { return false; }, 0});
  // Additive masks over [batch, heads, q_len, kv_len]: +inf or NaN at one score.
  for (const float bad : {kInf, kNaN})
    list.push_back({bad != bad ? "NaN in an additive mask" : "Plus infinity in an additive mask",
                    [=](const AttentionShape& s, Inputs&, KernelOptions& o) {
                      static thread_local std::vector<float> add;
                      add.assign(std::size_t(s.batch * s.heads * s.q_len * s.kv_len), 0.0f);
                      add[std::size_t(((0 * s.heads + 1) * s.q_len + s.q_len - 1) * s.kv_len)] =
                          bad;
                      o.additive_mask = MaskView<float>(add.data(), std::int64_t(add.size()), s.batch,
                                                        s.heads, s.q_len, s.kv_len);
                    },
                    Poison::scores,
                    [](const AttentionShape& s, const Row& r) {
                      return r.b == 0 && r.h == 1 && r.i == s.q_len - 1;
                    }});
  // Every product overflows to ±inf: the positive ones make every row NaN, never a silent 0.
  list.push_back({"Scores overflowing to infinity",
                  [](const AttentionShape&, Inputs&, KernelOptions& o) { o.scale = 3e38f; },
                  Poison::scores, [](const AttentionShape&, const Row&) { return true; }});
  return list;
}

class NonFinite : public ::testing::TestWithParam<Kernel> {};

// The value check of a poisoned row: its column is not finite, the rest as on clean input.
void expect_rows(const Case& c, const AttentionShape& s, const LibResult& clean,
                 const LibResult& got) {
  int mismatches = 0;
  for (std::int64_t b = 0; b < s.batch; ++b)
    for (std::int64_t i = 0; i < s.q_len; ++i)
      for (std::int64_t h = 0; h < s.heads; ++h) {
        const Row r{b, i, h};
        const bool poisoned = c.poisoned(s, r);
        const std::size_t row = std::size_t(((b * s.q_len + i) * s.heads + h) * s.value_dim);
        const std::size_t l = std::size_t((b * s.heads + h) * s.q_len + i);
        for (std::int64_t col = 0; col < s.value_dim; ++col) {
          const float x = got.o[row + std::size_t(col)], want = clean.o[row + std::size_t(col)];
          bool ok;
          if (poisoned && c.kind == Poison::scores)
            ok = std::isnan(x);
          else if (poisoned && col == c.column)
            ok = !std::isfinite(x);
          else
            ok = std::abs(x - want) <= 1e-5f;
          if (!ok && ++mismatches <= 5)
            ADD_FAILURE() << c.name << ": row (b " << b << ", i " << i << ", h " << h
                          << ") column " << col << ": " << x << " (clean " << want << ")"
                          << (poisoned ? ", a poisoned row" : ", a clean row");
        }
        const float lse = got.lse[l];
        const bool lse_ok = poisoned && c.kind == Poison::scores ? std::isnan(lse)
                                                                 : std::abs(lse - clean.lse[l]) <= 1e-5f;
        if (!lse_ok && ++mismatches <= 5)
          ADD_FAILURE() << c.name << ": row (b " << b << ", i " << i << ", h " << h
                        << ") log-sum-exp " << lse << " (clean " << clean.lse[l] << ")";
      }
  EXPECT_EQ(mismatches, 0) << c.name;
}

TEST_P(NonFinite, PoisonsExactlyTheRowsThatSeeIt) {
  for (const AttentionShape& s : kShapes)
    for (const Case& c : cases()) {
      SCOPED_TRACE(describe(s) + ": " + c.name);
      Inputs clean = make_inputs(s, 71);
      Inputs bad = clean;
      KernelOptions options;
      options.threads = 2;
      c.poison(s, bad, options);
      LibResult want = run_kernel(GetParam(), clean, options);
      if (options.scale) {  // the clean run of a huge scale: every row's value is not finite
        KernelOptions plain = options;
        plain.scale.reset();
        want = run_kernel(GetParam(), clean, plain);
      }
      expect_rows(c, s, want, run_kernel(GetParam(), bad, options));
    }
}

// Rows that see no key (causal, q_len > kv_len) stay 0 with log-sum-exp −inf, even when every
// value is NaN; the rows that see keys are NaN.
TEST_P(NonFinite, RowsThatSeeNothingStayZeroWhateverTheValues) {
  const AttentionShape s = make_shape(1, 12, 9, 2, 1, 64, 64);
  Inputs in = make_inputs(s, 5);
  for (float& x : in.v) x = kNaN;
  KernelOptions options;
  options.causal = true;
  const LibResult got = run_kernel(GetParam(), in, options);
  for (std::int64_t i = 0; i < s.q_len; ++i)
    for (std::int64_t h = 0; h < s.heads; ++h) {
      const bool sees = i >= s.q_len - s.kv_len;
      const float x = got.o[std::size_t((i * s.heads + h) * s.value_dim)];
      const float lse = got.lse[std::size_t(h * s.q_len + i)];
      if (sees) {
        EXPECT_TRUE(std::isnan(x)) << "row " << i << " head " << h;
        EXPECT_TRUE(std::isfinite(lse)) << "row " << i << " head " << h;
      } else {
        EXPECT_EQ(x, 0.0f) << "row " << i << " head " << h;
        EXPECT_EQ(lse, -kInf) << "row " << i << " head " << h;
      }
    }
}

INSTANTIATE_TEST_SUITE_P(Kernels, NonFinite, ::testing::ValuesIn(kKernels), kernel_param_name);

// An fp16 cache stores a value beyond 65504 as +inf: rows that see its key get a non-finite
// output in that column, and a mask that hides the key keeps every row as if it held 0.
TEST(NonFiniteCache, AnFp16ValueThatRoundedToInfinityReachesOnlyTheRowsThatSeeIt) {
  const std::int64_t groups = 2, d = 64, tokens = 200, heads = 4, token = groups * d;
  std::vector<float> k = naive::random_vector(std::size_t(tokens * token), 3);
  std::vector<float> v = naive::random_vector(std::size_t(tokens * token), 4);
  std::vector<float> q = naive::random_vector(std::size_t(heads * d), 5);
  const auto decode = [&](const std::vector<float>& values, const KernelOptions& options) {
    KvCache<multihead::fp16> cache(1, tokens, groups, d);
    cache.append(TensorView<const float>(k.data(), tokens * token, 1, tokens, groups, d),
                 TensorView<const float>(values.data(), tokens * token, 1, tokens, groups, d));
    std::vector<float> o(std::size_t(heads * d));
    multihead::decode_attention(TensorView<const float>(q.data(), heads * d, 1, 1, heads, d),
                                cache, TensorView<float>(o.data(), heads * d, 1, 1, heads, d),
                                options);
    return o;
  };
  const std::int64_t key = 77;
  std::vector<float> huge = v, zero = v;
  huge[std::size_t(key * token + 5)] = 1e6f;  // group 0, column 5: +inf in fp16
  zero[std::size_t(key * token + 5)] = 0.0f;
  KernelOptions options;
  options.causal = true;
  const std::vector<float> seen = decode(huge, options);
  for (std::int64_t h = 0; h < heads; ++h)
    for (std::int64_t c = 0; c < d; ++c)
      EXPECT_EQ(std::isfinite(seen[std::size_t(h * d + c)]), !(h < 2 && c == 5))
          << "head " << h << " column " << c;
  std::unique_ptr<bool[]> keep(new bool[tokens]);
  for (std::int64_t j = 0; j < tokens; ++j) keep[j] = j != key;
  options.boolean_mask = MaskView<bool>(keep.get(), tokens, 1, 1, 1, tokens);
  const std::vector<float> hidden = decode(huge, options), clean = decode(zero, options);
  // Equal up to summation order: the tile holding the hidden infinity sums key by key.
  for (std::size_t x = 0; x < hidden.size(); ++x) EXPECT_NEAR(hidden[x], clean[x], 1e-6f) << x;
}

}  // namespace
