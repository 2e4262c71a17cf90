// What the layers (Attention<Variant>, MLA) compute around their kernels: the projections
// x·Wᵀ + b split over threads, MLA's per-head products and RMSNorm, the checks of a forward's
// input and of a call's own fields, nn.Linear's initialisation, and which kernel a fresh forward
// runs.
#pragma once

#include "../core/eigen.hpp"
#include <cmath>
#include <cstdint>
#include <random>

#include "../attention/reference.hpp"
#include "../core/compiled.hpp"
#include "../core/error.hpp"
#include "../core/parallel.hpp"
#include "../simd/ops.hpp"

namespace multihead {
inline namespace MULTIHEAD_ISA_NAMESPACE {

using RowMatrix = detail::RowMatrix;

// Which attention kernel a layer runs: the fused kernel (fused.hpp), or the reference
// (reference.hpp), the plain oracle kept for checking and comparison. With a KV cache the choice
// applies to a prefill into an empty cache; later calls read the cache with decode_attention.
enum class KernelChoice { fused, reference };

namespace detail {

// out = x·Wᵀ (+ b) with the work split over threads: by rows of x when there are enough of
// them, otherwise by output features, so one-token decode steps use every thread too. Each
// thread runs one large product on its share, which Eigen does well. A template (on this ISA's
// ops, unused inside) so that a build with the kernels library compiles it once (compiled.hpp).
template <class Ops = simd::Ops>
void project(const Eigen::Ref<const RowMatrix>& x, const RowMatrix& w, const Eigen::VectorXf& bias,
             RowMatrix& out, int threads) {
  out.resize(x.rows(), w.rows());
  const bool by_rows = x.rows() >= 32 * static_cast<Eigen::Index>(threads);
  const std::int64_t units = by_rows ? x.rows() : w.rows();
  parallel_chunks(units, threads, [&](int, std::int64_t begin, std::int64_t end) {
    const Eigen::Index count = end - begin;
    if (by_rows) {
      out.middleRows(begin, count).noalias() = x.middleRows(begin, count) * w.transpose();
      if (bias.size() != 0) out.middleRows(begin, count).rowwise() += bias.transpose();
    } else {
      out.middleCols(begin, count).noalias() = x * w.middleRows(begin, count).transpose();
      if (bias.size() != 0)
        out.middleCols(begin, count).rowwise() += bias.segment(begin, count).transpose();
    }
  });
}

MULTIHEAD_INSTANCE(void project<simd::Ops>(const Eigen::Ref<const RowMatrix>&, const RowMatrix&,
                                           const Eigen::VectorXf&, RowMatrix&, int))

// The checks every forward runs on x and its options before touching anything.
inline void check_layer_input(const Eigen::Ref<const RowMatrix>& x, std::int64_t model_dim,
                              std::int64_t batch, int threads) {
  require(x.cols() == model_dim, "x.cols (", x.cols(), ") must equal model_dim (", model_dim, ")");
  require(batch > 0, "batch (", batch, ") must be positive");
  require(x.rows() > 0 && x.rows() % batch == 0, "x.rows (", x.rows(),
          ") must be a positive multiple of batch (", batch, ")");
  require(threads >= 0, "threads (", threads, ") must not be negative");
}

// A layer call's own fields (causal, masks: ForwardOptions and LatentForwardOptions both have
// them) over the kernel options of the layer's config. self: whether the config's causal
// applies (not to cross-attention, whose queries and keys are of two sequences).
template <class Call>
KernelOptions with_call_fields(KernelOptions options, const Call& call, bool self = true) {
  options.causal = call.causal.value_or(self && options.causal);
  options.additive_mask = call.additive_mask;
  options.boolean_mask = call.boolean_mask;
  return options;
}

// The checks of an incremental forward over a cache of `batch` sequences holding `length` of
// `capacity` tokens, on top of check_layer_input's: options.batch is 1 or the cache's, and the
// new tokens fit. Returns the tokens per sequence in x.
inline std::int64_t check_step_input(const Eigen::Ref<const RowMatrix>& x, std::int64_t model_dim,
                                     std::int64_t options_batch, int threads, std::int64_t batch,
                                     std::int64_t length, std::int64_t capacity) {
  require(options_batch == 1 || options_batch == batch, "batch (", options_batch,
          ") must be 1 (take the cache's) or the cache's batch (", batch, ")");
  check_layer_input(x, model_dim, batch, threads);
  const std::int64_t tokens = x.rows() / batch, room = capacity - length;
  require(tokens <= room, "x holds ", tokens, " tokens per sequence but the cache has room for ",
          room, " (length ", length, " of capacity ", capacity, ")");
  return tokens;
}

// Fills `values` (a range of floats) uniformly in [-bound, bound), as nn.Linear initialises its
// weight and bias with bound 1/sqrt(in_features); the same generator state, the same values.
template <class Range>
void fill_uniform(Range&& values, float bound, std::mt19937_64& generator) {
  for (float& x : values) {
    const float unit = static_cast<float>(generator() >> 40) * 0x1p-24f;  // [0, 1)
    x = (2.0f * unit - 1.0f) * bound;
  }
}

// x / sqrt(mean(x²) + eps) · weight on `count` values of each row, starting at column `first`:
// DeepSeek's RMSNorm (computed in fp32, the mean summed in double).
inline void rms_norm_rows(RowMatrix& m, std::int64_t first, std::int64_t count,
                          const RowMatrix& weight, float eps) {
  for (Eigen::Index r = 0; r < m.rows(); ++r) {
    float* x = m.row(r).data() + first;
    double squares = 0.0;
    for (std::int64_t i = 0; i < count; ++i) squares += double(x[i]) * double(x[i]);
    const float inverse =
        static_cast<float>(1.0 / std::sqrt(squares / static_cast<double>(count) + double(eps)));
    for (std::int64_t i = 0; i < count; ++i) x[i] = x[i] * inverse * weight(0, i);
  }
}

using ConstStridedMap = Eigen::Map<const RowMatrix, 0, Eigen::OuterStride<>>;
using StridedMap = Eigen::Map<RowMatrix, 0, Eigen::OuterStride<>>;

// Columns [column, column + cols) of every row of m, as a matrix.
inline ConstStridedMap columns(const RowMatrix& m, std::int64_t column, std::int64_t cols) {
  return ConstStridedMap(m.data() + column, m.rows(), cols, Eigen::OuterStride<>(m.cols()));
}
inline StridedMap columns(RowMatrix& m, std::int64_t column, std::int64_t cols) {
  return StridedMap(m.data() + column, m.rows(), cols, Eigen::OuterStride<>(m.cols()));
}
// Rows [row, row + count) of m.
inline ConstStridedMap row_range(const RowMatrix& m, std::int64_t row, std::int64_t count) {
  return ConstStridedMap(m.data() + row * m.cols(), count, m.cols(), Eigen::OuterStride<>(m.cols()));
}

// out = a·b, or a·bᵀ with transpose_b: the absorbed path's per-head products with W_UK and W_UV.
// A template (on this ISA's ops, unused inside) so that a build with the kernels library
// compiles Eigen's products once (compiled.hpp), not in every translation unit that runs MLA.
template <class Ops = simd::Ops>
void multiply(StridedMap out, const ConstStridedMap& a, const ConstStridedMap& b, bool transpose_b) {
  if (transpose_b)
    out.noalias() = a * b.transpose();
  else
    out.noalias() = a * b;
}

MULTIHEAD_INSTANCE(void multiply<simd::Ops>(StridedMap, const ConstStridedMap&,
                                            const ConstStridedMap&, bool))

}  // namespace detail

}  // namespace MULTIHEAD_ISA_NAMESPACE
}  // namespace multihead
