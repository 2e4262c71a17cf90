// Decoding: attention of one or a few new query tokens per sequence over a long KV cache.
//
// Decoding reads the whole cache for every token it produces, and does little arithmetic per
// byte, so what counts is reading each cached row once and keeping every core streaming:
//  - Group packing. As in the fused kernel, the query rows of one KV group (q_len positions ×
//    the heads that share the group's K/V head) are stacked into one block, so each cached K/V
//    row is read once for all of them: MQA's 32 heads share every row read.
//  - Units in address order. Work unit: one sequence × block of query rows × split of the
//    cache, every KV group inside, a tile of tokens at a time and the groups of a tile one
//    after another: a unit reads its part of the cache front to back. (Units of one group, each
//    reading 512 bytes in every 4 KiB, streamed D1 at 31 instead of 39 GB/s on two cores.)
//  - Split-KV. When batch alone would leave threads idle, a sequence's cache is split along its
//    length; each split leaves an online-softmax state (out, max, sum; state.hpp) per group and
//    the states of one block are merged, in split order, after all units ran (decode_split.hpp).
//  - Two tile paths (the contract: tile_path.hpp), by a sequence's rows. Few rows (MHA, small
//    GQA groups; rows ≤ W/2), or up to 2·W rows of wide heads (head dim ≥ 256: MLA's absorbed
//    576): rows stay row-major and Q·Kᵀ is vectorised along the head dim, one lane reduction per
//    score; P·V broadcasts each probability over a row of V. Many rows of narrow heads: the
//    fused kernel's transposed tiles (column_tiles.hpp; the row-major ones: row_tiles.hpp), with
//    as many row vectors as the block needs. In a mixed batch (packed queries, each sequence its
//    own count: cache/batch.hpp) each sequence takes its own path, a pass per path used.
//  - Storage. Rows are read through their codec (storage/codec.hpp): the row-major tiles read
//    float, bf16 and fp16 rows in place, widening as they load; the transposed tiles get bf16 /
//    fp16 rows widened a tile at a time into a per-thread buffer. Every product runs in fp32,
//    except bf16 queries over bf16 rows on the transposed tiles with AVX-512 BF16, which run on
//    the bf16 dot product as the fused kernel does (rows read in place, each run's P and V
//    paired; products.hpp).
//  - Sources. Every K/V layout reaches the kernel as a KvRows (kv_source.hpp): views here,
//    packed sequences in varlen.hpp, caches in cache/decode.hpp.
//  - Tiles of up to BC tokens (fewer when kv_groups is large, to stay in L2), gathered in a
//    paged cache from the runs of consecutive blocks: one softmax step per tile whatever the
//    block size. The next tile's rows are prefetched while the current one is computed, a few
//    lines per inner step or micro-tile (prefetch.hpp, tile_walk.hpp).
// Per-thread buffers and the split states are kept between calls (thread_local), so a decode
// step allocates nothing once the shapes have been seen.
//
// Results: the same scores, masks, modifiers (score_pass.hpp; a sink joins the split that holds
// a row's first keys) and accuracy as fused_attention. With several threads the
// split points depend on the thread count, so results may differ in the last bits between
// thread counts (never between runs with the same count).
#pragma once

#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "../core/compiled.hpp"
#include "../core/parallel.hpp"
#include "../storage/codec.hpp"
#include "blocking.hpp"
#include "column_tiles.hpp"
#include "decode_split.hpp"
#include "kv_source.hpp"
#include "options.hpp"
#include "row_tiles.hpp"
#include "score_pass.hpp"
#include "tile_path.hpp"

