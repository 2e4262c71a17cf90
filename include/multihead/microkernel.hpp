// The register-blocked tile products of the fused kernel and the online-softmax step between
// them, for one ISA (Ops, see simd/generic.hpp) and one (head_dim, value_dim) pair.
//
// Layout: a query block of BR = NV·W rows is held transposed, Qt[dim][row], and so are the
// scores St[key][row] and the output Ot[column][row]. Every kernel therefore vectorises over
// rows: the per-row max and sum of the softmax are element-wise vector operations (no
// horizontal reductions), and K and V are read as scalar broadcasts straight from the caller's
// rows, with no packing per tile (packing K/V tiles measured 15% slower: it overflows L1).
//
// Measured alone on Zen 5 with d = 128, cache-resident: Q·Kᵀ at 98% and P·V at 97% of the FMA
// peak; the exp pass costs 5% and the rescale 2% of the products' time.
#pragma once

#include <algorithm>
#include <cstdint>

#include "score_pass.hpp"
#include "simd.hpp"
#include "tensor_view.hpp"

namespace multihead {
inline namespace MULTIHEAD_ISA_NAMESPACE {
namespace detail {

// Software prefetch of rows of a strided K or V tile into L2. K/V rows are usually far apart
// (token stride = kv_groups · dim), so each row starts a new stream, often on a new 4 KiB page
// where the hardware prefetchers stop. The next operand's rows are requested a few at a time
// while the current product runs, so the misses overlap the FMAs.
struct TilePrefetch {
  const char* base = nullptr;
  std::int64_t stride = 0, rows = 0, bytes = 0;  // stride and bytes per row, in bytes

  TilePrefetch() = default;
  // `count` rows of `length` elements, `row_stride` elements apart (float, bf16 or fp16 rows).
  template <class T>
  TilePrefetch(const T* row0, std::int64_t row_stride, std::int64_t count, std::int64_t length)
      : base(reinterpret_cast<const char*>(row0)),
        stride(row_stride * std::int64_t(sizeof(T))),
        rows(count),
        bytes(length * std::int64_t(sizeof(T))) {}

  // Requests part i of `parts` equal shares of the tile's cache lines, in address order.
  void part(std::int64_t i, std::int64_t parts) const {
    if (base == nullptr) return;
    const std::int64_t per_row = (bytes + 63) / 64, lines = rows * per_row;
    const std::int64_t first = lines * i / parts, count = lines * (i + 1) / parts - first;
    std::int64_t row = first / per_row, column = first % per_row;  // one division per part
    for (std::int64_t n = 0; n < count; ++n) {
      __builtin_prefetch(base + row * stride + column * 64, 0, 2);
      if (++column == per_row) column = 0, ++row;
    }
  }
};

// Walks the cache lines of a list of TilePrefetch regions in address order, a fixed number per
// issue(), so that the decode kernel requests the next tile's rows at an even pace over the
// whole of the current tile's work: the row-major tiles call it from their innermost loops
// (each step of the head dim in Q·Kᵀ, each key in P·V), the transposed tiles before each
// micro-tile. Requests in bursts (a share of the tile per micro-tile) fill the miss queues,
// stall the loads queued behind them and leave memory idle in between; requests for rows needed
// half a tile later (this tile's V during its Q·Kᵀ) arrive late. Measured at 2 threads: D1 bf16
// 1.08 → 0.76 ms, D1 fp32 1.68 → 1.48 ms, MLA's absorbed decode over 32768 tokens 6.1 → 4.6 ms,
// D2 fp32 2.37 → 1.84 ms.
class PrefetchCursor {
 public:
  PrefetchCursor() = default;  // nothing to fetch
  // Regions with at least one row of at least one byte.
  PrefetchCursor(const TilePrefetch* regions, int count)
      : region_(regions), end_(regions + count) {
    if (count > 0) start_region();
  }

  // Spreads all lines over `calls` calls of issue() (none if calls is 0).
  void pace(std::int64_t calls) {
    std::int64_t lines = 0;
    for (const TilePrefetch* r = region_; r != end_; ++r) lines += r->rows * ((r->bytes + 63) / 64);
    per_call_ = calls > 0 ? (lines + calls - 1) / calls : 0;
  }

  // Called from inner loops, and always inlined there: a call would make the compiler keep the
  // loops' accumulators in memory (every vector register is caller-saved). A line costs a
  // prefetch, an add and a compare, and a new row a few more.
  [[gnu::always_inline]] void issue() {
    for (std::int64_t n = per_call_; n > 0 && line_ != 0; --n) {
      __builtin_prefetch(reinterpret_cast<const char*>(line_), 0, 2);
      if ((line_ += 64) >= row_end_) next_row();
    }
  }
  // The share of step i of `parts` (a TilePrefetch's interface): the next lines at the pace set.
  [[gnu::always_inline]] void part(std::int64_t, std::int64_t) { issue(); }
  // Whether every line has been requested.
  bool done() const { return line_ == 0; }

 private:
  [[gnu::always_inline]] void next_row() {
    if (--rows_left_ > 0) {
      row_ += std::uintptr_t(region_->stride);
      line_ = row_;
      row_end_ = row_ + std::uintptr_t(region_->bytes);
    } else if (++region_ != end_) {
      start_region();
    } else {
      line_ = 0;
    }
  }
  void start_region() {
    row_ = line_ = reinterpret_cast<std::uintptr_t>(region_->base);
    row_end_ = row_ + std::uintptr_t(region_->bytes);
    rows_left_ = region_->rows;
  }

  const TilePrefetch* region_ = nullptr;
  const TilePrefetch* end_ = nullptr;
  // Addresses as integers: the last step of a row may pass its end, where no pointer may point.
  std::uintptr_t line_ = 0, row_ = 0, row_end_ = 0;  // line_: the next line, 0 when done
  std::int64_t rows_left_ = 0, per_call_ = 0;        // rows_left_: of the region, this one too
};

// Packs rows [r0, r0 + rows) of KV group g's row space (row = query position · group_size +
// head in the group) of q's batch entry b, transposed, into qt[p · block_rows + r]: the query
// block the tiles below read. Rows from `rows` to block_rows are zero.
inline void pack_transposed_rows(const TensorView<const float>& q, std::int64_t b,
                                 std::int64_t g, std::int64_t group_size, std::int64_t r0,
                                 int rows, int block_rows, std::int64_t d, float* qt) {
  for (int r = 0; r < block_rows; ++r) {
    if (r >= rows) {
      for (std::int64_t p = 0; p < d; ++p) qt[p * block_rows + r] = 0.0f;
      continue;
    }
    const std::int64_t row = r0 + r;
    const float* source = q.row(b, row / group_size, g * group_size + row % group_size);
    for (std::int64_t p = 0; p < d; ++p) qt[p * block_rows + r] = source[p];
  }
}

// D, DV: head and value dims fixed at compile time (64, 128, 256), or 0 for "any, at run time".
// Fixed dims let the compiler schedule the dim loops fully and drop remainder handling.
// ROWS_NV: vectors of rows per block, the ISA's choice unless a caller has fewer rows (decoding
// 32 heads of one group needs 2 AVX-512 vectors, not 3).
template <class Ops, int D, int DV, int ROWS_NV = Ops::NV>
struct Tiles {
  using V = typename Ops::V;
  static constexpr int W = Ops::W, NV = ROWS_NV, BR = Ops::W * ROWS_NV, BC = Ops::BC;

  // St[j][rows] = scale · Σ_p K[j][p] · Qt[p][rows] for M consecutive keys. M·NV independent
  // accumulators (at least 8 on every SIMD path: the FMA latency is 4 cycles on 2 pipes). The
  // epilogue applies the scale and, if MASK, the causal mask — key j is hidden from rows whose
  // limit (last visible key, relative to this tile) is below j — and folds in the row maxima.
  template <int M, bool MASK>
  static void qk_micro(const float* __restrict qt, const float* __restrict k0,
                       std::int64_t k_stride, std::int64_t d, float scale, int key0,
                       const float* __restrict limit, float* __restrict st, V* tile_max) {
    const std::int64_t dim = D ? D : d;
    V acc[M][NV];
    for (int j = 0; j < M; ++j)
      for (int v = 0; v < NV; ++v) acc[j][v] = Ops::zero();
    const float* key[M];
    for (int j = 0; j < M; ++j) key[j] = k0 + j * k_stride;
    for (std::int64_t p = 0; p < dim; ++p) {
      V q[NV];
      for (int v = 0; v < NV; ++v) q[v] = Ops::load(qt + p * BR + v * W);
      for (int j = 0; j < M; ++j) {
        const V k = Ops::broadcast(key[j] + p);
        for (int v = 0; v < NV; ++v) acc[j][v] = Ops::fma(k, q[v], acc[j][v]);
      }
    }
    const V s = Ops::set1(scale);
    for (int j = 0; j < M; ++j)
      for (int v = 0; v < NV; ++v) {
        V x = Ops::mul(acc[j][v], s);
        if constexpr (MASK) x = Ops::mask_after(float(key0 + j), Ops::load(limit + v * W), x);
        Ops::store(st + j * BR + v * W, x);
        tile_max[v] = Ops::max(tile_max[v], x);
      }
  }

  // The last (keys % MRJ) keys of a tile, by a micro-kernel of exactly that height.
  template <int M, bool MASK>
  static void qk_remainder(int keys, const float* qt, const float* k0, std::int64_t k_stride,
                           std::int64_t d, float scale, int key0, const float* limit, float* st,
                           V* tile_max) {
    if constexpr (M > 0) {
      if (keys == M)
        qk_micro<M, MASK>(qt, k0, k_stride, d, scale, key0, limit, st, tile_max);
      else
        qk_remainder<M - 1, MASK>(keys, qt, k0, k_stride, d, scale, key0, limit, st, tile_max);
    }
  }

  // Scores of one tile of `keys` keys; `next` (a TilePrefetch or a PrefetchCursor) requests its
  // share of the rows to come before each micro-tile.
  template <bool MASK, class Fetch>
  static void qk_tile(const float* qt, const float* k0, std::int64_t k_stride, std::int64_t d,
                      float scale, int keys, const float* limit, float* st, V* tile_max,
                      Fetch& next) {
    const int parts = (keys + Ops::MRJ - 1) / Ops::MRJ;
    int j = 0;
    for (; j + Ops::MRJ <= keys; j += Ops::MRJ) {
      next.part(j / Ops::MRJ, parts);
      qk_micro<Ops::MRJ, MASK>(qt, k0 + j * k_stride, k_stride, d, scale, j, limit, st + j * BR,
                               tile_max);
    }
    if (j < keys) {
      next.part(j / Ops::MRJ, parts);
      qk_remainder<Ops::MRJ - 1, MASK>(keys - j, qt, k0 + j * k_stride, k_stride, d, scale, j,
                                       limit, st + j * BR, tile_max);
    }
  }

  // The scores of keys [j0, j0 + keys) for a block's rows (score_pass.hpp), by what the tile
  // needs: plain products when every row sees every key; the causal epilogue's mask when a row's
  // range ends inside the tile; the pass's modifiers (and ranges) when a modifier looks at every
  // score or a range starts inside the tile. The row maxima are folded into tile_max.
  template <class Fetch>
  static void scored_tile(const ScorePass& pass, const BlockRows& block, std::int64_t j0,
                          const float* qt, const float* k0, std::int64_t k_stride,
                          std::int64_t d, float scale, int keys, float* limit, float* st,
                          V* tile_max, Fetch& next) {
    static_assert(BR <= kMaxTileRows, "a block's rows must fit a BlockRows");
    if (pass.per_score() || block.masked_start(j0)) {
      V unmodified_max[NV];  // of no use: the modifiers change the scores
      for (int v = 0; v < NV; ++v) unmodified_max[v] = Ops::set1(simd::negative_infinity);
      qk_tile<false>(qt, k0, k_stride, d, scale, keys, limit, st, unmodified_max, next);
      pass.apply(st, 1, BR, keys, j0, block);
      for (int j = 0; j < keys; ++j)
        for (int v = 0; v < NV; ++v)
          tile_max[v] = Ops::max(tile_max[v], Ops::load(st + j * BR + v * W));
    } else if (block.masked_end(j0, keys)) {
      block.limits(j0, BR, BC, limit);
      qk_tile<true>(qt, k0, k_stride, d, scale, keys, limit, st, tile_max, next);
    } else {
      qk_tile<false>(qt, k0, k_stride, d, scale, keys, limit, st, tile_max, next);
    }
  }

  // The online-softmax step of one tile: the new running max m, the factor alpha that carries
  // the old sum and output over to it, P = exp(S − m) in place, and the new running sum l.
  // A row that has still seen nothing keeps m = −inf, l = 0 and gets alpha = 0, P = 0.
  static void softmax_tile(float* __restrict st, int keys, const V* tile_max, V* m, V* l,
                           V* alpha) {
    V safe_max[NV], sum[NV];
    for (int v = 0; v < NV; ++v) {
      const V new_max = Ops::max(m[v], tile_max[v]);
      safe_max[v] = Ops::neg_inf_to_zero(new_max);  // empty row: exp(−inf − 0) = 0
      alpha[v] = Ops::exp(Ops::sub(m[v], safe_max[v]));
      m[v] = new_max;
      sum[v] = Ops::zero();
    }
    for (int j = 0; j < keys; ++j)
      for (int v = 0; v < NV; ++v) {
        const V p = Ops::exp(Ops::sub(Ops::load(st + j * BR + v * W), safe_max[v]));
        Ops::store(st + j * BR + v * W, p);
        sum[v] = Ops::add(sum[v], p);
      }
    for (int v = 0; v < NV; ++v) l[v] = Ops::fma(l[v], alpha[v], sum[v]);
  }

  // Ot[c][rows] = alpha · Ot[c][rows] + Σ_j V[j][c] · Pt[j][rows] for M consecutive value
  // columns; the rescale is folded into loading the accumulators.
  template <int M>
  static void pv_micro(float* __restrict ot, const float* __restrict pt, int keys,
                       const float* __restrict v0, std::int64_t v_stride, const V* alpha) {
    V acc[M][NV];
    for (int c = 0; c < M; ++c)
      for (int v = 0; v < NV; ++v) acc[c][v] = Ops::mul(Ops::load(ot + c * BR + v * W), alpha[v]);
    const float* value = v0;
    for (int j = 0; j < keys; ++j, value += v_stride) {
      V p[NV];
      for (int v = 0; v < NV; ++v) p[v] = Ops::load(pt + j * BR + v * W);
      for (int c = 0; c < M; ++c) {
        const V x = Ops::broadcast(value + c);
        for (int v = 0; v < NV; ++v) acc[c][v] = Ops::fma(x, p[v], acc[c][v]);
      }
    }
    for (int c = 0; c < M; ++c)
      for (int v = 0; v < NV; ++v) Ops::store(ot + c * BR + v * W, acc[c][v]);
  }

  template <int M>
  static void pv_remainder(int columns, float* ot, const float* pt, int keys, const float* v0,
                           std::int64_t v_stride, const V* alpha) {
    if constexpr (M > 0) {
      if (columns == M)
        pv_micro<M>(ot, pt, keys, v0, v_stride, alpha);
      else
        pv_remainder<M - 1>(columns, ot, pt, keys, v0, v_stride, alpha);
    }
  }

  // Output update of one tile; `next` requests its share before each micro-tile, as in qk_tile.
  template <class Fetch>
  static void pv_tile(float* ot, const float* pt, int keys, const float* v0,
                      std::int64_t v_stride, std::int64_t dv, const V* alpha, Fetch& next) {
    const std::int64_t columns = DV ? DV : dv;
    const std::int64_t parts = (columns + Ops::MRC - 1) / Ops::MRC;
    std::int64_t c = 0;
    for (; c + Ops::MRC <= columns; c += Ops::MRC) {
      next.part(c / Ops::MRC, parts);
      pv_micro<Ops::MRC>(ot + c * BR, pt, keys, v0 + c, v_stride, alpha);
    }
    if (c < columns) {
      next.part(c / Ops::MRC, parts);
      pv_remainder<Ops::MRC - 1>(int(columns - c), ot + c * BR, pt, keys, v0 + c, v_stride,
                                 alpha);
    }
  }
};

}  // namespace detail
}  // namespace MULTIHEAD_ISA_NAMESPACE
}  // namespace multihead
