// What the layers take and compute in bf16 and fp16.
//
//  - Weights: set_weight from bf16 or fp16 buffers (a checkpoint's tensors as they are stored).
//    They are widened to fp32 once, at load: the layer holds 4 bytes per parameter, twice a bf16
//    checkpoint, and its projections run as fp32 products (Eigen's), at the fp32 rate.
//  - Activations: forward over bf16 or fp16 inputs and outputs, widened into and narrowed out of
//    the layer's fp32 workspaces at the call's edges (a conversion per element, next to the
//    projections' 2·model_dim multiply-adds per element).
//  - Attention: Precision::bf16 rounds the projected (and rotated) Q, K and V to bf16 once and
//    runs the attention over fresh tokens on bf16 operands: on the bf16 dot product where the
//    CPU has one (fused.hpp), at about 1.7× the fp32 kernel's speed, with softmax and
//    accumulation in fp32. Steps over a cache read it in its own storage.
#pragma once

#include <cstdint>
#include <type_traits>
#include <vector>

#include "../attention/fused.hpp"
#include "../core/eigen.hpp"
#include "../simd/convert.hpp"
#include "../storage/half.hpp"

namespace multihead {
inline namespace MULTIHEAD_ISA_NAMESPACE {

// The precision of a layer's attention over fresh tokens (its projections always run in fp32).
enum class Precision { fp32, bf16 };

// bf16 or fp16: the element types layers take beside float.
template <class T>
constexpr bool is_half_type_v = std::is_same_v<T, bf16> || std::is_same_v<T, fp16>;

namespace detail {

// A rows × cols row-major buffer of size elements of bf16 or fp16, widened into `target`.
template <class T, class Matrix>
void widen_into(const T* data, std::int64_t size, std::int64_t rows, std::int64_t cols,
                Matrix& target) {
  static_assert(is_half_type_v<T>, "widen_into: bf16 or fp16 buffers");
  target.resize(rows, cols);
  convert(data, target.data(), size);
}

// The rows of a bf16 / fp16 layer call: x and y of one size, a multiple of model_dim.
template <class T>
std::int64_t check_half_rows(Span<const T> x, Span<T> y, std::int64_t model_dim) {
  require(x.data != nullptr && x.size > 0, "x: data is null or empty (size ", x.size, ")");
  require(x.size % model_dim == 0, "x: size (", x.size, ") must be a multiple of model_dim (",
          model_dim, ")");
  require(y.data != nullptr && y.size == x.size, "y: size (", y.size, ") must equal x's (",
          x.size, ")");
  return x.size / model_dim;
}

// The layers' attention on bf16 operands: Q, K and V rounded into buffers the layer keeps, so
// that calls of one shape allocate nothing.
class Bf16Attention {
 public:
  // x (any strides) rounded into a contiguous buffer of its shape.
  TensorView<const bf16> round(const TensorView<const float>& x, std::vector<bf16>& buffer) {
    const std::int64_t rows = x.batch() * x.tokens() * x.heads(), dim = x.dim();
    buffer.resize(static_cast<std::size_t>(rows * dim));
    bf16* out = buffer.data();
    for (std::int64_t b = 0; b < x.batch(); ++b)
      for (std::int64_t t = 0; t < x.tokens(); ++t)
        for (std::int64_t h = 0; h < x.heads(); ++h, out += dim) convert(x.row(b, t, h), out, dim);
    return {buffer.data(), rows * dim, x.batch(), x.tokens(), x.heads(), dim};
  }

  // fused_attention of q, k and v rounded to bf16, into the fp32 o.
  void fused(const TensorView<const float>& q, const TensorView<const float>& k,
             const TensorView<const float>& v, const TensorView<float>& o,
             const KernelOptions& options, LseOutput lse = {}) {
    fused_attention(round(q, q_), round(k, k_), round(v, v_), o, options, lse);
  }

 private:
  std::vector<bf16> q_, k_, v_;
};

}  // namespace detail
}  // namespace MULTIHEAD_ISA_NAMESPACE
}  // namespace multihead
