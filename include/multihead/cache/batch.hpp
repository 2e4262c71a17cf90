// batch_attention: one call for a continuous batch, as an inference server steps it. Each
// sequence brings its own number of new queries (0, 1 for a decode step, hundreds for a chunk of
// a prompt's prefill) over its own cached keys, the queries packed one sequence after another:
// q [1, total, heads, head_dim], sequence i's being tokens [cu_seqlens_q[i], cu_seqlens_q[i + 1])
// (FlashAttention's varlen vocabulary; FlashInfer's qo_indptr). Its cached K/V may be
//  - a paged pool the caller owns, with FlashAttention's block table or FlashInfer's indptr
//    arrays (paged_view.hpp),
//  - a PagedKvCache or PagedLatentCache and sequence ids,
//  - contiguous K/V [batch, capacity, kv_groups, dim] with a length per sequence
//    (FlashAttention's cache_seqlens), or slots of a KvCache or LatentCache.
// The rules are decode_attention's, per sequence: a sequence's queries are the last of its
// length tokens when causal (bottom-right; append them to the cache first), a sequence with no
// keys gives output 0 and log-sum-exp −inf, custom modifiers see ScoreSite::batch = the
// sequence and ScoreSite::query counted from its first new query. o is packed as q is, lse
// (when wanted) is [heads, total]. Masks are rejected: their [batch, heads, q_len, kv_len] has
// no meaning here (use a custom modifier).
//
// How it runs: every sequence's rows take the tile path their count suits (decode.hpp), decode
// steps and prefill chunks each on their own, in one pass per path; each pass splits its work
// across the threads by the keys its blocks see, a long sequence's cache split (split-KV) and a
// prefill chunk's rows spread over blocks. The result equals calls made one sequence at a time.
#pragma once

#include <algorithm>
#include <cstdint>
#include <initializer_list>
#include <type_traits>
#include <vector>

#include "../attention/decode.hpp"
#include "../attention/varlen.hpp"
#include "decode.hpp"

