// The arguments every attention kernel takes, and the one check they all run at the door.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <optional>
#include <type_traits>
#include <vector>

#include "../core/executor.hpp"
#include "../core/tensor_view.hpp"
#include "modifiers.hpp"
#include "shape.hpp"

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

  // Where the queries sit among the keys, for the causal mask, the window and ALiBi: the last
  // q_len keys (bottom-right, above) or the first (top-left: query i sees keys j <= i).
  CausalAlignment alignment = CausalAlignment::bottom_right;

  // Sliding window: query i sees keys from i + offset − window_left to i + offset +
  // window_right (offset from `alignment`); −1 leaves that side unbounded. Mistral's window W
  // is causal with window_left = W − 1. Tiles wholly outside every row's window are skipped.
  std::int64_t window_left = -1, window_right = -1;

  // Logit soft-cap: cap · tanh(s / cap) before the softmax (Gemma 2: 50); 0 is off.
  float softcap = 0.0f;

  // ALiBi: s −= slope[head] · |i + offset − j|, one slope per query head (alibi_slopes() gives
  // the standard ones); size 0 is off.
  Span<const float> alibi_slopes;

  // Attention sinks: one logit per query head that joins each softmax's denominator and adds no
  // value (gpt-oss); size 0 is off. −inf for a head means no sink.
  Span<const float> sinks;

  // Masks over [batch, heads, q_len, kv_len], broadcast where given with extent 1 (modifiers.hpp):
  // added to the scores, or hiding a key where false.
  MaskView<float> additive_mask;
  MaskView<bool> boolean_mask;

  // A custom modifier's hooks (modifiers.hpp), applied after the modifiers above.
  ModifierRef modifier;

  // Threads to split the work over; 0 means all of the executor's. At most the processors (or
  // the executor's workers, if more) and the call's units of work run (core/parallel.hpp's
  // resolve_threads): more would only wait.
  int threads = 0;
  // Whose threads run the call (core/executor.hpp): null for the default, OpenMP's when compiled
  // with it, else a pool of std::threads. Kept by the caller for the call's duration.
  Executor* executor = nullptr;
};

// Where a kernel may write the log-sum-exp of each softmax row: [batch, heads, q_len]
// contiguous, natural logarithm of sum_j exp(scale · q·k_j). Empty means "not wanted".
//
// Memory (checked by every kernel): o and lse share no byte with an input or with each other,
// except that o may be q itself, the same view (in place). Inputs may alias one another.
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
  check_window(options.window_left, options.window_right);
  check_softcap(options.softcap);
  check_per_head(options.alibi_slopes.data, options.alibi_slopes.size, shape.heads, "alibi_slopes",
                 false);
  check_per_head(options.sinks.data, options.sinks.size, shape.heads, "sinks", true);
  const auto check_mask = [&](const auto& mask, const char* name) {
    if (mask.empty()) return;
    require(mask.data != nullptr, name, ": data is null but size is ", mask.size);
    const std::int64_t elements = checked_product(name, mask.batch, mask.heads, mask.q_len,
                                                  mask.kv_len);
    require(mask.size == elements, name, ": size (", mask.size, ") does not match its shape [",
            mask.batch, ", ", mask.heads, ", ", mask.q_len, ", ", mask.kv_len, "] (", elements,
            " elements)");
    require((mask.batch == 1 || mask.batch == shape.batch) &&
                (mask.heads == 1 || mask.heads == shape.heads) &&
                (mask.q_len == 1 || mask.q_len == shape.q_len) && mask.kv_len == shape.kv_len,
            name, ": shape [", mask.batch, ", ", mask.heads, ", ", mask.q_len, ", ", mask.kv_len,
            "] does not broadcast to [batch, heads, q_len, kv_len] = [", shape.batch, ", ",
            shape.heads, ", ", shape.q_len, ", ", shape.kv_len, "]");
  };
  check_mask(options.additive_mask, "additive_mask");
  check_mask(options.boolean_mask, "boolean_mask");
}

template <class T>
ByteRange byte_range(const MaskView<T>& mask, const char* name) {
  return {mask.data,
          mask.data == nullptr ? 0 : checked_mul(mask.size, std::int64_t(sizeof(T)), name), name};
}

