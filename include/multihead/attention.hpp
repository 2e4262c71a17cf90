// Attention<Variant>: an attention layer with its projections, the module users build models of.
//
// Weights follow PyTorch's nn.Linear: a projection from `in` to `out` features is an
// [out, in] row-major matrix W with y = x·Wᵀ + b, so tensors exported from a PyTorch model load
// as they are:
//   Wq [heads·head_dim, model_dim]      Wk [kv_groups·head_dim, model_dim]
//   Wv [kv_groups·value_dim, model_dim] Wo [model_dim, heads·value_dim]
// The input x is [batch·tokens, model_dim], batch-major (the rows of sequence 0, then 1, ...).
// Q = x·Wqᵀ is then exactly the [batch, tokens, heads, head_dim] layout the kernels read.
#pragma once

#include <Eigen/Core>
#include <cmath>
#include <cstdint>
#include <random>
#include <type_traits>

#include "config.hpp"
#include "fused.hpp"
#include "parallel.hpp"
#include "reference.hpp"
#include "variant.hpp"

namespace multihead {
inline namespace MULTIHEAD_ISA_NAMESPACE {

using RowMatrix = detail::RowMatrix;

enum class Projection { q, k, v, o };

inline const char* projection_name(Projection p) {
  switch (p) {
    case Projection::q: return "Wq";
    case Projection::k: return "Wk";
    case Projection::v: return "Wv";
    case Projection::o: return "Wo";
  }
  return "W?";
}

// Which attention kernel a layer runs: the fused kernel (fused.hpp), or the reference
// (reference.hpp), the plain oracle kept for checking and comparison.
enum class KernelChoice { fused, reference };

struct ForwardOptions {
  std::int64_t batch = 1;  // x holds batch sequences of x.rows() / batch tokens each
  int threads = 0;         // 0: all OpenMP threads
  KernelChoice kernel = KernelChoice::fused;
};

namespace detail {

// out = x·Wᵀ (+ b) with the work split over threads: by rows of x when there are enough of
// them, otherwise by output features, so one-token decode steps use every thread too. Each
// thread runs one large product on its share, which Eigen does well.
inline void project(const Eigen::Ref<const RowMatrix>& x, const RowMatrix& w, const Eigen::VectorXf& bias,
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

}  // namespace detail

template <class Variant>
class Attention {
 public:
  // Validates the config (and that its kv_groups suit the variant); weights start at zero.
  explicit Attention(const LayerConfig& config) : config_(config) {
    config_.validate();
    Variant::check(config_);
    for (Projection p : {Projection::q, Projection::k, Projection::v, Projection::o}) {
      weight_ref(p).setZero(out_features(p), in_features(p));
      if (config_.bias) bias_ref(p).setZero(out_features(p));
    }
  }

  const LayerConfig& config() const noexcept { return config_; }
  static constexpr const char* variant_name() noexcept { return Variant::name; }

  std::int64_t out_features(Projection p) const {
    switch (p) {
      case Projection::q: return config_.heads * config_.head_dim;
      case Projection::k: return config_.kv_groups * config_.head_dim;
      case Projection::v: return config_.kv_groups * config_.v_dim();
      case Projection::o: return config_.model_dim;
    }
    return 0;
  }
  std::int64_t in_features(Projection p) const {
    return p == Projection::o ? config_.heads * config_.v_dim() : config_.model_dim;
  }

  const RowMatrix& weight(Projection p) const { return const_cast<Attention*>(this)->weight_ref(p); }
  // Empty when the config has no bias.
  const Eigen::VectorXf& bias(Projection p) const { return const_cast<Attention*>(this)->bias_ref(p); }

  // Sets one weight from a matrix of shape [out_features, in_features].
  void set_weight(Projection p, const Eigen::Ref<const RowMatrix>& w) {
    check_weight_shape(p, w.rows(), w.cols());
    weight_ref(p) = w;
  }

  // Sets one weight from a row-major [out_features, in_features] buffer of `size` floats.
  void set_weight(Projection p, const float* data, std::int64_t size) {
    check_buffer(projection_name(p), data, size, out_features(p) * in_features(p));
    weight_ref(p) = Eigen::Map<const RowMatrix>(data, out_features(p), in_features(p));
  }

  // Sets all four weights, checking every shape before changing any.
  void set_weights(const Eigen::Ref<const RowMatrix>& wq, const Eigen::Ref<const RowMatrix>& wk,
                   const Eigen::Ref<const RowMatrix>& wv, const Eigen::Ref<const RowMatrix>& wo) {
    check_weight_shape(Projection::q, wq.rows(), wq.cols());
    check_weight_shape(Projection::k, wk.rows(), wk.cols());
    check_weight_shape(Projection::v, wv.rows(), wv.cols());
    check_weight_shape(Projection::o, wo.rows(), wo.cols());
    wq_ = wq;
    wk_ = wk;
    wv_ = wv;
    wo_ = wo;
  }

  void set_bias(Projection p, const Eigen::Ref<const Eigen::VectorXf>& b) {
    set_bias(p, b.data(), b.size());
  }
  void set_bias(Projection p, const float* data, std::int64_t size) {
    detail::require(config_.bias, projection_name(p),
                    " bias: the layer was configured without biases (config.bias = false)");
    check_buffer(projection_name(p), data, size, out_features(p));
    bias_ref(p) = Eigen::Map<const Eigen::VectorXf>(data, size);
  }

  // Fills weights and biases as nn.Linear's default initialisation does: uniform in
  // [-1/sqrt(in_features), 1/sqrt(in_features)]; the same seed gives the same layer everywhere.
  void init_random(std::uint64_t seed) {
    std::mt19937_64 generator(seed);
    const auto uniform = [&generator](float bound) {
      const float unit = static_cast<float>(generator() >> 40) * 0x1p-24f;  // [0, 1)
      return (2.0f * unit - 1.0f) * bound;
    };
    for (Projection p : {Projection::q, Projection::k, Projection::v, Projection::o}) {
      const float bound = 1.0f / std::sqrt(static_cast<float>(in_features(p)));
      for (float& x : weight_ref(p).template reshaped<Eigen::RowMajor>()) x = uniform(bound);
      for (float& x : bias_ref(p)) x = uniform(bound);
    }
  }

  // y = Attention(x)·Woᵀ + bo for x of shape [batch·tokens, model_dim]; see ForwardOptions.
  RowMatrix forward(const Eigen::Ref<const RowMatrix>& x, const ForwardOptions& options = {}) {
    RowMatrix y;
    forward(x, y, options);
    return y;
  }

  // As above, writing into y (resized to [x.rows(), model_dim] if needed), so that repeated
  // calls of one shape allocate nothing.
  void forward(const Eigen::Ref<const RowMatrix>& x, RowMatrix& y,
               const ForwardOptions& options = {}) {
    using detail::require;
    require(x.cols() == config_.model_dim, "x.cols (", x.cols(), ") must equal model_dim (",
            config_.model_dim, ")");
    require(options.batch > 0, "batch (", options.batch, ") must be positive");
    require(x.rows() > 0 && x.rows() % options.batch == 0, "x.rows (", x.rows(),
            ") must be a positive multiple of batch (", options.batch, ")");
    require(options.threads >= 0, "threads (", options.threads, ") must not be negative");
    const std::int64_t batch = options.batch;
    const std::int64_t tokens = x.rows() / batch;
    const int threads = resolve_threads(options.threads);

    detail::project(x, wq_, bq_, q_, threads);
    detail::project(x, wk_, bk_, k_, threads);
    detail::project(x, wv_, bv_, v_, threads);
    attended_.resize(x.rows(), config_.heads * config_.v_dim());

    const std::int64_t d = config_.head_dim, dv = config_.v_dim();
    const TensorView<const float> q(q_.data(), q_.size(), batch, tokens, config_.heads, d);
    const TensorView<const float> k(k_.data(), k_.size(), batch, tokens, config_.kv_groups, d);
    const TensorView<const float> v(v_.data(), v_.size(), batch, tokens, config_.kv_groups, dv);
    const TensorView<float> o(attended_.data(), attended_.size(), batch, tokens, config_.heads, dv);
    KernelOptions kernel;
    kernel.scale = config_.scale;
    kernel.causal = config_.causal;
    kernel.threads = threads;
    if (options.kernel == KernelChoice::reference)
      reference_attention(q, k, v, o, kernel);
    else
      fused_attention(q, k, v, o, kernel);

    detail::project(attended_, wo_, bo_, y, threads);
  }

  // Learned parameters: the four weights and, when configured, their biases.
  std::int64_t parameter_count() const {
    std::int64_t count = 0;
    for (Projection p : {Projection::q, Projection::k, Projection::v, Projection::o})
      count += out_features(p) * in_features(p) + (config_.bias ? out_features(p) : 0);
    return count;
  }

  // Bytes of K and V a cache keeps per token of context, for elements of the given size.
  std::int64_t kv_cache_bytes_per_token(std::int64_t bytes_per_element = sizeof(float)) const {
    return config_.kv_groups * (config_.head_dim + config_.v_dim()) * bytes_per_element;
  }

 private:
  RowMatrix& weight_ref(Projection p) {
    switch (p) {
      case Projection::q: return wq_;
      case Projection::k: return wk_;
      case Projection::v: return wv_;
      case Projection::o: break;
    }
    return wo_;
  }
  Eigen::VectorXf& bias_ref(Projection p) {
    switch (p) {
      case Projection::q: return bq_;
      case Projection::k: return bk_;
      case Projection::v: return bv_;
      case Projection::o: break;
    }
    return bo_;
  }

  void check_weight_shape(Projection p, std::int64_t rows, std::int64_t cols) const {
    detail::require(rows == out_features(p) && cols == in_features(p), projection_name(p),
                    " shape [", rows, ", ", cols, "] must be [out_features, in_features] = [",
                    out_features(p), ", ", in_features(p), "]");
  }
  static void check_buffer(const char* name, const float* data, std::int64_t size,
                           std::int64_t expected) {
    detail::require(data != nullptr, name, ": data is null");
    detail::require(size == expected, name, ": buffer size (", size, ") must be ", expected);
  }

  LayerConfig config_;
  RowMatrix wq_, wk_, wv_, wo_;
  Eigen::VectorXf bq_, bk_, bv_, bo_;
  // Workspaces reused across calls: the projections of x and the attended heads.
  RowMatrix q_, k_, v_, attended_;
};

using MHA = Attention<variant::MultiHead>;
using GQA = Attention<variant::GroupedQuery>;
using MQA = Attention<variant::MultiQuery>;

}  // namespace MULTIHEAD_ISA_NAMESPACE
}  // namespace multihead