namespace multihead {
inline namespace MULTIHEAD_ISA_NAMESPACE {
namespace detail {

// Checks packed q and o, their offsets and lse against a source of these extents, and the
// outputs apart from every input (q, the options' buffers, and `inputs`: the source's memory
// and index arrays), then runs the call. Index: the element type of cu_seqlens_q, whose offsets
// are copied (into a per-thread list) as they are checked.
template <class Q, class O, class S, class Index>
void batch_source(const TensorView<const Q>& q, Span<const Index> cu_seqlens_q,
                  const KvRows<S>& source, const KvExtents& extents, const TensorView<O>& o,
                  const KernelOptions& options, LseOutput lse,
                  std::initializer_list<ByteRange> inputs) {
  check_no_masks(options);
  q.validate("q");
  o.validate("o");
  o.validate_no_overlap("o");
  require(q.batch() == 1 && o.batch() == 1, "packed q and o must have batch 1, got ", q.batch(),
          " and ", o.batch());
  require(o.tokens() == q.tokens(), "o.tokens (", o.tokens(), ") must equal q.tokens (",
          q.tokens(), ")");
  require(o.heads() == q.heads(), "o.heads (", o.heads(), ") must equal q.heads (", q.heads(),
          ")");
  require(q.dim() == extents.head_dim, "q.dim (", q.dim(), ") must equal the cache's head_dim (",
          extents.head_dim, ")");
  require(o.dim() == extents.value_dim, "o.dim (", o.dim(),
          ") must equal the cache's value_dim (", extents.value_dim, ")");
  check_offsets(cu_seqlens_q, q.tokens(), "cu_seqlens_q", extents.batch);
  KvExtents packed = extents;
  packed.batch = 1;
  KernelShape shape = make_shape(q, packed);  // q_len: the total; lse [heads, total]
  check_lse_and_options(shape, lse, options);
  check_output_memory(q, o, lse, options, {nullptr, 0, "k"}, {nullptr, 0, "v"});
  const ByteRange offsets_bytes = byte_range(cu_seqlens_q, "cu_seqlens_q");
  for (const ByteRange& output : {byte_range(o, "o"), byte_range(lse, "lse")}) {
    require_apart(output, inputs);
    require_apart(output, {offsets_bytes});
  }
  thread_local std::vector<std::int64_t> offsets;
  offsets.assign(cu_seqlens_q.data, cu_seqlens_q.data + cu_seqlens_q.size);
  shape.batch = extents.batch;
  decode(q, o, lse, options, shape, source, offsets.data());
}

// The caches whose sequences a call names by id: a paged cache's ids, a contiguous cache's slots.
template <class T>
constexpr bool names_sequences_v = is_contiguous_cache_v<T>;
template <class S>
constexpr bool names_sequences_v<PagedKvCache<S>> = true;
template <class S>
constexpr bool names_sequences_v<PagedLatentCache<S>> = true;

// The lengths of a contiguous call, checked against the views' capacity, as int64.
template <class Index>
std::int64_t check_lengths(Span<const Index> lengths, std::int64_t batch, std::int64_t capacity,
                           std::vector<std::int64_t>& out) {
  require(lengths.data != nullptr, "lengths: data is null (size ", lengths.size, ")");
  require(lengths.size == batch, "lengths: ", lengths.size, " for a batch of ", batch);
  out.clear();
  std::int64_t longest = 0;
  for (std::int64_t b = 0; b < batch; ++b) {
    require(lengths.data[b] >= 0 && lengths.data[b] <= capacity, "lengths[", b, "] (",
            lengths.data[b], ") must be in [0, ", capacity, "] (k.tokens)");
    out.push_back(lengths.data[b]);
    longest = std::max(longest, out.back());
  }
  return longest;
}

}  // namespace detail

// q [1, total, heads, head_dim] packed by cu_seqlens_q (int32 or int64, sequences.count() + 1
// offsets) over paged K/V in memory the caller owns: sequence b's new queries over its length
// tokens, read from its blocks. The pool and tables are checked as decode_attention checks them.
template <class Storage, class Index, class Q, class O, class QIndex>
void batch_attention(const TensorView<Q>& q, Span<const QIndex> cu_seqlens_q,
                     const PagedKvView<Storage>& pool, const PagedSequences<Index>& sequences,
                     const TensorView<O>& o, const KernelOptions& options = {},
                     LseOutput lse = {}) {
  static_assert(is_cache_storage_v<Storage>,
                "batch_attention: a pool's Storage must be float, bf16, fp16, q8 or q4");
  detail::check_activation_types<Q, O>();
  detail::check_pool(pool);
  thread_local std::vector<const Index*> tables;
  thread_local std::vector<std::int64_t> lengths;
  detail::KvExtents extents{sequences.count(), 0, pool.kv_groups, pool.head_dim, pool.value_dim};
  extents.kv_len = detail::check_paged_sequences(sequences, pool.num_blocks, pool.block_size,
                                                 tables, lengths);
  detail::batch_source(detail::const_view(q), cu_seqlens_q,
                       detail::pool_rows(pool, tables.data(), lengths.data()), extents, o,
                       options, lse,
                       {detail::pool_bytes(pool, false), detail::pool_bytes(pool, true),
                        detail::byte_range(sequences.ids(), "block ids"),
                        detail::byte_range(sequences.indptr(), "indptr"),
                        detail::byte_range(sequences.lengths(), "lengths")});
}

// Over sequences of a PagedKvCache, or slots of a KvCache: sequence b is the cache's sequence
// ids.data[b], each at its own length. (As decode_attention, over a PagedLatentCache or a
// LatentCache's slots with absorbed MLA queries and o [1, total, heads, latent_dim]: mind the
// scale.)
template <class Cache, class Q, class O, class QIndex,
          class = std::enable_if_t<detail::names_sequences_v<Cache>>>
void batch_attention(const TensorView<Q>& q, Span<const QIndex> cu_seqlens_q, const Cache& cache,
                     Span<const std::int64_t> ids, const TensorView<O>& o,
                     const KernelOptions& options = {}, LseOutput lse = {}) {
  detail::check_activation_types<Q, O>();
  thread_local std::vector<const std::int64_t*> tables;
  thread_local std::vector<std::int64_t> lengths;
  const detail::KvExtents extents = detail::paged_cache_sequences(cache, ids, tables, lengths);
  detail::batch_source(detail::const_view(q), cu_seqlens_q,
                       detail::pool_rows(cache.view(), tables.data(), lengths.data()), extents,
                       o, options, lse, {});
}

// Over contiguous K/V: k [batch, capacity, kv_groups, head_dim] and v [batch, capacity,
// kv_groups, value_dim] of float, bf16 or fp16, sequence b holding lengths[b] ≤ capacity tokens
// (int32 or int64; FlashAttention's cache_seqlens).
template <class Storage, class Index, class Q, class O, class QIndex>
void batch_attention(const TensorView<Q>& q, Span<const QIndex> cu_seqlens_q,
                     const TensorView<const Storage>& k, const TensorView<const Storage>& v,
                     Span<const Index> lengths, const TensorView<O>& o,
                     const KernelOptions& options = {}, LseOutput lse = {}) {
  static_assert(is_storage_type_v<Storage>, "batch_attention: K/V must be float, bf16 or fp16");
  detail::check_activation_types<Q, O>();
  k.validate("k");
  v.validate("v");
  detail::require(k.batch() == v.batch() && k.tokens() == v.tokens() && k.heads() == v.heads(),
                  "k [", k.batch(), ", ", k.tokens(), ", ", k.heads(), "] and v [", v.batch(),
                  ", ", v.tokens(), ", ", v.heads(), "] differ");
  thread_local std::vector<std::int64_t> used;
  detail::KvExtents extents = detail::kv_extents(k, v);
  extents.kv_len = detail::check_lengths(lengths, k.batch(), k.tokens(), used);
  detail::KvRows<Storage> rows = detail::view_rows(k, v);
  rows.lengths = used.data();
  detail::batch_source(detail::const_view(q), cu_seqlens_q, rows, extents, o, options, lse,
                       {detail::byte_range(k, "k"), detail::byte_range(v, "v"),
                        detail::byte_range(lengths, "lengths")});
}

}  // namespace MULTIHEAD_ISA_NAMESPACE
}  // namespace multihead
