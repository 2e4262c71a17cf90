// The independent oracle of multihead's tests: attention and the attention module written with
// plain loops, sharing no code with the library (no multihead header, no Eigen).
//
// Everything is templated on the accumulation scalar:
//   - double is the oracle every path is measured against;
//   - float is "a naive fp32 loop", whose error against the oracle sets the tolerance.
// The accuracy standard (FlashAttention's): a fast fp32 path passes when
//   max|lib - oracle| <= 2 * max|naive_fp32 - oracle| + 1e-6,
// checked by naive::within_standard for outputs and log-sum-exps alike.
//
// Layout: Q [batch, q_len, heads, head_dim], K [batch, kv_len, kv_groups, head_dim],
// V [batch, kv_len, kv_groups, value_dim], O [batch, q_len, heads, value_dim], all contiguous;
// LSE [batch, heads, q_len], natural log. Query head h reads K/V head h / (heads / kv_groups).
// Causal masking is bottom-right aligned: query i sees key j iff j <= i + (kv_len - q_len);
// a query that sees no key has output 0 and log-sum-exp -inf.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <vector>

namespace naive {

struct AttentionShape {
  std::int64_t batch = 1;
  std::int64_t q_len = 1;
  std::int64_t kv_len = 1;
  std::int64_t heads = 1;
  std::int64_t kv_groups = 1;
  std::int64_t head_dim = 1;
  std::int64_t value_dim = 1;