// The outputs o and lse apart from every input (q, the options' masks, slopes and sinks, and
// `k`, `v`: the call's K/V where it has views) and from each other. o may also be q itself, the
// same view (in place): every kernel reads a block's query rows before it writes their
// outputs, and no other block reads them.
template <class Q, class O>
void check_output_memory(const TensorView<const Q>& q, const TensorView<O>& o,
                         const LseOutput& lse, const KernelOptions& options, const ByteRange& k,
                         const ByteRange& v) {
  const bool in_place = std::is_same_v<Q, O> &&
                        static_cast<const void*>(o.data()) == q.data() && o.dim() == q.dim() &&
                        o.batch_stride() == q.batch_stride() &&
                        o.token_stride() == q.token_stride() &&
                        o.head_stride() == q.head_stride();
  const ByteRange additive = byte_range(options.additive_mask, "additive_mask");
  const ByteRange keep = byte_range(options.boolean_mask, "boolean_mask");
  const ByteRange slopes = byte_range(options.alibi_slopes, "alibi_slopes");
  const ByteRange sinks = byte_range(options.sinks, "sinks");
  const ByteRange q_bytes = byte_range(q, "q"), o_bytes = byte_range(o, "o");
  require_apart(o_bytes, {in_place ? ByteRange{nullptr, 0, "q"} : q_bytes, k, v, additive, keep,
                          slopes, sinks});
  require_apart(byte_range(lse, "lse"), {q_bytes, k, v, o_bytes, additive, keep, slopes, sinks});
}

}  // namespace detail

// Checks every argument of a kernel call and returns its shape; throws std::invalid_argument
// naming the offending argument and values before anything is written. KV: the element type of
// K and V; Q and O: the element types of the queries and outputs (each float, bf16 or fp16).
template <class KV, class Q, class O>  // KV first: check_kernel_args<KV>(…) reads as before
KernelShape check_kernel_args(const TensorView<const Q>& q, const TensorView<const KV>& k,
                              const TensorView<const KV>& v, const TensorView<O>& o,
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

  detail::require_positive(k.tokens(), "kv_len");
  const KernelShape shape = detail::make_shape(q, detail::kv_extents(k, v));
  detail::check_lse_and_options(shape, lse, options);
  detail::check_output_memory(q, o, lse, options, detail::byte_range(k, "k"),
                              detail::byte_range(v, "v"));
  return shape;
}

// The checks of a call over a K/V source (a cache, packed or paged sequences): q and o against
// its extents (kv_len, the longest sequence, may be 0), lse and options. Returns the call's shape.
template <class Q, class O>
KernelShape check_cache_call_args(const TensorView<const Q>& q, const TensorView<O>& o,
                                  const LseOutput& lse, const KernelOptions& options,
                                  const detail::KvExtents& source) {
  using detail::require;
  q.validate("q");
  o.validate("o");
  o.validate_no_overlap("o");
  require(q.batch() == source.batch && o.batch() == source.batch, "batch sizes differ: q (",
          q.batch(), "), cache (", source.batch, "), o (", o.batch(), ")");
  require(o.tokens() == q.tokens(), "o.tokens (", o.tokens(), ") must equal q.tokens (",
          q.tokens(), ")");
  require(o.heads() == q.heads(), "o.heads (", o.heads(), ") must equal q.heads (", q.heads(),
          ")");
  require(q.dim() == source.head_dim, "q.dim (", q.dim(), ") must equal the cache's head_dim (",
          source.head_dim, ")");
  require(o.dim() == source.value_dim, "o.dim (", o.dim(), ") must equal the cache's value_dim (",
          source.value_dim, ")");
  const KernelShape shape = detail::make_shape(q, source);
  detail::check_lse_and_options(shape, lse, options);
  detail::check_output_memory(q, o, lse, options, {nullptr, 0, "k"}, {nullptr, 0, "v"});
  return shape;
}

// The 0.2 signature, a cache's extents as a KernelShape (its q_len and heads ignored).
[[deprecated("pass the source's extents: detail::KvExtents")]] inline KernelShape
check_cache_call_args(const TensorView<const float>& q, const TensorView<float>& o,
                      const LseOutput& lse, const KernelOptions& options, const KernelShape& cache) {
  return check_cache_call_args(
      q, o, lse, options,
      detail::KvExtents{cache.batch, cache.kv_len, cache.kv_groups, cache.head_dim,
                        cache.value_dim});
}

inline float resolved_scale(const KernelOptions& options, std::int64_t head_dim) {
  return options.scale ? *options.scale : 1.0f / std::sqrt(static_cast<float>(head_dim));
}

// The one mapping from a layer's modifiers (ScoreModifiers, which its config embeds) to a kernel
// call: `alibi_slopes` are the layer's standard slopes when modifiers.alibi (kept by the layer,
// as the call refers to them), scale and threads the call's. Every layer builds its calls here.
inline KernelOptions kernel_options(const ScoreModifiers& modifiers,
                                    const std::vector<float>& alibi_slopes,
                                    std::optional<float> scale, int threads) {
  KernelOptions options;
  options.scale = scale;
  options.causal = modifiers.causal;
  options.window_left = modifiers.window_left;
  options.window_right = modifiers.window_right;
  options.softcap = modifiers.softcap;
  if (modifiers.alibi)
    options.alibi_slopes = {alibi_slopes.data(), std::int64_t(alibi_slopes.size())};
  options.sinks = {modifiers.sinks.data(), std::int64_t(modifiers.sinks.size())};
  options.threads = threads;
  return options;
}

}  // namespace MULTIHEAD_ISA_NAMESPACE
}  // namespace multihead
