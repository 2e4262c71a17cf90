// Ragged batches: sequences of different lengths packed one after another in one call, as
// FlashAttention's varlen API takes them. Sequence i owns tokens [cu[i], cu[i + 1]) of the packed
// views (cumulative sequence offsets, cu[0] = 0, cu[n] = the total), so nothing is padded and no
// work is spent on padding. (Padded batches instead take a key-padding mask: KernelOptions::
// boolean_mask of shape [batch, 1, 1, kv_len].)
#pragma once

#include <algorithm>
#include <cstdint>

#include "decode.hpp"
#include "fused.hpp"
#include "kv_source.hpp"

namespace multihead {
inline namespace MULTIHEAD_ISA_NAMESPACE {
namespace detail {

// Throws unless cu holds `count` + 1 offsets (count = -1: any count of at least one sequence)
// from 0, never decreasing, up to `total`; returns the count. Index: int64 or int32.
template <class Index>
std::int64_t check_offsets(Span<const Index> cu, std::int64_t total, const char* name,
                           std::int64_t count = -1) {
  require(cu.data != nullptr, name, ": data is null (size ", cu.size, ")");
  require(cu.size >= 2, name, ": need at least 2 offsets (one sequence), got ", cu.size);
  if (count >= 0)
    require(cu.size == count + 1, name, ": ", cu.size, " offsets for ", count,
            " sequences (need sequences + 1)");
  require(cu.data[0] == 0, name, "[0] (", cu.data[0], ") must be 0");
  for (std::int64_t i = 1; i < cu.size; ++i)
    require(cu.data[i] >= cu.data[i - 1], name, "[", i, "] (", cu.data[i], ") is below ", name,
            "[", i - 1, "] (", cu.data[i - 1], ")");
  require(cu.data[cu.size - 1] == total, name, ": the last offset (", cu.data[cu.size - 1],
          ") must equal the packed tokens (", total, ")");
  return cu.size - 1;
}

inline void check_no_masks(const KernelOptions& options) {
  require(options.additive_mask.empty() && options.boolean_mask.empty(),
          "additive_mask / boolean_mask: not supported with packed sequences (their [batch, "
          "heads, q_len, kv_len] has no per-sequence meaning); use a custom modifier");
}

}  // namespace detail

// Prefill over packed sequences: q [1, total_q, heads, head_dim], k [1, total_k, kv_groups,
// head_dim], v [1, total_k, kv_groups, value_dim], o [1, total_q, heads, value_dim]; sequence i
// is query tokens [cu_seqlens_q[i], cu_seqlens_q[i + 1]) over key tokens [cu_seqlens_k[i],
// cu_seqlens_k[i + 1]), with the options' modifiers per sequence (causal aligned within each;
// a custom modifier's ScoreSite::batch is the sequence index and query/key count from the
// sequence's start). lse, when wanted: [heads, total_q]. Masks are rejected (see above). Every
// argument is checked before anything is written.
// q, k, v and o of float, bf16 or fp16 as fused_attention takes them (fused.hpp).
template <class Q, class K, class V, class O>
void fused_attention_varlen(const TensorView<Q>& q, const TensorView<K>& k,
                            const TensorView<V>& v, const TensorView<O>& o,
                            Span<const std::int64_t> cu_seqlens_q,
                            Span<const std::int64_t> cu_seqlens_k,
                            const KernelOptions& options = {}, LseOutput lse = {}) {
  static_assert(is_activation_type_v<Q> && is_activation_type_v<K> && is_activation_type_v<O>,
                "fused_attention_varlen: q, k, v and o must be float, bf16 or fp16");
  static_assert(std::is_same_v<std::remove_const_t<K>, std::remove_const_t<V>>,
                "fused_attention_varlen: k and v must have the same element type");
  static_assert(!std::is_const_v<O>, "fused_attention_varlen: o must be writable");
  detail::check_no_masks(options);
  const auto qc = detail::const_view(q);
  const auto kc = detail::const_view(k), vc = detail::const_view(v);
  const KernelShape shape = check_kernel_args(qc, kc, vc, o, lse, options);
  detail::require(shape.batch == 1, "packed views must have batch 1, got ", shape.batch);
  const std::int64_t n = detail::check_offsets(cu_seqlens_q, shape.q_len, "cu_seqlens_q");
  detail::check_offsets(cu_seqlens_k, shape.kv_len, "cu_seqlens_k", n);
  detail::fused_call(qc, kc, vc, o, options, lse, shape, cu_seqlens_q, cu_seqlens_k, n);
}

// Decoding over packed caches: q [n, q_len, heads, head_dim] (the same few new tokens for each
// of n sequences), k [1, total, kv_groups, head_dim] and v [1, total, kv_groups, value_dim] of
// float, bf16 or fp16, sequence b owning tokens [cu_seqlens_k[b], cu_seqlens_k[b + 1]) (with
// causal masking its queries are its last q_len tokens); o [n, q_len, heads, value_dim], lse
// [n, heads, q_len]. An empty sequence gives output 0 and log-sum-exp −inf.
template <class Storage, class Q, class O>
void decode_attention_varlen(const TensorView<Q>& q, const TensorView<const Storage>& k,
                             const TensorView<const Storage>& v,
                             Span<const std::int64_t> cu_seqlens_k, const TensorView<O>& o,
                             const KernelOptions& options = {}, LseOutput lse = {}) {
  static_assert(is_storage_type_v<Storage>, "decode_attention_varlen: K/V must be float, bf16 or fp16");
  detail::check_activation_types<Q, O>();
  using detail::require;
  detail::check_no_masks(options);
  k.validate("k");
  v.validate("v");
  require(k.batch() == 1 && v.batch() == 1, "packed k and v must have batch 1, got ", k.batch(),
          " and ", v.batch());
  require(k.tokens() == v.tokens() && k.heads() == v.heads(), "k [", k.tokens(), " tokens, ",
          k.heads(), " heads] and v [", v.tokens(), ", ", v.heads(), "] differ");
  q.validate("q");
  const std::int64_t n = detail::check_offsets(cu_seqlens_k, k.tokens(), "cu_seqlens_k", q.batch());
  detail::KvExtents extents = detail::kv_extents(k, v);
  extents.batch = n;
  extents.kv_len = 0;  // the longest sequence
  for (std::int64_t b = 0; b < n; ++b)
    extents.kv_len = std::max(extents.kv_len, cu_seqlens_k.data[b + 1] - cu_seqlens_k.data[b]);
  const KernelShape shape = check_cache_call_args(detail::const_view(q), o, lse, options, extents);
  detail::require_apart(detail::byte_range(o, "o"),
                        {detail::byte_range(k, "k"), detail::byte_range(v, "v"),
                         detail::byte_range(cu_seqlens_k, "cu_seqlens_k")});
  detail::require_apart(detail::byte_range(lse, "lse"),
                        {detail::byte_range(k, "k"), detail::byte_range(v, "v"),
                         detail::byte_range(cu_seqlens_k, "cu_seqlens_k")});
  detail::decode(detail::const_view(q), o, lse, options, shape,
                 detail::packed_rows(k, v, cu_seqlens_k.data));
}

}  // namespace MULTIHEAD_ISA_NAMESPACE
}  // namespace multihead
