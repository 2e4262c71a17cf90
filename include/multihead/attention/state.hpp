// The online-softmax state and its operations — one step, normalise and store, merge — used
// by every kernel (tiles in the fused kernel, cache splits in decoding), by merge_states
// (merge.hpp) and by whoever shards a long sequence across threads or machines.
//
// For each query row, over the keys seen so far:
//   max  m = max_j s_j                     (-inf when no key was seen)
//   sum  l = Σ_j exp(s_j − m)              (0 when no key was seen)
//   out  o = Σ_j exp(s_j − m) · v_j        (unnormalised; 0 when no key was seen)
// Normalised, the row's attention output is o / l and its log-sum-exp m + log l. Every
// operation here guards the empty state so that it never computes −inf − (−inf) = NaN.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "../core/error.hpp"

namespace multihead {
inline namespace MULTIHEAD_ISA_NAMESPACE {

// exp(old_max − new_max), the factor that carries a row's sum and output over to a larger
// maximum; 0 for a row that had seen nothing (old_max = −inf), 1 while both are −inf.
inline float rescale_factor(float old_max, float new_max) {
  if (old_max == new_max) return 1.0f;
  return std::exp(old_max - new_max);  // old_max = −inf < new_max gives exactly 0
}

// 1/l, or 0 for a row that saw no key: its output is then 0, never NaN. A NaN sum (a NaN or
// +inf among the row's scores) stays NaN, and so does the row's output.
inline float inverse_sum(float sum) { return sum == 0.0f ? 0.0f : 1.0f / sum; }

// m + log l, or −inf for a row that saw no key; NaN for a NaN sum.
inline float log_sum_exp(float max, float sum) {
  return sum == 0.0f ? -std::numeric_limits<float>::infinity() : max + std::log(sum);
}

// The probability a tile stores for a key its row may not see: −0, where exp(−inf) gives +0.
// The P·V of a tile whose V holds a non-finite value skips these keys (a product 0 · NaN would
// reach the row), and only these: a visible key whose weight underflows to +0 still counts.
constexpr float kHiddenProbability = -0.0f;
inline bool hidden_probability(float p) { return p == 0.0f && std::signbit(p); }

namespace detail {

// Two states of one row over disjoint key sets, carried over to their common max: the factors
// their outputs take, and the merged max and sum.
struct MergeWeights {
  float a, b, max, sum;
};
inline MergeWeights merge_weights(float m, float l, float m2, float l2) {
  const float max = std::max(m, m2);
  const float a = rescale_factor(m, max), b = rescale_factor(m2, max);
  return {a, b, max, a * l + b * l2};
}

// Folds the state (o2, m2, l2) of one row over other keys into (o, m, l), `dim` output values:
// afterwards (o, m, l) is the state over both key sets. An empty side changes nothing.
inline void merge_row(float* o, float& m, float& l, const float* o2, float m2, float l2,
                      std::int64_t dim) {
  const MergeWeights w = merge_weights(m, l, m2, l2);
  for (std::int64_t c = 0; c < dim; ++c) o[c] = w.a * o[c] + w.b * o2[c];
  m = w.max;
  l = w.sum;
}

// Writes one row's normalised output, dim values read `step` floats apart from `out` (1 for a
// row-major state, the block's rows for a transposed one), to target, and its log-sum-exp to
// *lse unless lse is null. Every kernel and SoftmaxState store through this.
inline void store_normalized(const float* out, std::int64_t step, std::int64_t dim, float max,
                             float sum, float* target, float* lse) {
  const float inverse = inverse_sum(sum);
  for (std::int64_t c = 0; c < dim; ++c) target[c] = out[c * step] * inverse;
  if (lse != nullptr) *lse = log_sum_exp(max, sum);
}

// The online-softmax step of a tile, on vectors of rows' states (Ops, simd/): given the running
// max m and the tile's max, the new max goes to m, `offset` is what the tile's scores are
// exponentiated against (the new max, 0 while it is −inf, so that an empty row never computes
// −inf − (−inf) = NaN) and `alpha` the factor that carries the old sum and output over (0 for a
// row that had seen nothing). Then p = probability(s) for every score, and fold() the tile's
// sum of p into the running sum. Every tile path (fused, decode) takes its steps through this.
template <class Ops>
struct SoftmaxStep {
  using V = typename Ops::V;
  V offset, alpha;
  float row_alpha = 1.0f;  // alpha of a row held in scalars (the second constructor)

  SoftmaxStep() = default;
  SoftmaxStep(V& m, V tile_max) {
    const V new_max = Ops::max(m, tile_max);
    offset = Ops::neg_inf_to_zero(new_max);
    alpha = Ops::exp(Ops::sub(m, offset));
    m = new_max;
  }
  // The same step for one row whose state is kept in scalars (the row-major decode tiles): no
  // exp at all while the row's max stays, the usual case after the first tiles.
  SoftmaxStep(float& m, float tile_max) {
    const float new_max = std::max(m, tile_max);
    offset = Ops::set1(new_max == -std::numeric_limits<float>::infinity() ? 0.0f : new_max);
    row_alpha = rescale_factor(m, new_max);
    alpha = Ops::set1(row_alpha);
    m = new_max;
  }
  V probability(V score) const { return Ops::exp(Ops::sub(score, offset)); }
  void fold(V& l, V tile_sum) const { l = Ops::fma(l, alpha, tile_sum); }
  void fold(float& l, float tile_sum) const { l = l * row_alpha + tile_sum; }
};

}  // namespace detail

// The state of `rows` query rows with outputs of `dim` values, stored row-major.
class SoftmaxState {
 public:
  SoftmaxState(std::int64_t rows, std::int64_t dim)
      : rows_(checked_extent(rows, "rows")), dim_(checked_extent(dim, "dim")),
        out_(static_cast<std::size_t>(detail::checked_mul(rows, dim, "state size (rows * dim)"))),
        max_(static_cast<std::size_t>(rows), -std::numeric_limits<float>::infinity()),
        sum_(static_cast<std::size_t>(rows), 0.0f) {}

  std::int64_t rows() const noexcept { return rows_; }
  std::int64_t dim() const noexcept { return dim_; }
  float* out(std::int64_t row) noexcept { return out_.data() + row * dim_; }
  const float* out(std::int64_t row) const noexcept { return out_.data() + row * dim_; }
  float& max(std::int64_t row) noexcept { return max_[static_cast<std::size_t>(row)]; }
  float max(std::int64_t row) const noexcept { return max_[static_cast<std::size_t>(row)]; }
  float& sum(std::int64_t row) noexcept { return sum_[static_cast<std::size_t>(row)]; }
  float sum(std::int64_t row) const noexcept { return sum_[static_cast<std::size_t>(row)]; }

  // Back to the empty state: nothing seen.
  void clear() {
    std::fill(out_.begin(), out_.end(), 0.0f);
    std::fill(max_.begin(), max_.end(), -std::numeric_limits<float>::infinity());
    std::fill(sum_.begin(), sum_.end(), 0.0f);
  }

  // Folds in the state of the same rows over other keys: afterwards this is the state over
  // the union of both key sets. Merging an empty state changes nothing. The decode kernel
  // merges its cache splits with the same detail::merge_row.
  void merge(const SoftmaxState& other) {
    detail::require(other.rows_ == rows_ && other.dim_ == dim_, "merge: states of [", rows_,
                    ", ", dim_, "] and [", other.rows_, ", ", other.dim_, "] differ in shape");
    for (std::int64_t r = 0; r < rows_; ++r)
      detail::merge_row(out(r), max(r), sum(r), other.out(r), other.max(r), other.sum(r), dim_);
  }

  // Writes row r's normalised output to out + r·out_stride and, if lse is not null, its
  // log-sum-exp to lse[r].
  void normalize(float* out, std::int64_t out_stride, float* lse) const {
    for (std::int64_t r = 0; r < rows_; ++r)
      detail::store_normalized(this->out(r), 1, dim_, max(r), sum(r), out + r * out_stride,
                               lse != nullptr ? lse + r : nullptr);
  }

 private:
  static std::int64_t checked_extent(std::int64_t value, const char* name) {
    detail::require(value >= 0, "SoftmaxState: ", name, " (", value, ") must not be negative");
    return value;
  }

  std::int64_t rows_, dim_;
  std::vector<float> out_, max_, sum_;
};

}  // namespace MULTIHEAD_ISA_NAMESPACE
}  // namespace multihead