  std::int64_t q_size() const { return batch * q_len * heads * head_dim; }
  std::int64_t k_size() const { return batch * kv_len * kv_groups * head_dim; }
  std::int64_t v_size() const { return batch * kv_len * kv_groups * value_dim; }
  std::int64_t o_size() const { return batch * q_len * heads * value_dim; }
  std::int64_t lse_size() const { return batch * heads * q_len; }
};

template <class Acc>
struct AttentionResult {
  std::vector<Acc> o;    // [batch, q_len, heads, value_dim]
  std::vector<Acc> lse;  // [batch, heads, q_len]
};

// Whether query i may attend to key j.
inline bool visible(const AttentionShape& s, bool causal, std::int64_t i, std::int64_t j) {
  return !causal || j <= i + (s.kv_len - s.q_len);
}

// softmax(scale · Q·Kᵀ [masked]) · V, every product and sum in Acc. `scale` defaults to
// 1/sqrt(head_dim), computed in Acc.
template <class Acc, class In>
AttentionResult<Acc> attention(const AttentionShape& s, const In* q, const In* k, const In* v,
                               bool causal, std::optional<double> scale = std::nullopt) {
  const Acc sc = scale ? static_cast<Acc>(*scale)
                       : Acc(1) / std::sqrt(static_cast<Acc>(s.head_dim));
  const std::int64_t group_size = s.heads / s.kv_groups;
  AttentionResult<Acc> r;
  r.o.assign(static_cast<std::size_t>(s.o_size()), Acc(0));
  r.lse.assign(static_cast<std::size_t>(s.lse_size()), Acc(0));
  std::vector<Acc> scores(static_cast<std::size_t>(s.kv_len));
  std::vector<char> seen(static_cast<std::size_t>(s.kv_len));
  for (std::int64_t b = 0; b < s.batch; ++b)
    for (std::int64_t h = 0; h < s.heads; ++h) {
      const std::int64_t g = h / group_size;
      for (std::int64_t i = 0; i < s.q_len; ++i) {
        const In* qi = q + ((b * s.q_len + i) * s.heads + h) * s.head_dim;
        Acc* oi = r.o.data() + ((b * s.q_len + i) * s.heads + h) * s.value_dim;
        Acc& lse = r.lse[static_cast<std::size_t>((b * s.heads + h) * s.q_len + i)];
        bool any = false;
        Acc max = -std::numeric_limits<Acc>::infinity();
        for (std::int64_t j = 0; j < s.kv_len; ++j) {
          seen[static_cast<std::size_t>(j)] = visible(s, causal, i, j);
          if (!seen[static_cast<std::size_t>(j)]) continue;
          const In* kj = k + ((b * s.kv_len + j) * s.kv_groups + g) * s.head_dim;
          Acc dot = 0;
          for (std::int64_t d = 0; d < s.head_dim; ++d)
            dot += static_cast<Acc>(qi[d]) * static_cast<Acc>(kj[d]);
          scores[static_cast<std::size_t>(j)] = sc * dot;
          if (!any || scores[static_cast<std::size_t>(j)] > max)
            max = scores[static_cast<std::size_t>(j)];
          any = true;
        }
        if (!any) {  // fully masked: output stays 0
          lse = -std::numeric_limits<Acc>::infinity();
          continue;
        }
        Acc sum = 0;
        for (std::int64_t j = 0; j < s.kv_len; ++j) {
          if (!seen[static_cast<std::size_t>(j)]) continue;
          scores[static_cast<std::size_t>(j)] = std::exp(scores[static_cast<std::size_t>(j)] - max);
          sum += scores[static_cast<std::size_t>(j)];
        }
        for (std::int64_t j = 0; j < s.kv_len; ++j) {
          if (!seen[static_cast<std::size_t>(j)]) continue;
          const Acc p = scores[static_cast<std::size_t>(j)] / sum;
          const In* vj = v + ((b * s.kv_len + j) * s.kv_groups + g) * s.value_dim;
          for (std::int64_t d = 0; d < s.value_dim; ++d) oi[d] += p * static_cast<Acc>(vj[d]);
        }
        lse = max + std::log(sum);
      }
    }
  return r;
}

// The largest |scale · q·k| over all visible pairs, in double: lets a test check that its input
// really produces the score magnitudes it is about.
template <class In>
double max_abs_score(const AttentionShape& s, const In* q, const In* k, double scale) {
  double best = 0;
  const std::int64_t group_size = s.heads / s.kv_groups;
  for (std::int64_t b = 0; b < s.batch; ++b)
    for (std::int64_t h = 0; h < s.heads; ++h)
      for (std::int64_t i = 0; i < s.q_len; ++i)
        for (std::int64_t j = 0; j < s.kv_len; ++j) {
          const In* qi = q + ((b * s.q_len + i) * s.heads + h) * s.head_dim;
          const In* kj = k + ((b * s.kv_len + j) * s.kv_groups + h / group_size) * s.head_dim;
          double dot = 0;
          for (std::int64_t d = 0; d < s.head_dim; ++d)
            dot += static_cast<double>(qi[d]) * static_cast<double>(kj[d]);
          best = std::max(best, std::abs(scale * dot));
        }
  return best;
}

// ---- Rotary position embedding ----------------------------------------------------------------

// RoPE as the papers define it: pair i of the first rotary_dim dims of a head, at position p, is
// rotated by the angle p·base^(−2i / rotary_dim): (a, b) → (a·cos − b·sin, b·cos + a·sin).
struct Rope {
  std::int64_t rotary_dim = 0;
  double base = 10000.0;
  bool interleaved = false;  // pairs (2i, 2i + 1); otherwise (i, i + rotary_dim / 2)
};

// Rotates x [rows, heads, head_dim] in place, row r at position positions[r]. The angle, its cos
// and its sin are computed in double and rounded to Acc, so the fp32 naive loop rounds them once,
// as any table of floats does; the rotation's products and sums are in Acc.
template <class Acc>
void rotate(std::vector<Acc>& x, std::int64_t heads, std::int64_t head_dim, const Rope& rope,
            const std::vector<std::int64_t>& positions) {
  const std::int64_t half = rope.rotary_dim / 2;
  for (std::size_t r = 0; r < positions.size(); ++r)
    for (std::int64_t h = 0; h < heads; ++h) {
      Acc* row = x.data() + (static_cast<std::int64_t>(r) * heads + h) * head_dim;
      for (std::int64_t i = 0; i < half; ++i) {
        const double frequency = std::pow(rope.base, -2.0 * static_cast<double>(i) /
                                                         static_cast<double>(rope.rotary_dim));
        const double angle = static_cast<double>(positions[r]) * frequency;
        const Acc c = static_cast<Acc>(std::cos(angle)), s = static_cast<Acc>(std::sin(angle));
        Acc& a = row[rope.interleaved ? 2 * i : i];
        Acc& b = row[rope.interleaved ? 2 * i + 1 : i + half];
        const Acc a0 = a, b0 = b;
        a = a0 * c - b0 * s;
        b = b0 * c + a0 * s;
      }
    }
}

// The position of every row of a batch-major [batch·tokens] layout: 0, 1, ..., tokens − 1 for
// each sequence.
inline std::vector<std::int64_t> sequence_positions(std::int64_t batch, std::int64_t tokens) {
  std::vector<std::int64_t> positions;
  for (std::int64_t b = 0; b < batch; ++b)
    for (std::int64_t t = 0; t < tokens; ++t) positions.push_back(t);
  return positions;
}

// ---- The module: projections in the layout of PyTorch's nn.Linear ------------------------------

struct ModuleShape {
  std::int64_t model_dim = 0;
  std::int64_t heads = 0;
  std::int64_t kv_groups = 0;
  std::int64_t head_dim = 0;
  std::int64_t value_dim = 0;
  bool causal = false;
  std::optional<double> scale;  // defaults to 1/sqrt(head_dim)
  std::optional<Rope> rope;     // applied to q and k after their projections
};

// Row-major float weights, W [out_features, in_features]; a bias is empty when absent.
struct ModuleWeights {
  std::vector<float> wq, wk, wv, wo;
  std::vector<float> bq, bk, bv, bo;
};

// y = x·Wᵀ + b for x [rows, in] and W [out, in], in Acc.
template <class Acc, class In>
std::vector<Acc> linear(const std::vector<In>& x, std::int64_t rows, std::int64_t in,
                        const std::vector<float>& w, std::int64_t out,
                        const std::vector<float>& b) {
  std::vector<Acc> y(static_cast<std::size_t>(rows * out));
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t o = 0; o < out; ++o) {
      Acc sum = b.empty() ? Acc(0) : static_cast<Acc>(b[static_cast<std::size_t>(o)]);
      for (std::int64_t i = 0; i < in; ++i)
        sum += static_cast<Acc>(x[static_cast<std::size_t>(r * in + i)]) *
               static_cast<Acc>(w[static_cast<std::size_t>(o * in + i)]);
      y[static_cast<std::size_t>(r * out + o)] = sum;
    }
  return y;
}

