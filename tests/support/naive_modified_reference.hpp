// The independent oracle of the score modifiers (test_modifiers.cpp): attention with every
// modifier, written with plain loops from the semantics stated in modifiers.hpp's header comment
// and sharing no code with the library (no multihead header; only naive_reference.hpp's shape
// and result types).
//
// Templated on the accumulation scalar, like naive::attention: double is the oracle, float the
// "naive fp32 loop" whose error sets the tolerance of the accuracy standard. Every product, sum,
// tanh, exp and log runs in Acc; the modifiers' inputs (slopes, sinks, masks) are rounded to Acc
// once, as a float table would be.
//
// For batch entry b, query head h, query i and key j, with offset = kv_len − q_len
// (bottom-right) or 0 (top-left), the score is
//   s = scale · q_i·k_j
//   s = cap · tanh(s / cap)                  softcap > 0
//   s = s − slope_h · |i + offset − j|       alibi_slopes
//   s = s + additive_mask[b, h, i, j]
//   s = logit(s, b, h, i, j)
// and key j is visible to query i iff every one of these that is on holds:
//   j ≤ i + offset                           causal
//   i + offset − left ≤ j ≤ i + offset + right  (a side of −1 is unbounded)
//   boolean_mask[b, h, i, j]
//   visible(b, h, i, j)
// The softmax over the visible keys also counts exp(sink) for each sink the head has (the
// per-head sinks, −inf = none, and the sink hook), which adds no value. A row with no visible
// key has output 0 and log-sum-exp −inf, or the log-sum-exp of its sinks when it has any.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <limits>
#include <optional>
#include <vector>

#include "naive_reference.hpp"

namespace naive {

// A mask over scores [batch, heads, q_len, kv_len], row-major; batch, heads and q_len may be 1
// to broadcast over that dimension. Empty values: no mask.
template <class T>
struct ScoreMask {
  std::vector<T> values;
  std::int64_t batch = 1, heads = 1, q_len = 1, kv_len = 0;

