// The reference attention kernel: plain Eigen products and a full softmax per head.
//
// It materialises the whole q_len × kv_len score matrix of one head at a time, so it is the
// simplest correct path: the oracle the fast kernels are tested against and the fallback for
// anything they do not cover. Cost: 2·q_len·kv_len·(head_dim + value_dim) flops per head and
// q_len·kv_len floats of workspace per thread.
#pragma once

#include "../core/eigen.hpp"
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "../core/compiled.hpp"
#include "../core/parallel.hpp"
#include "../simd/ops.hpp"
#include "options.hpp"
#include "score_pass.hpp"
#include "state.hpp"
#include "visible_values.hpp"

namespace multihead {
inline namespace MULTIHEAD_ISA_NAMESPACE {
namespace detail {

using RowMatrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using ConstRowsMap = Eigen::Map<const RowMatrix, Eigen::Unaligned, Eigen::OuterStride<>>;
using RowsMap = Eigen::Map<RowMatrix, Eigen::Unaligned, Eigen::OuterStride<>>;

// Turns a row of scores (−inf where a key is hidden) into probabilities in place and returns
// the row's log-sum-exp; `sink` (−inf: none) joins the denominator. Subtracting the row maximum
// keeps exp from overflowing whatever the scores' magnitude. A row that sees nothing (and has
// no sink) becomes all zeros, −inf; a NaN or +inf score makes the row NaN (modifiers.hpp).
// Hidden keys get probability −0 (state.hpp's kHiddenProbability).
inline float softmax_row(float* row, std::int64_t length, float sink) {
  constexpr float kMinusInf = -std::numeric_limits<float>::infinity();
  float max = sink;
  bool nan = false;
  for (std::int64_t j = 0; j < length; ++j) {
    nan = nan || std::isnan(row[j]);
    max = std::max(max, row[j]);  // NaN is skipped here, and counted above
  }
  if (nan || max == kMinusInf) {
    const float fill = nan ? std::numeric_limits<float>::quiet_NaN() : 0.0f;
    for (std::int64_t j = 0; j < length; ++j) row[j] = row[j] == kMinusInf ? kHiddenProbability : fill;
    return nan ? fill : max;
  }
  float sum = std::exp(sink - max);  // 0 without a sink
  for (std::int64_t j = 0; j < length; ++j) {
    const bool hidden = row[j] == kMinusInf;
    row[j] = std::exp(row[j] - max);  // NaN for every key when max is +inf
    sum += row[j];
    if (hidden) row[j] = kHiddenProbability;
  }
  const float inverse = 1.0f / sum;
  for (std::int64_t j = 0; j < length; ++j) row[j] *= inverse;
  return max + std::log(sum);
}

// The Eigen outer stride of a view's token rows. A single row may carry any stride; Eigen gets
// the row length then, which it accepts whatever the view says.
template <class T>
Eigen::OuterStride<> token_rows_stride(const TensorView<T>& view) {
  return Eigen::OuterStride<>(view.tokens() > 1 ? view.token_stride() : view.dim());
}

// reference_attention's work after its checks. A template (on this ISA's ops, unused inside)
// only so that a build with the kernels library compiles its Eigen products once (compiled.hpp).
template <class Ops>
void run_reference(const TensorView<const float>& q, const TensorView<const float>& k,
                   const TensorView<const float>& v, const TensorView<float>& o, LseOutput lse,
                   const KernelShape& shape, const ScorePass& pass, float scale, int threads) {
  const std::int64_t group_size = shape.group_size();

  // One score matrix per thread, allocated before the parallel region so nothing in it throws,
  // and first written by the thread that uses it (no serial copy of one into the others).
  std::vector<detail::RowMatrix> scores;
  scores.reserve(static_cast<std::size_t>(threads));
  for (int t = 0; t < threads; ++t) scores.emplace_back(shape.q_len, shape.kv_len);

  // Work units are (batch, query head) pairs: independent, equal in cost.
  parallel_chunks(shape.batch * shape.heads, threads,
                  [&](int thread, std::int64_t begin, std::int64_t end) {
    detail::RowMatrix& s = scores[static_cast<std::size_t>(thread)];
    detail::BlockRows block;  // one query row at a time: its range and modifiers
    for (std::int64_t unit = begin; unit < end; ++unit) {
      const std::int64_t b = unit / shape.heads;
      const std::int64_t h = unit % shape.heads;
      const std::int64_t g = h / group_size;
      const detail::ConstRowsMap q_head(q.row(b, 0, h), shape.q_len, shape.head_dim,
                                        detail::token_rows_stride(q));
      const detail::ConstRowsMap k_head(k.row(b, 0, g), shape.kv_len, shape.head_dim,
                                        detail::token_rows_stride(k));
      const detail::ConstRowsMap v_head(v.row(b, 0, g), shape.kv_len, shape.value_dim,
                                        detail::token_rows_stride(v));
      detail::RowsMap o_head(o.row(b, 0, h), shape.q_len, shape.value_dim,
                             detail::token_rows_stride(o));

      s.noalias() = scale * (q_head * k_head.transpose());
      const float sink = pass.sink(b, h);
      for (std::int64_t i = 0; i < shape.q_len; ++i) {
        float* row = &s(i, 0);
        pass.block_rows(block, b, g, detail::group_row(i, h, group_size), 1, 1, shape.q_len,
                        shape.kv_len);
        pass.apply(row, shape.kv_len, 1, shape.kv_len, 0, block);
        const float row_lse = detail::softmax_row(row, shape.kv_len, sink);
        if (lse.data != nullptr) lse.data[(b * shape.heads + h) * shape.q_len + i] = row_lse;
      }
      // A hidden key's V must not reach its row, not even as 0 · NaN: where V holds a
      // non-finite value, the product over each row's visible keys (visible_values.hpp).
      if (values_finite(v.row(b, 0, g), v.tokens() > 1 ? v.token_stride() : 0, shape.kv_len,
                        shape.value_dim)) {
        o_head.noalias() = s * v_head;
      } else {
        o_head.setZero();
        accumulate_visible(
            shape.q_len, shape.kv_len, v.row(b, 0, g), v.token_stride(), shape.value_dim,
            [&](std::int64_t i, std::int64_t j) { return s(i, j); },
            [&](std::int64_t i, std::int64_t c) -> float& { return o_head(i, c); });
      }
    }
  });
}

MULTIHEAD_INSTANCE(void run_reference<simd::Ops>(const TensorView<const float>&,
                                                 const TensorView<const float>&,
                                                 const TensorView<const float>&,
                                                 const TensorView<float>&, LseOutput,
                                                 const KernelShape&, const ScorePass&, float, int))

}  // namespace detail

// O = softmax(scale · Q·Kᵀ, modified as modifiers.hpp says) · V for every batch and query head.
// Query head h reads KV head h / (heads / kv_groups): GQA and MQA share K/V between heads
// without copying.
// Writes `o` and, when given, `lse` ([batch, heads, q_len]); throws std::invalid_argument on any
// bad argument before writing anything.
inline void reference_attention(const TensorView<const float>& q,
                                const TensorView<const float>& k,
                                const TensorView<const float>& v, const TensorView<float>& o,
                                const KernelOptions& options = {}, LseOutput lse = {}) {
  const KernelShape shape = check_kernel_args(q, k, v, o, lse, options);
  const detail::ScorePass pass(options, shape);
  const detail::ExecutorScope scope(options.executor);
  // A thread per (batch, head) at most: each holds a q_len × kv_len score matrix.
  const int threads = int(std::min<std::int64_t>(resolve_threads(options.threads),
                                                 shape.batch * shape.heads));
  detail::run_reference<simd::Ops>(q, k, v, o, lse, shape, pass,
                                   resolved_scale(options, shape.head_dim), threads);
}

}  // namespace MULTIHEAD_ISA_NAMESPACE
}  // namespace multihead