namespace multihead {
inline namespace MULTIHEAD_ISA_NAMESPACE {
namespace detail {

// The tile path a sequence's rows (its queries × group size) take: 0 for the row-major tiles,
// else the transposed tiles' row vectors per block: the fewest that hold the rows in blocks of
// equal size, at most Ops::NV.
template <class Ops, int D, int DV>
int tile_path(std::int64_t rows, std::int64_t head_dim) {
  constexpr int W = Ops::W, NV = Blocking<Ops>::NV;
  // Row-major tiles reduce each score across lanes once per head dim, which wide heads (MLA's
  // absorbed 576) make cheap, while the transposed tiles' Qᵀ and Oᵀ (dim × rows) would no
  // longer fit L1: measured on MLA's 16 × 576 / 512, 0.49 of FMA peak against 0.25.
  const bool wide = head_dim >= 256;
  if (rows <= W / 2 || (wide && rows <= RowTiles<Ops, D, DV>::kMaxRows)) return 0;
  const std::int64_t blocks = (rows + W * NV - 1) / (W * NV);
  return int((round_up(rows, blocks) / blocks + W - 1) / W);
}

// The transposed tiles with `vectors` row vectors per block, on the products Pr.
template <class Ops, int D, int DV, class Pr, class Source>
void run_column_vectors(const DecodeProblem& pr, const Source& source,
                        Span<const std::int64_t> entries, int vectors, int threads) {
  constexpr int W = Ops::W, NV = Blocking<Ops>::NV;
  if (vectors == 1)
    run_decode_blocks<ColumnTiles<Ops, D, DV, 1, Pr>>(pr, source, entries, W, threads);
  else if (vectors == 2 || NV == 2)
    run_decode_blocks<ColumnTiles<Ops, D, DV, 2, Pr>>(pr, source, entries, 2 * W, threads);
  else if constexpr (NV >= 3)
    run_decode_blocks<ColumnTiles<Ops, D, DV, 3, Pr>>(pr, source, entries, 3 * W, threads);
}

template <class Ops, int D, int DV, class Source>
void run_column_tiles(const DecodeProblem& pr, const Source& source,
                      Span<const std::int64_t> entries, int vectors, int threads) {
#if defined(MULTIHEAD_HAS_AVX512BF16)
  // bf16 queries over bf16 rows of an even head dim: the bf16 products (products.hpp).
  if constexpr (std::is_same_v<typename Source::storage_type, bf16>) {
    if (std::holds_alternative<TensorView<const bf16>>(pr.q) && pr.shape.head_dim % 2 == 0)
      return run_column_vectors<Ops, D, DV, Bf16PairProducts>(pr, source, entries, vectors,
                                                               threads);
  }
#endif
  run_column_vectors<Ops, D, DV, FloatProducts<Ops>>(pr, source, entries, vectors, threads);
}

// Each sequence's rows pick their path (tile_path); the sequences of one path run in one pass,
// so a mixed batch (decode steps beside prefill chunks) makes a pass per path it uses, and a
// uniform one a single pass. Sequences without queries are skipped.
template <class Ops, int D, int DV, class Source>
void run_decode_dims(const DecodeProblem& pr, const Source& source, int threads) {
  constexpr int NV = Blocking<Ops>::NV;
  thread_local std::vector<std::int64_t> by_path[NV + 1];  // kept, like the plan
  std::int64_t most_rows = 0;  // of the row-major pass: its block size
  for (auto& entries : by_path) entries.clear();
  for (std::int64_t b = 0; b < pr.shape.batch; ++b) {
    const std::int64_t rows = pr.queries(b) * pr.shape.group_size();
    if (rows == 0) continue;
    const int path = tile_path<Ops, D, DV>(rows, pr.shape.head_dim);
    by_path[path].push_back(b);
    if (path == 0) most_rows = std::max(most_rows, rows);
  }
  const auto entries = [&](int path) {
    return Span<const std::int64_t>{by_path[path].data(), std::int64_t(by_path[path].size())};
  };
  if (most_rows > 0)
    run_decode_blocks<RowTiles<Ops, D, DV>>(pr, source, entries(0), int(most_rows), threads);
  for (int vectors = 1; vectors <= NV; ++vectors)
    if (!by_path[vectors].empty())
      run_column_tiles<Ops, D, DV>(pr, source, entries(vectors), vectors, threads);
}

// Head dim 128 (the common decoder head) and MLA's absorbed 576 / 512 (DeepSeek-V2 and V3) get
// tiles with the dims fixed at compile time; every other pair runs the general tiles.
template <class Ops, class Source>
void run_decode(const DecodeProblem& pr, const Source& source, int threads) {
  if (pr.shape.head_dim == 128 && pr.shape.value_dim == 128)
    run_decode_dims<Ops, 128, 128>(pr, source, threads);
  else if (pr.shape.head_dim == 576 && pr.shape.value_dim == 512)  // MLA absorbed, DeepSeek-V2/V3
    run_decode_dims<Ops, 576, 512>(pr, source, threads);
  else
    run_decode_dims<Ops, 0, 0>(pr, source, threads);
}

// Every view, cache and varlen overload reads its rows through KvRows: compiled once per storage
// type in a build with the kernels library (compiled.hpp).
MULTIHEAD_INSTANCE(void run_decode<simd::Ops>(const DecodeProblem&, const KvRows<float>&, int))
MULTIHEAD_INSTANCE(void run_decode<simd::Ops>(const DecodeProblem&, const KvRows<bf16>&, int))
MULTIHEAD_INSTANCE(void run_decode<simd::Ops>(const DecodeProblem&, const KvRows<fp16>&, int))
MULTIHEAD_INSTANCE(void run_decode<simd::Ops>(const DecodeProblem&, const KvRows<q8>&, int))
MULTIHEAD_INSTANCE(void run_decode<simd::Ops>(const DecodeProblem&, const KvRows<q4>&, int))

// Runs a checked call: its scale and score modifiers from the options, threads resolved.
// cu_q: packed queries (DecodeProblem), or null.
template <class Q, class O, class Source>
void decode(const TensorView<const Q>& q, const TensorView<O>& o, LseOutput lse,
            const KernelOptions& options, const KernelShape& shape, const Source& source,
            const std::int64_t* cu_q = nullptr) {
  const ScorePass pass(options, shape);
  const DecodeProblem problem{q,     o,     lse.data, shape, resolved_scale(options, shape.head_dim),
                              &pass, cu_q};
  const ExecutorScope scope(options.executor);
  run_decode<simd::Ops>(problem, source, resolve_threads(options.threads));
}

// A checked call over any K/V source with these extents (check_cache_call_args): what the
// varlen and cache overloads run.
template <class Q, class O, class S>
void decode_source(const TensorView<const Q>& q, const KvRows<S>& source,
                   const KvExtents& extents, const TensorView<O>& o,
                   const KernelOptions& options, LseOutput lse) {
  decode(q, o, lse, options, check_cache_call_args(q, o, lse, options, extents), source);
}

}  // namespace detail

// Attention of q [batch, q_len, heads, head_dim] over k [batch, kv_len, kv_groups, head_dim]
// and v [batch, kv_len, kv_groups, value_dim] stored as float, bf16 or fp16, into o
// [batch, q_len, heads, value_dim] (and lse). The contract of fused_attention (options.hpp);
// made for small q_len (decoding, speculative verification), correct for any. q and o may each
// be float, bf16 or fp16 (TensorView<float>, <bf16>, <fp16>): q is widened as it is packed,
// o rounded once as it is stored; everything between runs in fp32.
template <class Storage, class Q, class O>
void decode_attention(const TensorView<Q>& q, const TensorView<const Storage>& k,
                      const TensorView<const Storage>& v, const TensorView<O>& o,
                      const KernelOptions& options = {}, LseOutput lse = {}) {
  static_assert(is_storage_type_v<Storage>, "decode_attention: K/V must be float, bf16 or fp16");
  detail::check_activation_types<Q, O>();
  const auto qc = detail::const_view(q);
  const KernelShape shape = check_kernel_args(qc, k, v, o, lse, options);
  detail::decode(qc, o, lse, options, shape, detail::view_rows(k, v));
}

}  // namespace MULTIHEAD_ISA_NAMESPACE
}  // namespace multihead
