// The arguments every attention kernel takes, and the one check they all run at the door.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <optional>

#include "config.hpp"
#include "tensor_view.hpp"

namespace multihead {
inline namespace MULTIHEAD_ISA_NAMESPACE {

struct KernelOptions {
  // Multiplies Q·Kᵀ before the softmax; defaults to 1/sqrt(head_dim).
  std::optional<float> scale;

  // Causal masking, aligned to the bottom-right corner of the score matrix: query i may see key
  // j iff j <= i + (kv_len - q_len). With q_len == kv_len this is the usual lower triangle; with
  // q_len < kv_len the queries are the last q_len tokens of the sequence, so the last query sees
  // the whole cache (decoding, chunked prefill). With q_len > kv_len the first q_len - kv_len
  // queries see nothing: their output is 0 and their log-sum-exp is -inf. This is the
  // convention of FlashAttention ≥ 2.1 and of PyTorch's causal_lower_right.
  bool causal = false;

  // Threads to split the work over; 0 means all OpenMP threads (1 without OpenMP).
  int threads = 0;
};

// Where a kernel may write the log-sum-exp of each softmax row: [batch, heads, q_len]
// contiguous, natural logarithm of sum_j exp(scale · q·k_j). Empty means "not wanted".
using LseOutput = Span<float>;

namespace detail {

inline void check_lse_and_options(const KernelShape& shape, const LseOutput& lse,
                                  const KernelOptions& options) {
  if (lse.data != nullptr || lse.size != 0) {
    const std::int64_t rows = checked_product("lse size (batch * heads * q_len)", shape.batch,
                                              shape.heads, shape.q_len);
    require(lse.data != nullptr, "lse: data is null but size is ", lse.size);
    require(lse.size == rows, "lse: buffer size (", lse.size,
            ") does not match [batch, heads, q_len] = [", shape.batch, ", ", shape.heads, ", ",
            shape.q_len, "] (", rows, " elements)");
  }
  if (options.scale)
    require(std::isfinite(*options.scale), "scale (", *options.scale, ") must be finite");
  require(options.threads >= 0, "threads (", options.threads, ") must not be negative");
}

}  // namespace detail

// Checks every argument of a kernel call and returns its shape; throws std::invalid_argument
// naming the offending argument and values before anything is written. KV: the element type of
// K and V (float, or a cache's bf16 / fp16).
template <class KV>
KernelShape check_kernel_args(const TensorView<const float>& q, const TensorView<const KV>& k,
                              const TensorView<const KV>& v, const TensorView<float>& o,
                              const LseOutput& lse, const KernelOptions& options) {
  using detail::require;
  q.validate("q");
  k.validate("k");
  v.validate("v");
  o.validate("o");
  o.validate_no_overlap("o");
  require(k.batch() == q.batch() && v.batch() == q.batch() && o.batch() == q.batch(),
          "batch sizes differ: q (", q.batch(), "), k (", k.batch(), "), v (", v.batch(),
          "), o (", o.batch(), ")");
  require(k.tokens() == v.tokens(), "k.tokens (", k.tokens(), ") must equal v.tokens (",
          v.tokens(), ")");
  require(o.tokens() == q.tokens(), "o.tokens (", o.tokens(), ") must equal q.tokens (",
          q.tokens(), ")");
  require(k.heads() == v.heads(), "k.heads (", k.heads(), ") must equal v.heads (", v.heads(),
          ")");
  require(o.heads() == q.heads(), "o.heads (", o.heads(), ") must equal q.heads (", q.heads(),
          ")");
  require(k.dim() == q.dim(), "k.dim (", k.dim(), ") must equal q.dim (", q.dim(), ")");
  require(o.dim() == v.dim(), "o.dim (", o.dim(), ") must equal v.dim (", v.dim(), ")");

  KernelShape shape;
  shape.batch = q.batch();
  shape.q_len = q.tokens();
  shape.kv_len = k.tokens();
  shape.heads = q.heads();
  shape.kv_groups = k.heads();
  shape.head_dim = q.dim();
  shape.value_dim = v.dim();
  shape.validate();
  detail::check_lse_and_options(shape, lse, options);
  return shape;
}

// The checks of a call over a KV cache: q and o against the cache's extents (batch, kv_groups,
// head_dim, value_dim in `cache`; kv_len is the longest sequence and may be 0), lse and options.
// Returns the call's shape.
inline KernelShape check_cache_call_args(const TensorView<const float>& q,
                                         const TensorView<float>& o, const LseOutput& lse,
                                         const KernelOptions& options, KernelShape cache) {
  using detail::require;
  q.validate("q");
  o.validate("o");
  o.validate_no_overlap("o");
  require(q.batch() == cache.batch && o.batch() == cache.batch, "batch sizes differ: q (",
          q.batch(), "), cache (", cache.batch, "), o (", o.batch(), ")");
  require(o.tokens() == q.tokens(), "o.tokens (", o.tokens(), ") must equal q.tokens (",
          q.tokens(), ")");
  require(o.heads() == q.heads(), "o.heads (", o.heads(), ") must equal q.heads (", q.heads(),
          ")");
  require(q.dim() == cache.head_dim, "q.dim (", q.dim(), ") must equal the cache's head_dim (",
          cache.head_dim, ")");
  require(o.dim() == cache.value_dim, "o.dim (", o.dim(), ") must equal the cache's value_dim (",
          cache.value_dim, ")");
  KernelShape shape = cache;
  shape.q_len = q.tokens();
  shape.heads = q.heads();
  shape.kv_len = std::max<std::int64_t>(cache.kv_len, 1);  // an empty cache is valid
  shape.validate();
  shape.kv_len = cache.kv_len;
  detail::check_lse_and_options(shape, lse, options);
  return shape;
}

inline float resolved_scale(const KernelOptions& options, std::int64_t head_dim) {
  return options.scale ? *options.scale : 1.0f / std::sqrt(static_cast<float>(head_dim));
}

// The number of keys query row i sees: all of them, or with causal masking those up to the
// bottom-right aligned diagonal (clamped to [0, kv_len]).
inline std::int64_t visible_keys(const KernelShape& shape, bool causal, std::int64_t i) {
  if (!causal) return shape.kv_len;
  const std::int64_t last = i + (shape.kv_len - shape.q_len);  // last visible key index
  return last < 0 ? 0 : (last >= shape.kv_len ? shape.kv_len : last + 1);
}

}  // namespace MULTIHEAD_ISA_NAMESPACE
}  // namespace multihead
