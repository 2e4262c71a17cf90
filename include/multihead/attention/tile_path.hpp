// The tile-path contract: what the decode kernel's walk over a cache (tile_walk.hpp,
// decode_split.hpp) asks of the tiles that compute a block of query rows against K/V. Two paths
// model it: RowTiles (row_tiles.hpp; few rows or wide heads, rows kept row-major, the simplest
// model) and ColumnTiles (column_tiles.hpp; many rows of narrow heads, the fused kernel's
// transposed micro-tiles). A Path computes one KV group's block; the walk keeps one per group.
//
//   static constexpr int BC                          the most keys a tile may hold
//   static std::int64_t scratch_floats(rows, d, dv)  per-thread floats one path needs
//   Path(float* scratch, int rows, d, dv)            lays itself out in that scratch
//   static constexpr bool kWidens                    it can be handed widened float tiles (a
//                                                    path that cannot is only run over rows it
//                                                    reads in place)
//   template <class S> static constexpr bool kReads  rows of storage S can be read in place,
//                                                    widened as they are loaded
//   bool reads_in_place() const                      …and this instance does (its dims are whole
//                                                    vectors); otherwise the walk widens K (then
//                                                    V) into a zero-padded float tile of pitch
//   std::int64_t key_pitch(), value_pitch() const    key_pitch() (value_pitch())
//   template <class S> void begin(problem, site)     packs the block's queries (scaled, in the
//                                                    order S's loads want), starts each row's
//                                                    state (its sink, on the first split)
//   template <class S> std::int64_t prefetch_steps(int keys) const
//                                                    calls of the prefetch cursor that scores()
//                                                    and accumulate() make for a run of `keys`
//   template <class E> void scores(k, k_stride, keys, j0, offset, cursor)
//                                                    scores of keys [j0, j0 + keys), a run stored
//                                                    at tile position `offset`, masked and
//                                                    modified (score_pass.hpp)
//   void softmax(int keys)                           the online-softmax step over the tile
//                                                    (state.hpp's SoftmaxStep)
//   template <class E> void accumulate(v, v_stride, keys, offset, cursor)
//                                                    o = alpha·o + p·v for a run (alpha with the
//                                                    run at offset 0)
//   template <class S> void finish()                 after the last tile: the state row by row
//   const float* out(r), float max(r), float sum(r)  row r's unnormalised state (state.hpp)
// E is S when reading in place, float when reading a widened tile. Every call between begin()
// and finish() may issue prefetches through the cursor at the pace prefetch_steps() promised.
#pragma once

#include <cstdint>

#include "../core/tensor_view.hpp"
#include "activations.hpp"
#include "options.hpp"
#include "score_pass.hpp"
#include "shape.hpp"
#include "state.hpp"

namespace multihead {
inline namespace MULTIHEAD_ISA_NAMESPACE {
namespace detail {

// One decode call as the paths see it: every sequence's queries over its cached keys, either the
// same q_len new queries each (q [batch, q_len, heads, head_dim]) or, in a mixed batch, each its
// own count, packed one sequence after another (q [1, total, heads, head_dim]; cu_q[b] is where
// sequence b's start, FlashAttention's cu_seqlens_q). o and lse follow q's layout: lse is
// [batch, heads, q_len], or [heads, total] packed (FlashAttention's varlen layout).
struct DecodeProblem {
  QueryRows q;   // float, bf16 or fp16 (activations.hpp)
  OutputRows o;
  float* lse;
  KernelShape shape;  // batch: the sequences; kv_len: the longest; packed: q_len is the total
  float scale;
  const ScorePass* pass;
  const std::int64_t* cu_q = nullptr;  // packed: batch + 1 offsets, else null

  // Sequence b's new queries: how many, and their rows as a view of batch 1.
  std::int64_t queries(std::int64_t b) const {
    return cu_q != nullptr ? cu_q[b + 1] - cu_q[b] : shape.q_len;
  }
  QueryRows query_rows(std::int64_t b) const {
    return cu_q != nullptr ? token_range(q, 0, cu_q[b], queries(b))
                           : token_range(q, b, 0, shape.q_len);
  }
};

// Where a unit's rows are, for the score modifiers and the sinks: batch entry, KV group, first
// row, the sequence's length, and whether this unit holds the first keys of its rows (the
// sinks join the softmax there, once).
struct BlockSite {
  std::int64_t b = 0, g = 0, r0 = 0, length = 0;
  bool first_split = true;
};

inline std::int64_t round_up(std::int64_t n, std::int64_t m) { return (n + m - 1) / m * m; }

// Writes a row's normalised output (out[c · step], c < value_dim: its unnormalised values) to
// row (b, t, h) of o, and its log-sum-exp to *lse unless lse is null.
inline void store_state_row(const OutputRows& o, std::int64_t b, std::int64_t t, std::int64_t h,
                            const float* out, std::int64_t step, float max, float sum,
                            float* lse) {
  store_output_row(o, b, t, h, out, step, inverse_sum(sum));
  if (lse != nullptr) *lse = log_sum_exp(max, sum);
}

// Row r of sequence b's group g row space (shape.hpp's row_site): writes its normalised output
// (out: dv unnormalised values) and log-sum-exp.
inline void store_row(const DecodeProblem& pr, std::int64_t b, std::int64_t g, std::int64_t r,
                      const float* out, float max, float sum) {
  const KernelShape& s = pr.shape;
  const RowSite at = row_site(g, r, s.group_size());
  const std::int64_t entry = pr.cu_q != nullptr ? 0 : b;
  const std::int64_t token = pr.cu_q != nullptr ? pr.cu_q[b] + at.position : at.position;
  float* lse = pr.lse != nullptr ? pr.lse + (entry * s.heads + at.head) * s.q_len + token
                                 : nullptr;
  store_state_row(pr.o, entry, token, at.head, out, 1, max, sum, lse);
}

}  // namespace detail
}  // namespace MULTIHEAD_ISA_NAMESPACE
}  // namespace multihead