// The attention layer on x [batch·tokens, model_dim] (batch-major rows): project to Q, K, V,
// rotate Q and K if m.rope says so (row r at positions[r]; by default its index in its sequence),
// attend within each sequence, project the heads back. Every step in Acc.
template <class Acc>
std::vector<Acc> module_forward(const ModuleShape& m, const ModuleWeights& w,
                                const std::vector<float>& x, std::int64_t batch,
                                std::vector<std::int64_t> positions = {}) {
  const std::int64_t rows = static_cast<std::int64_t>(x.size()) / m.model_dim;
  AttentionShape s;
  s.batch = batch;
  s.q_len = s.kv_len = rows / batch;
  s.heads = m.heads;
  s.kv_groups = m.kv_groups;
  s.head_dim = m.head_dim;
  s.value_dim = m.value_dim;
  std::vector<Acc> q = linear<Acc>(x, rows, m.model_dim, w.wq, m.heads * m.head_dim, w.bq);
  std::vector<Acc> k = linear<Acc>(x, rows, m.model_dim, w.wk, m.kv_groups * m.head_dim, w.bk);
  if (m.rope) {
    if (positions.empty()) positions = sequence_positions(batch, rows / batch);
    rotate(q, m.heads, m.head_dim, *m.rope, positions);
    rotate(k, m.kv_groups, m.head_dim, *m.rope, positions);
  }
  const std::vector<Acc> v =
      linear<Acc>(x, rows, m.model_dim, w.wv, m.kv_groups * m.value_dim, w.bv);
  const AttentionResult<Acc> a =
      attention<Acc>(s, q.data(), k.data(), v.data(), m.causal, m.scale);
  return linear<Acc>(a.o, rows, m.heads * m.value_dim, w.wo, m.model_dim, w.bo);
}

// ---- Helpers -----------------------------------------------------------------------------------

// `count` floats uniform in [lo, hi), the same for the same seed.
inline std::vector<float> random_vector(std::int64_t count, std::uint64_t seed, float lo = -1.0f,
                                        float hi = 1.0f) {
  std::mt19937_64 generator(seed);
  std::vector<float> values(static_cast<std::size_t>(count));
  for (float& value : values) {
    const double unit = static_cast<double>(generator() >> 11) * 0x1p-53;  // [0, 1)
    value = static_cast<float>(lo + (hi - lo) * unit);
  }
  return values;
}

inline void fill_random(std::vector<float>& values, std::uint64_t seed, float lo = -1.0f,
                        float hi = 1.0f) {
  values = random_vector(static_cast<std::int64_t>(values.size()), seed, lo, hi);
}

// |a - b|, where equal values (infinities included) differ by 0 and a NaN or an infinity
// against a finite value differs by +inf.
inline double abs_diff(double a, double b) {
  if (a == b) return 0.0;
  const double d = std::abs(a - b);
  return std::isnan(d) ? std::numeric_limits<double>::infinity() : d;
}

// max_i |a_i - b_i| (see abs_diff); +inf when the sizes differ.
template <class A, class B>
double max_abs_error(const std::vector<A>& a, const std::vector<B>& b) {
  if (a.size() != b.size()) return std::numeric_limits<double>::infinity();
  double worst = 0.0;
  for (std::size_t i = 0; i < a.size(); ++i)
    worst = std::max(worst, abs_diff(static_cast<double>(a[i]), static_cast<double>(b[i])));
  return worst;
}

template <class A>
double max_abs(const std::vector<A>& a) {
  double best = 0.0;
  for (const A& x : a) best = std::max(best, std::abs(static_cast<double>(x)));
  return best;
}

template <class A>
bool any_nan(const std::vector<A>& a) {
  for (const A& x : a)
    if (std::isnan(x)) return true;
  return false;
}

// The accuracy standard: max|lib - oracle| <= 2 * max|naive_fp32 - oracle| + 1e-6.
template <class Lib, class Naive32>
::testing::AssertionResult within_standard(const char* what, const std::vector<Lib>& lib,
                                           const std::vector<double>& oracle,
                                           const std::vector<Naive32>& naive_fp32) {
  if (lib.size() != oracle.size() || naive_fp32.size() != oracle.size())
    return ::testing::AssertionFailure()
           << what << ": sizes differ: lib " << lib.size() << ", oracle " << oracle.size()
           << ", naive fp32 " << naive_fp32.size();
  const double error = max_abs_error(lib, oracle);
  const double naive_error = max_abs_error(naive_fp32, oracle);
  const double bound = 2.0 * naive_error + 1e-6;
  std::ostringstream detail;
  detail << what << ": max|lib - oracle| = " << error << ", bound = 2 * " << naive_error
         << " + 1e-6 = " << bound;
  if (error <= bound) return ::testing::AssertionSuccess() << detail.str();
  return ::testing::AssertionFailure() << detail.str();
}

}  // namespace naive
