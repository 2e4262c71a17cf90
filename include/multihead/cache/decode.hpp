// decode_attention over every cache: each cache hands the kernel its rows through the KV-source
// contract (kv_rows(), attention/kv_source.hpp), so the kernel never names a cache class and a
// new cache adds an overload here, nothing below.
#pragma once

#include <algorithm>
#include <cstdint>
#include <initializer_list>
#include <vector>

#include "../attention/decode.hpp"
#include "../attention/options.hpp"
#include "kv_cache.hpp"
#include "latent_cache.hpp"
#include "paged_kv_cache.hpp"
#include "paged_latent_cache.hpp"
#include "paged_view.hpp"

namespace multihead {
inline namespace MULTIHEAD_ISA_NAMESPACE {
namespace detail {

// The contiguous caches (KvCache, LatentCache: a slot of `capacity` tokens per sequence), as
// opposed to the paged ones (blocks from a shared pool).
template <class Cache>
constexpr bool is_contiguous_cache_v = false;
template <class S>
constexpr bool is_contiguous_cache_v<KvCache<S>> = true;
template <class S>
constexpr bool is_contiguous_cache_v<LatentCache<S>> = true;

// Where a sequence's block ids are: a paged cache's table, or for a contiguous cache's slot b
// (block b of its view()) the id itself.
template <class Cache>
const std::int64_t* sequence_blocks(const Cache& cache, const std::int64_t& id) {
  if constexpr (is_contiguous_cache_v<Cache>)
    return &id;
  else
    return cache.block_table(id).data();
}

// Sequences of a cache, by id (a paged cache's ids, a KvCache's slots): their block tables and
// lengths gathered into per-call lists (no allocation once the batch size has been seen);
// returns the source's extents. Throws on an unknown or released id.
template <class Cache>
KvExtents paged_cache_sequences(const Cache& cache, Span<const std::int64_t> sequences,
                                std::vector<const std::int64_t*>& tables,
                                std::vector<std::int64_t>& lengths) {
  require(sequences.data != nullptr, "sequences: data is null (size ", sequences.size, ")");
  require(sequences.size > 0, "sequences: need at least one sequence id (size ", sequences.size,
          ")");
  tables.clear();
  lengths.clear();
  KvExtents extents = cache.kv_extents(sequences.size);
  for (std::int64_t b = 0; b < sequences.size; ++b) {
    lengths.push_back(cache.length(sequences.data[b]));  // throws on a bad id
    tables.push_back(sequence_blocks(cache, sequences.data[b]));
    extents.kv_len = std::max(extents.kv_len, lengths.back());
  }
  return extents;
}

// A call over sequences of a paged cache.
template <class Q, class Cache, class O>
void decode_paged(const TensorView<const Q>& q, const Cache& cache,
                  Span<const std::int64_t> sequences, const TensorView<O>& o,
                  const KernelOptions& options, LseOutput lse) {
  thread_local std::vector<const std::int64_t*> tables;
  thread_local std::vector<std::int64_t> lengths;
  const KvExtents extents = paged_cache_sequences(cache, sequences, tables, lengths);
  decode_source(q, pool_rows(cache.view(), tables.data(), lengths.data()), extents, o, options,
                lse);
}

// A call over a pool the caller owns: the pool and the sequences' tables checked, the outputs
// apart from both, before anything is read.
template <class Q, class S, class Index, class O>
void decode_pool(const TensorView<const Q>& q, const PagedKvView<S>& pool,
                 const PagedSequences<Index>& sequences, const TensorView<O>& o,
                 const KernelOptions& options, LseOutput lse) {
  check_pool(pool);
  thread_local std::vector<const Index*> tables;
  thread_local std::vector<std::int64_t> lengths;
  KvExtents extents{sequences.count(), 0, pool.kv_groups, pool.head_dim, pool.value_dim};
  extents.kv_len =
      check_paged_sequences(sequences, pool.num_blocks, pool.block_size, tables, lengths);
  const KernelShape shape = check_cache_call_args(q, o, lse, options, extents);
  const std::initializer_list<ByteRange> inputs = {
      pool_bytes(pool, false), pool_bytes(pool, true),
      byte_range(sequences.ids(), "block ids"), byte_range(sequences.indptr(), "indptr"),
      byte_range(sequences.lengths(), "lengths")};
  require_apart(byte_range(o, "o"), inputs);
  require_apart(byte_range(lse, "lse"), inputs);
  decode(q, o, lse, options, shape, pool_rows(pool, tables.data(), lengths.data()));
}

}  // namespace detail

// Every overload takes q and o of float, bf16 or fp16, as decode_attention over views does.
//
// q [cache.batch(), q_len, heads, head_dim] over the cache's length() tokens. With causal
// masking the queries are the cache's last q_len tokens (append them first). An empty cache
// gives output 0 and log-sum-exp −inf.
template <class Storage, class Q, class O>
void decode_attention(const TensorView<Q>& q, const KvCache<Storage>& cache,
                      const TensorView<O>& o, const KernelOptions& options = {},
                      LseOutput lse = {}) {
  detail::check_activation_types<Q, O>();
  detail::decode_source(detail::const_view(q), cache.kv_rows(), cache.kv_extents(), o, options,
                        lse);
}

// MLA decoding: q [cache.batch(), q_len, heads, latent_dim + rope_dim] — the absorbed queries,
// W_UK folded into their first latent_dim elements — over the cache's rows as MQA, into o
// [cache.batch(), q_len, heads, latent_dim], still to be multiplied by W_UV. The default scale,
// 1/sqrt(latent_dim + rope_dim), is not MLA's: pass options.scale = 1/sqrt(nope_dim + rope_dim).
// Causal masking and an empty cache as for a KvCache.
template <class Storage, class Q, class O>
void decode_attention(const TensorView<Q>& q, const LatentCache<Storage>& cache,
                      const TensorView<O>& o, const KernelOptions& options = {},
                      LseOutput lse = {}) {
  detail::check_activation_types<Q, O>();
  detail::decode_source(detail::const_view(q), cache.kv_rows(), cache.kv_extents(), o, options,
                        lse);
}

// q [sequences.size, q_len, heads, head_dim]: batch entry b attends over the tokens of paged
// sequence sequences.data[b], each with its own length (bottom-right causal per sequence;
// an empty sequence gives output 0 and log-sum-exp −inf). Throws std::invalid_argument, before
// writing anything, on an unknown or released id or a shape that differs from the cache's.
template <class Storage, class Q, class O>
void decode_attention(const TensorView<Q>& q, const PagedKvCache<Storage>& cache,
                      Span<const std::int64_t> sequences, const TensorView<O>& o,
                      const KernelOptions& options = {}, LseOutput lse = {}) {
  detail::check_activation_types<Q, O>();
  detail::decode_paged(detail::const_view(q), cache, sequences, o, options, lse);
}

// q [sequences.count(), q_len, heads, head_dim] over paged K/V in memory the caller owns
// (paged_view.hpp): batch entry b attends over sequence b's length tokens, read from its blocks
// (bottom-right causal per sequence; an empty sequence gives output 0 and log-sum-exp −inf).
// A latent pool (v = k) decodes MLA as a PagedLatentCache does. Throws std::invalid_argument
// before reading anything on a pool whose rows overlap, an id outside [0, num_blocks), a length
// beyond its table, or an output over the pool or the tables.
template <class Storage, class Index, class Q, class O>
void decode_attention(const TensorView<Q>& q, const PagedKvView<Storage>& pool,
                      const PagedSequences<Index>& sequences, const TensorView<O>& o,
                      const KernelOptions& options = {}, LseOutput lse = {}) {
  static_assert(is_cache_storage_v<Storage>,
                "decode_attention: a pool's Storage must be float, bf16, fp16, q8 or q4");
  detail::check_activation_types<Q, O>();
  detail::decode_pool(detail::const_view(q), pool, sequences, o, options, lse);
}

// MLA decoding over paged sequences: q [sequences.size, q_len, heads, latent_dim + rope_dim],
// o [sequences.size, q_len, heads, latent_dim], as for a LatentCache (mind the scale); the
// sequences as for a PagedKvCache.
template <class Storage, class Q, class O>
void decode_attention(const TensorView<Q>& q, const PagedLatentCache<Storage>& cache,
                      Span<const std::int64_t> sequences, const TensorView<O>& o,
                      const KernelOptions& options = {}, LseOutput lse = {}) {
  detail::check_activation_types<Q, O>();
  detail::decode_paged(detail::const_view(q), cache, sequences, o, options, lse);
}

}  // namespace MULTIHEAD_ISA_NAMESPACE
}  // namespace multihead