  bool empty() const { return values.empty(); }
  T at(std::int64_t b, std::int64_t h, std::int64_t i, std::int64_t j) const {
    const std::int64_t bb = batch == 1 ? 0 : b, hh = heads == 1 ? 0 : h, ii = q_len == 1 ? 0 : i;
    return values[static_cast<std::size_t>(((bb * heads + hh) * q_len + ii) * kv_len + j)];
  }
};

struct Modifiers {
  bool causal = false;
  bool top_left = false;              // offset 0 instead of kv_len − q_len
  std::int64_t window_left = -1;      // −1: unbounded
  std::int64_t window_right = -1;     // −1: unbounded
  double softcap = 0.0;               // 0: off
  std::vector<double> alibi_slopes;   // one per query head; empty: off
  std::vector<double> sinks;          // one per query head, −inf: none; empty: off
  ScoreMask<double> additive_mask;
  ScoreMask<char> boolean_mask;       // nonzero: visible
  std::function<double(double score, std::int64_t b, std::int64_t h, std::int64_t i,
                       std::int64_t j)>
      logit;
  std::function<bool(std::int64_t b, std::int64_t h, std::int64_t i, std::int64_t j)> visible;
  std::function<double(std::int64_t b, std::int64_t h)> sink;
  std::optional<double> scale;        // default 1/sqrt(head_dim)
};

inline std::int64_t query_offset(const AttentionShape& s, const Modifiers& m) {
  return m.top_left ? 0 : s.kv_len - s.q_len;
}

// Whether key j is visible to query i of head h of batch entry b.
inline bool key_visible(const AttentionShape& s, const Modifiers& m, std::int64_t b,
                        std::int64_t h, std::int64_t i, std::int64_t j) {
  const std::int64_t diagonal = i + query_offset(s, m);
  if (m.causal && j > diagonal) return false;
  if (m.window_left >= 0 && j < diagonal - m.window_left) return false;
  if (m.window_right >= 0 && j > diagonal + m.window_right) return false;
  if (!m.boolean_mask.empty() && !m.boolean_mask.at(b, h, i, j)) return false;
  if (m.visible && !m.visible(b, h, i, j)) return false;
  return true;
}

// Per row [batch, heads, q_len]: 1 where the row sees no key at all.
inline std::vector<char> rows_seeing_nothing(const AttentionShape& s, const Modifiers& m) {
  std::vector<char> nothing(static_cast<std::size_t>(s.lse_size()), 1);
  for (std::int64_t b = 0; b < s.batch; ++b)
    for (std::int64_t h = 0; h < s.heads; ++h)
      for (std::int64_t i = 0; i < s.q_len; ++i)
        for (std::int64_t j = 0; j < s.kv_len; ++j)
          if (key_visible(s, m, b, h, i, j)) {
            nothing[static_cast<std::size_t>((b * s.heads + h) * s.q_len + i)] = 0;
            break;
          }
  return nothing;
}

// softmax(modified scale · Q·Kᵀ, with the sinks) · V, in Acc. Layouts as naive::attention.
template <class Acc, class In>
AttentionResult<Acc> modified_attention(const AttentionShape& s, const In* q, const In* k,
                                        const In* v, const Modifiers& m) {
  constexpr Acc kMinusInf = -std::numeric_limits<Acc>::infinity();
  const Acc sc = m.scale ? static_cast<Acc>(*m.scale)
                         : Acc(1) / std::sqrt(static_cast<Acc>(s.head_dim));
  const Acc cap = static_cast<Acc>(m.softcap);
  const std::int64_t group_size = s.heads / s.kv_groups;
  const std::int64_t offset = query_offset(s, m);
  AttentionResult<Acc> r;
  r.o.assign(static_cast<std::size_t>(s.o_size()), Acc(0));
  r.lse.assign(static_cast<std::size_t>(s.lse_size()), kMinusInf);
  std::vector<Acc> scores(static_cast<std::size_t>(s.kv_len));
  std::vector<char> seen(static_cast<std::size_t>(s.kv_len));
  for (std::int64_t b = 0; b < s.batch; ++b)
    for (std::int64_t h = 0; h < s.heads; ++h) {
      const std::int64_t g = h / group_size;
      // The head's sinks (each −inf when absent).
      std::vector<Acc> sinks;
      if (!m.sinks.empty()) sinks.push_back(static_cast<Acc>(m.sinks[static_cast<std::size_t>(h)]));
      if (m.sink) sinks.push_back(static_cast<Acc>(m.sink(b, h)));
      for (std::int64_t i = 0; i < s.q_len; ++i) {
        const In* qi = q + ((b * s.q_len + i) * s.heads + h) * s.head_dim;
        Acc* oi = r.o.data() + ((b * s.q_len + i) * s.heads + h) * s.value_dim;
        Acc& lse = r.lse[static_cast<std::size_t>((b * s.heads + h) * s.q_len + i)];
        Acc max = kMinusInf;
        for (const Acc sink : sinks) max = std::max(max, sink);
        for (std::int64_t j = 0; j < s.kv_len; ++j) {
          const std::size_t jj = static_cast<std::size_t>(j);
          seen[jj] = key_visible(s, m, b, h, i, j);
          if (!seen[jj]) continue;
          const In* kj = k + ((b * s.kv_len + j) * s.kv_groups + g) * s.head_dim;
          Acc dot = 0;
          for (std::int64_t d = 0; d < s.head_dim; ++d)
            dot += static_cast<Acc>(qi[d]) * static_cast<Acc>(kj[d]);
          Acc x = sc * dot;
          if (m.softcap > 0) x = cap * std::tanh(x / cap);
          if (!m.alibi_slopes.empty())
            x -= static_cast<Acc>(m.alibi_slopes[static_cast<std::size_t>(h)]) *
                 static_cast<Acc>(std::llabs(i + offset - j));
          if (!m.additive_mask.empty()) x += static_cast<Acc>(m.additive_mask.at(b, h, i, j));
          if (m.logit) x = static_cast<Acc>(m.logit(static_cast<double>(x), b, h, i, j));
          scores[jj] = x;
          max = std::max(max, x);
        }
        if (max == kMinusInf) continue;  // nothing seen, no sink: output 0, lse −inf
        Acc sum = 0;
        for (const Acc sink : sinks) sum += std::exp(sink - max);
        for (std::int64_t j = 0; j < s.kv_len; ++j) {
          const std::size_t jj = static_cast<std::size_t>(j);
          if (!seen[jj]) continue;
          scores[jj] = std::exp(scores[jj] - max);
          sum += scores[jj];
        }
        for (std::int64_t j = 0; j < s.kv_len; ++j) {
          const std::size_t jj = static_cast<std::size_t>(j);
          if (!seen[jj]) continue;
          const Acc p = scores[jj] / sum;
          const In* vj = v + ((b * s.kv_len + j) * s.kv_groups + g) * s.value_dim;
          for (std::int64_t d = 0; d < s.value_dim; ++d) oi[d] += p * static_cast<Acc>(vj[d]);
        }
        lse = max + std::log(sum);
      }
    }
  return r;
}

}  // namespace naive
