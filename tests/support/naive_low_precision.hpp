// The naive attention in a lower precision, for kernels and layers whose operands are bf16 or
// fp16: the inputs as given, scores, softmax and sums in Acc, the probabilities optionally
// rounded to bf16 before P·V (as any bf16 P·V product takes them), the output rounded to O.
// With Acc = O = double and nothing rounded it is the oracle.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <vector>

#include <multihead/multihead.hpp>

#include "naive_reference.hpp"

namespace naive {

struct Visibility {
  bool causal = false;
  std::int64_t window_left = -1;  // keys further left than this are hidden; -1: none
  bool operator()(const AttentionShape& s, std::int64_t i, std::int64_t j) const {
    const std::int64_t diagonal = i + (s.kv_len - s.q_len);
    if (causal && j > diagonal) return false;
    return window_left < 0 || j >= diagonal - window_left;
  }
};

template <class Acc>
struct Result {
  std::vector<Acc> o, lse;
};

// The naive computation, every sum in Acc; with round_p the probabilities are rounded to bf16
// before P·V; O is rounded to O at the end. Acc = double with nothing rounded is the oracle.
template <class Acc, class O>
Result<double> naive_attention(const AttentionShape& s, const std::vector<float>& q,
                               const std::vector<float>& k, const std::vector<float>& v,
                               const Visibility& visible, bool round_p) {
  const Acc scale = Acc(1) / std::sqrt(Acc(s.head_dim));
  const std::int64_t group_size = s.heads / s.kv_groups;
  Result<double> r;
  r.o.assign(std::size_t(s.o_size()), 0.0);
  r.lse.assign(std::size_t(s.lse_size()), 0.0);
  std::vector<Acc> p(std::size_t(s.kv_len));
  for (std::int64_t b = 0; b < s.batch; ++b)
    for (std::int64_t h = 0; h < s.heads; ++h)
      for (std::int64_t i = 0; i < s.q_len; ++i) {
        const std::int64_t g = h / group_size;
        const float* qi = &q[std::size_t(((b * s.q_len + i) * s.heads + h) * s.head_dim)];
        Acc max = -std::numeric_limits<Acc>::infinity();
        for (std::int64_t j = 0; j < s.kv_len; ++j) {
          if (!visible(s, i, j)) continue;
          const float* kj = &k[std::size_t(((b * s.kv_len + j) * s.kv_groups + g) * s.head_dim)];
          Acc dot = 0;
          for (std::int64_t x = 0; x < s.head_dim; ++x) dot += Acc(qi[x]) * Acc(kj[x]);
          p[std::size_t(j)] = scale * dot;
          max = std::max(max, p[std::size_t(j)]);
        }
        Acc sum = 0;
        for (std::int64_t j = 0; j < s.kv_len; ++j) {
          if (!visible(s, i, j)) continue;
          p[std::size_t(j)] = std::exp(p[std::size_t(j)] - max);
          sum += p[std::size_t(j)];
        }
        std::vector<Acc> out(std::size_t(s.value_dim), Acc(0));
        for (std::int64_t j = 0; j < s.kv_len; ++j) {
          if (!visible(s, i, j)) continue;
          Acc pj = p[std::size_t(j)];
          if (round_p) pj = multihead::to_float(multihead::to_bf16(float(pj)));
          const float* vj = &v[std::size_t(((b * s.kv_len + j) * s.kv_groups + g) * s.value_dim)];
          for (std::int64_t c = 0; c < s.value_dim; ++c) out[std::size_t(c)] += pj * Acc(vj[c]);
        }
        double* oi = &r.o[std::size_t(((b * s.q_len + i) * s.heads + h) * s.value_dim)];
        for (std::int64_t c = 0; c < s.value_dim; ++c) {
          const Acc x = out[std::size_t(c)] / sum;
          if constexpr (std::is_same_v<O, double>)
            oi[c] = double(x);
          else
            oi[c] = multihead::to_float(multihead::from_float<O>(float(x)));
        }
        r.lse[std::size_t((b * s.heads + h) * s.q_len + i)] = double(max + std::log(sum));
      }
  return r;
}

}  // namespace naive
