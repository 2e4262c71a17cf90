// The transposed tiles: the register-blocked tile products of the fused kernel and the
// online-softmax step between them, for one ISA (Ops, simd/) and one (head_dim, value_dim)
// pair (Tiles), and the decode kernel's tile path over them for many rows of narrow heads
// (ColumnTiles; the contract: tile_path.hpp).
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
#include <limits>

#include "../core/tensor_view.hpp"
#include "../simd/ops.hpp"
#include "activations.hpp"
#include "blocking.hpp"
#include "prefetch.hpp"
#include "products.hpp"
#include "score_pass.hpp"
#include "shape.hpp"
#include "state.hpp"
#include "tile_path.hpp"
#include "visible_values.hpp"

namespace multihead {
inline namespace MULTIHEAD_ISA_NAMESPACE {
namespace detail {

// Packs rows [r0, r0 + rows) of KV group g's row space (row = query position · group_size +
// head in the group) of q's batch entry b, widened and transposed, into qt[p · block_rows + r]:
// the query block the tiles below read. Rows from `rows` to block_rows are zero.
inline void pack_transposed_rows(const QueryRows& q, std::int64_t b, std::int64_t g,
                                 std::int64_t group_size, std::int64_t r0, int rows,
                                 int block_rows, std::int64_t d, float* qt) {
  for (int r = 0; r < block_rows; ++r) {
    if (r >= rows) {
      for (std::int64_t p = 0; p < d; ++p) qt[p * block_rows + r] = 0.0f;
      continue;
    }
    const RowSite at = row_site(g, r0 + r, group_size);
    load_query_row(q, b, at.position, at.head, 1.0f, qt + r, block_rows);
  }
}

// ---- The operands of the bf16 products in pairs (products.hpp) -----------------------------------

// Rows [r0, r0 + rows) of KV group g's row space of batch entry b of a bf16 q, transposed in
// pairs along the head dim: qp[p / 2 · kRows + r] = (q[r][p], q[r][p + 1]); rows past `rows`
// are zero.
template <int kRows>
void pack_query_pairs(const TensorView<const bf16>& q, std::int64_t b, std::int64_t g,
                      std::int64_t group_size, std::int64_t r0, int rows, std::int64_t d,
                      std::uint32_t* qp) {
  for (int r = 0; r < kRows; ++r) {
    if (r >= rows) {
      for (std::int64_t p = 0; p < d; p += 2) qp[p / 2 * kRows + r] = 0;
      continue;
    }
    const RowSite at = row_site(g, r0 + r, group_size);
    const bf16* source = q.row(b, at.position, at.head);
    for (std::int64_t p = 0; p < d; p += 2)
      qp[p / 2 * kRows + r] = std::uint32_t{source[p].bits} | std::uint32_t{source[p + 1].bits} << 16;
  }
}

#if defined(MULTIHEAD_HAS_AVX512BF16)
// The probabilities of a tile, St[key][rows] in fp32, rounded to bf16 in pairs of keys:
// pp[j / 2 · kRows + r] = (P[j][r], P[j + 1][r]), an odd tile's last pair with a zero.
template <int kRows>
void pack_probability_pairs(const float* st, int keys, std::uint32_t* pp) {
  using Pairs = simd::Avx512Bf16Pairs;
  for (int j = 0; j < keys; j += 2)
    for (int v = 0; v < kRows; v += Pairs::W) {
      const __m512 first = _mm512_load_ps(st + j * kRows + v);
      const __m512 second = j + 1 < keys ? _mm512_load_ps(st + (j + 1) * kRows + v) : _mm512_setzero_ps();
      Pairs::store(pp + j / 2 * kRows + v, Pairs::round_pairs(first, second));
    }
}

// `keys` bf16 V rows (`stride` apart) in pairs of keys: vp[j / 2 · dv + c] = (V[j][c],
// V[j + 1][c]), an odd tile's last pair with a zero.
inline void interleave_value_pairs(const bf16* v, std::int64_t stride, int keys, std::int64_t dv,
                                   std::uint32_t* vp) {
  using Pairs = simd::Avx512Bf16Pairs;
  alignas(64) static constexpr bf16 kZeros[Pairs::W] = {};
  for (int j = 0; j < keys; j += 2) {
    const bf16* first = v + j * stride;
    const bf16* second = j + 1 < keys ? v + (j + 1) * stride : nullptr;
    std::uint32_t* out = vp + j / 2 * dv;
    // Whole vectors to dv / W · W: bounded by c + W <= dv instead, the remainder loop made
    // GCC 12 warn of undefined behaviour where dv is known at compile time (as convert() did).
    const std::int64_t whole = dv / Pairs::W * Pairs::W;
    for (std::int64_t c = 0; c < whole; c += Pairs::W)
      Pairs::interleave(first + c, second != nullptr ? second + c : kZeros, out + c);
    for (std::int64_t c = whole; c < dv; ++c)
      out[c] = std::uint32_t{first[c].bits} |
               (second != nullptr ? std::uint32_t{second[c].bits} << 16 : 0);
  }
}
#endif

// D, DV: head and value dims fixed at compile time (64, 128, 256), or 0 for "any, at run time".
// Fixed dims let the compiler schedule the dim loops fully and drop remainder handling.
// ROWS_NV: vectors of rows per block, the ISA's choice unless a caller has fewer rows (decoding
// 32 heads of one group needs 2 AVX-512 vectors, not 3). Pr: how the micro-tiles multiply
// (products.hpp): fp32 FMAs, or bf16 dot products over pairs, with Qᵀ, Pᵀ and V in pairs.
template <class Ops, int D, int DV, int ROWS_NV = Blocking<Ops>::NV,
          class Pr = FloatProducts<Ops>>
struct Tiles {
  using V = typename Ops::V;
  using E = typename Pr::Element;  // of Qᵀ, Pᵀ and the V rows P·V reads
  using K = typename Pr::Key;      // of the K rows Q·Kᵀ reads
  static constexpr int kStep = Pr::kStep;
  static constexpr int W = Ops::W, NV = ROWS_NV, BR = Ops::W * ROWS_NV, BC = Blocking<Ops>::BC;
  static constexpr int MRJ = Blocking<Ops>::MRJ, MRC = Blocking<Ops>::MRC;

  // St[j][rows] = scale · Σ_p K[j][p] · Qt[p][rows] for M consecutive keys. M·NV independent
  // accumulators (at least 8 on every SIMD path: the FMA latency is 4 cycles on 2 pipes). The
  // epilogue applies the scale and, if MASK, the causal mask — key j is hidden from rows whose
  // limit (last visible key, relative to this tile) is below j — and folds in the row maxima.
  template <int M, bool MASK>
  static void qk_micro(const E* __restrict qt, const K* __restrict k0,
                       std::int64_t k_stride, std::int64_t d, float scale, int key0,
                       const float* __restrict limit, float* __restrict st, V* tile_max) {
    const std::int64_t dim = D ? D : d;
    V acc[M][NV];
    for (int j = 0; j < M; ++j)
      for (int v = 0; v < NV; ++v) acc[j][v] = Ops::zero();
    const K* key[M];
    for (int j = 0; j < M; ++j) key[j] = k0 + j * k_stride;
    for (std::int64_t p = 0; p < dim; p += kStep) {
      typename Pr::Operand q[NV];
      for (int v = 0; v < NV; ++v) q[v] = Pr::load(qt + p / kStep * BR + v * W);
      for (int j = 0; j < M; ++j) {
        const auto k = Pr::broadcast(key[j] + p);
        for (int v = 0; v < NV; ++v) acc[j][v] = Pr::madd(acc[j][v], k, q[v]);
      }
    }
    const V s = Ops::set1(scale);
    for (int j = 0; j < M; ++j)
      for (int v = 0; v < NV; ++v) {
        V x = Ops::mul(acc[j][v], s);
        if constexpr (MASK)
          x = Ops::select_greater(Ops::set1(float(key0 + j)), Ops::load(limit + v * W), x,
                                  Ops::set1(simd::negative_infinity));
        Ops::store(st + j * BR + v * W, x);
        tile_max[v] = Ops::max(tile_max[v], x);
      }
  }

  // The last (keys % MRJ) keys of a tile, by a micro-kernel of exactly that height.
  template <int M, bool MASK>
  static void qk_remainder(int keys, const E* qt, const K* k0, std::int64_t k_stride,
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
  static void qk_tile(const E* qt, const K* k0, std::int64_t k_stride, std::int64_t d,
                      float scale, int keys, const float* limit, float* st, V* tile_max,
                      Fetch& next) {
    const int parts = (keys + MRJ - 1) / MRJ;
    int j = 0;
    for (; j + MRJ <= keys; j += MRJ) {
      next.part(j / MRJ, parts);
      qk_micro<MRJ, MASK>(qt, k0 + j * k_stride, k_stride, d, scale, j, limit, st + j * BR,
                               tile_max);
    }
    if (j < keys) {
      next.part(j / MRJ, parts);
      qk_remainder<MRJ - 1, MASK>(keys - j, qt, k0 + j * k_stride, k_stride, d, scale, j,
                                       limit, st + j * BR, tile_max);
    }
  }

  // The scores of keys [j0, j0 + keys) for a block's rows (score_pass.hpp), by what the tile
  // needs: plain products when every row sees every key; the causal epilogue's mask when a row's
  // range ends inside the tile; the pass's modifiers (and ranges) when a modifier looks at every
  // score or a range starts inside the tile. The row maxima are folded into tile_max. Returns
  // whether the tile was masked: whether some row may hide some of its keys.
  template <class Fetch>
  static bool scored_tile(const ScorePass& pass, const BlockRows& block, std::int64_t j0,
                          const E* qt, const K* k0, std::int64_t k_stride,
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
      return true;
    }
    if (block.masked_end(j0, keys)) {
      block.limits(j0, BR, BC, limit);
      qk_tile<true>(qt, k0, k_stride, d, scale, keys, limit, st, tile_max, next);
      return true;
    }
    qk_tile<false>(qt, k0, k_stride, d, scale, keys, limit, st, tile_max, next);
    return false;
  }

  // The online-softmax step of one tile (state.hpp), NV vectors of rows at a time: the running
  // max m and sum l move on, alpha carries the old sum and output over, P = exp(S − m) in place.
  // In a masked tile, hidden keys (−inf) get probability −0 (kHiddenProbability), for P·V.
  static void softmax_tile(float* __restrict st, int keys, const V* tile_max, V* m, V* l,
                           V* alpha, bool masked) {
    if (masked)
      softmax_steps<true>(st, keys, tile_max, m, l, alpha);
    else
      softmax_steps<false>(st, keys, tile_max, m, l, alpha);
  }
  template <bool MASKED>
  static void softmax_steps(float* __restrict st, int keys, const V* tile_max, V* m, V* l,
                            V* alpha) {
    SoftmaxStep<Ops> step[NV];
    V sum[NV];
    for (int v = 0; v < NV; ++v) {
      step[v] = SoftmaxStep<Ops>(m[v], tile_max[v]);
      sum[v] = Ops::zero();
    }
    for (int j = 0; j < keys; ++j)
      for (int v = 0; v < NV; ++v) {
        const V s = Ops::load(st + j * BR + v * W);
        V p = step[v].probability(s);
        if constexpr (MASKED)  // −FLT_MAX > s: s is −inf
          p = Ops::select_greater(Ops::set1(-std::numeric_limits<float>::max()), s, p,
                                  Ops::set1(kHiddenProbability));
        Ops::store(st + j * BR + v * W, p);
        sum[v] = Ops::add(sum[v], p);
      }
    for (int v = 0; v < NV; ++v) {
      step[v].fold(l[v], sum[v]);
      alpha[v] = step[v].alpha;
    }
  }

  // Ot[c][rows] = alpha · Ot[c][rows] + Σ_j V[j][c] · Pt[j][rows] for M consecutive value
  // columns; the rescale is folded into loading the accumulators.
  // With pairs, pt and v0 hold pairs of keys (an odd tile's last pair padded with zeros).
  template <int M>
  static void pv_micro(float* __restrict ot, const E* __restrict pt, int keys,
                       const E* __restrict v0, std::int64_t v_stride, const V* alpha) {
    V acc[M][NV];
    for (int c = 0; c < M; ++c)
      for (int v = 0; v < NV; ++v) acc[c][v] = Ops::mul(Ops::load(ot + c * BR + v * W), alpha[v]);
    for (int j = 0; j < keys; j += kStep) {
      const E* value = v0 + j / kStep * v_stride;  // not a running pointer: one row's stride
                                                   // may be anything, and a step past it undefined
      typename Pr::Operand p[NV];
      for (int v = 0; v < NV; ++v) p[v] = Pr::load(pt + j / kStep * BR + v * W);
      for (int c = 0; c < M; ++c) {
        const auto x = Pr::broadcast(value + c);
        for (int v = 0; v < NV; ++v) acc[c][v] = Pr::madd(acc[c][v], x, p[v]);
      }
    }
    for (int c = 0; c < M; ++c)
      for (int v = 0; v < NV; ++v) Ops::store(ot + c * BR + v * W, acc[c][v]);
  }

  template <int M>
  static void pv_remainder(int columns, float* ot, const E* pt, int keys, const E* v0,
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
  static void pv_tile(float* ot, const E* pt, int keys, const E* v0,
                      std::int64_t v_stride, std::int64_t dv, const V* alpha, Fetch& next) {
    const std::int64_t columns = DV ? DV : dv;
    const std::int64_t parts = (columns + MRC - 1) / MRC;
    std::int64_t c = 0;
    for (; c + MRC <= columns; c += MRC) {
      next.part(c / MRC, parts);
      pv_micro<MRC>(ot + c * BR, pt, keys, v0 + c, v_stride, alpha);
    }
    if (c < columns) {
      next.part(c / MRC, parts);
      pv_remainder<MRC - 1>(int(columns - c), ot + c * BR, pt, keys, v0 + c, v_stride,
                                 alpha);
    }
  }

  // The output update of a masked tile: pv_tile, unless the tile's V holds a non-finite value;
  // then the scalar update that skips each row's hidden keys (visible_values.hpp).
  template <class Fetch>
  static void pv_masked_tile(float* ot, const float* pt, int keys, const float* v0,
                             std::int64_t v_stride, std::int64_t dv, const V* alpha, Fetch& next) {
    const std::int64_t columns = DV ? DV : dv;
    if (values_finite(v0, v_stride, keys, columns))
      return pv_tile(ot, pt, keys, v0, v_stride, dv, alpha, next);
    pv_visible(ot, pt, keys, v0, v_stride, dv, alpha);
  }

#if defined(MULTIHEAD_HAS_AVX512BF16)
  // The output update of a tile on the bf16 products: Pt (fp32) rounded into pairs at pp, the
  // bf16 V rows interleaved into pairs at vp, then pv_tile; a masked tile whose V holds a
  // non-finite value takes pv_visible from the fp32 probabilities instead.
  template <class Fetch>
  static void pv_pairs(float* ot, const float* pt, int keys, const bf16* v0, std::int64_t v_stride,
                       std::int64_t dv, const V* alpha, bool masked, std::uint32_t* pp,
                       std::uint32_t* vp, Fetch& next) {
    const std::int64_t columns = DV ? DV : dv;
    if (masked && !values_finite(v0, v_stride, keys, columns))
      return pv_visible(ot, pt, keys, v0, v_stride, dv, alpha);
    pack_probability_pairs<BR>(pt, keys, pp);
    interleave_value_pairs(v0, v_stride, keys, columns, vp);
    pv_tile(ot, pp, keys, vp, columns, dv, alpha, next);
  }
#endif

  // The scalar output update of a tile over the keys each row sees (visible_values.hpp), from
  // fp32 probabilities Pt and V rows of any codec S.
  template <class S>
  static void pv_visible(float* ot, const float* pt, int keys, const S* v0,
                         std::int64_t v_stride, std::int64_t dv, const V* alpha) {
    const std::int64_t columns = DV ? DV : dv;
    alignas(64) float factor[BR];
    for (int v = 0; v < NV; ++v) Ops::store(factor + v * W, alpha[v]);
    for (std::int64_t c = 0; c < columns; ++c)
      for (int r = 0; r < BR; ++r) ot[c * BR + r] *= factor[r];
    accumulate_visible(
        BR, keys, v0, v_stride, columns, [&](std::int64_t r, std::int64_t j) { return pt[j * BR + r]; },
        [&](std::int64_t r, std::int64_t c) -> float& { return ot[c * BR + r]; });
  }
};

// The decode kernel's path for many rows: the transposed tiles above. With the bf16 products
// (Pr = Bf16PairProducts: bf16 queries over bf16 rows, AVX-512 BF16), K rows are read in place,
// Qᵀ is packed in pairs and each run's P and V are paired before its P·V (products.hpp).
template <class Ops, int D, int DV, int NV, class Pr = FloatProducts<Ops>>
class ColumnTiles {
  using T = Tiles<Ops, D, DV, NV, Pr>;
  using V = typename Ops::V;
  static constexpr int W = Ops::W, BR = T::BR, MRJ = T::MRJ, MRC = T::MRC;
  static constexpr bool kPairs = Pr::kStep == 2;

 public:
  static constexpr int BC = T::BC;

  static std::int64_t scratch_floats(int, std::int64_t d, std::int64_t dv) {
    return (d + BC + dv + 3) * BR + dv + (kPairs ? 16 + BC / 2 * (BR + dv) : 0);
  }

  ColumnTiles(float* scratch, int rows, std::int64_t d, std::int64_t dv)
      : rows_(rows), d_(D ? D : d), dv_(DV ? DV : dv) {
    qt_ = scratch;
    st_ = qt_ + d_ * BR;
    ot_ = st_ + BC * BR;
    limit_ = ot_ + dv_ * BR;
    max_sum_ = limit_ + BR;
    row_ = max_sum_ + 2 * BR;
    pp_ = reinterpret_cast<std::uint32_t*>(row_ + round_up(dv_, 16));  // aligned, as Pᵀ loads want
    vp_ = pp_ + BC / 2 * BR;
  }

  // The transposed tiles broadcast K/V elements one by one: they read float rows in place
  // (kReads) and need bf16 / fp16 rows widened into a tile first; paired, they read bf16 rows.
  template <class S>
  static constexpr bool kReads = std::is_same_v<S, typename Pr::Key>;
  static constexpr bool kWidens = !kPairs;  // paired, never handed a widened tile
  bool reads_in_place() const { return true; }
  std::int64_t key_pitch() const { return d_; }
  std::int64_t value_pitch() const { return dv_; }

  // Packs the block's rows into Qt; padding rows get zero queries and the last real row's
  // limit, so they compute finite values that are never stored. S, the cache's storage type
  // (RowTiles orders Q by it), changes nothing here, in prefetch_steps or in finish.
  template <class S>
  void begin(const DecodeProblem& pr, const BlockSite& at) {
    pr_ = &pr;
    pr.pass->block_rows(block_, at.b, at.g, at.r0, rows_, BR, pr.queries(at.b), at.length);
    for (int r = 0; r < BR; ++r)
      pr.pass->start(block_, r, at.first_split, max_sum_[r], max_sum_[BR + r]);
    const QueryRows queries = pr.query_rows(at.b);
    if constexpr (kPairs)
      pack_query_pairs<BR>(std::get<TensorView<const bf16>>(queries), 0, at.g,
                           pr.shape.group_size(), at.r0, rows_, d_, query());
    else
      pack_transposed_rows(queries, 0, at.g, pr.shape.group_size(), at.r0, rows_, BR, d_, qt_);
    std::fill(ot_, ot_ + dv_ * BR, 0.0f);
    for (int v = 0; v < NV; ++v) {
      m_[v] = Ops::load(max_sum_ + v * W);
      l_[v] = Ops::load(max_sum_ + BR + v * W);
    }
  }

  // Calls of the prefetch cursor per KV group for a run of `keys` keys: one before each
  // micro-tile of Q·Kᵀ and of P·V.
  template <class S>
  std::int64_t prefetch_steps(int keys) const {
    return (keys + MRJ - 1) / MRJ + (dv_ + MRC - 1) / MRC;
  }

  template <class E>
  void scores(const E* k, std::int64_t k_stride, int keys, std::int64_t j0, int offset,
              PrefetchCursor& ahead) {
    static_assert(std::is_same_v<E, typename Pr::Key>, "transposed tiles read float rows "
                                                       "(bf16 rows with the bf16 products)");
    if (offset == 0)
      for (int v = 0; v < NV; ++v) tile_max_[v] = Ops::set1(simd::negative_infinity);
    if (offset == 0) masked_ = false;
    masked_ |= T::scored_tile(*pr_->pass, block_, j0, query(), k, k_stride, d_, pr_->scale, keys,
                              limit_, st_ + offset * BR, tile_max_, ahead);
  }

  void softmax(int keys) {
    T::softmax_tile(st_, keys, tile_max_, m_, l_, alpha_, masked_);
    tile_keys_ = keys;
  }

  template <class E>
  void accumulate(const E* v, std::int64_t v_stride, int keys, int offset,
                  PrefetchCursor& ahead) {
    static_assert(std::is_same_v<E, typename Pr::Key>, "transposed tiles read float rows "
                                                       "(bf16 rows with the bf16 products)");
    if constexpr (kPairs) {
      if (keys == tile_keys_)  // a tile of one run (contiguous K/V): nothing to gather
        T::pv_pairs(ot_, st_, keys, v, v_stride, dv_, alpha_, masked_, pp_, vp_, ahead);
      else
        accumulate_pairs(v, v_stride, keys, offset, ahead);
    } else {
      // Later runs of a tile add to outputs already rescaled by the first: factor 1.
      if (offset > 0)
        for (int x = 0; x < NV; ++x) alpha_[x] = Ops::set1(1.0f);
      if (masked_)
        T::pv_masked_tile(ot_, st_ + offset * BR, keys, v, v_stride, dv_, alpha_, ahead);
      else
        T::pv_tile(ot_, st_ + offset * BR, keys, v, v_stride, dv_, alpha_, ahead);
    }
  }

#if defined(MULTIHEAD_HAS_AVX512BF16)
  // The paired P·V gathers a tile's runs: each run's V rows are interleaved after those of the
  // runs before it, and the products run once over them all, so that Oᵀ is loaded and stored
  // once per tile, not once per run (a paged tile is four 16-token runs: its loads and stores
  // were a quarter of the products' instructions). An odd run ends a gathering (a pair never
  // spans two runs); a masked run whose V holds a non-finite value takes the scalar update.
  // The prefetch cursor gets every gathered run's share, as prefetch_steps promised, spread
  // over the products' micro-tiles (in one burst before them, requests stall the loads).
  void accumulate_pairs(const bf16* v, std::int64_t v_stride, int keys, int offset,
                        PrefetchCursor& ahead) {
    if (masked_ && !values_finite(v, v_stride, keys, dv_)) {
      flush_pairs(ahead);
      T::pv_visible(ot_, st_ + offset * BR, keys, v, v_stride, dv_, alpha_);
      for (int x = 0; x < NV; ++x) alpha_[x] = Ops::set1(1.0f);
      for (std::int64_t part = 0; part < (dv_ + MRC - 1) / MRC; ++part) ahead.issue();
      return;
    }
    if (gathered_ % 2 != 0) flush_pairs(ahead);
    if (gathered_ == 0) gathered_from_ = offset;
    interleave_value_pairs(v, v_stride, keys, dv_, vp_ + gathered_ / 2 * dv_);
    gathered_ += keys;
    ++gathered_runs_;
    if (offset + keys == tile_keys_) flush_pairs(ahead);
  }
  // The products over the gathered runs; later ones of the tile add to outputs already rescaled
  // by these: factor 1.
  void flush_pairs(PrefetchCursor& ahead) {
    if (gathered_ == 0) return;
    pack_probability_pairs<BR>(st_ + gathered_from_ * BR, gathered_, pp_);
    RunShares shares{ahead, gathered_runs_};
    T::pv_tile(ot_, pp_, gathered_, vp_, dv_, dv_, alpha_, shares);
    for (int x = 0; x < NV; ++x) alpha_[x] = Ops::set1(1.0f);
    gathered_ = gathered_runs_ = 0;
  }
  // Before each micro-tile of a gathered P·V: the share of every run gathered.
  struct RunShares {
    PrefetchCursor& cursor;
    int runs;
    [[gnu::always_inline]] void part(std::int64_t, std::int64_t) {
      for (int i = 0; i < runs; ++i) cursor.issue();
    }
  };
#endif

  // The state after the last tile, row by row: finish() spills the running max and sum.
  template <class S>
  void finish() {
    for (int v = 0; v < NV; ++v) {
      Ops::store(max_sum_ + v * W, m_[v]);
      Ops::store(max_sum_ + BR + v * W, l_[v]);
    }
  }
  // Qᵀ as the products read it: floats, or pairs in the same place.
  const typename Pr::Element* query() const {
    return reinterpret_cast<const typename Pr::Element*>(qt_);
  }
  typename Pr::Element* query() { return reinterpret_cast<typename Pr::Element*>(qt_); }

  const float* out(int r) const {  // gathered from the transposed output; valid until next call
    for (std::int64_t c = 0; c < dv_; ++c) row_[c] = ot_[c * BR + r];
    return row_;
  }
  float max(int r) const { return max_sum_[r]; }
  float sum(int r) const { return max_sum_[BR + r]; }

 private:
  int rows_;
  std::int64_t d_, dv_;
  float *qt_, *st_, *ot_, *limit_, *max_sum_, *row_;
  std::uint32_t *pp_, *vp_;  // paired: a run's P and V
  const DecodeProblem* pr_ = nullptr;
  BlockRows block_;  // the block's rows and the keys they see
  bool masked_ = false;  // some row of the block hides some key of the current tile
  int tile_keys_ = 0;    // of the current tile
  int gathered_ = 0, gathered_from_ = 0, gathered_runs_ = 0;  // paired: keys and runs gathered
                                                             // for P·V, from this offset
  V m_[NV], l_[NV], alpha_[NV], tile_max_[NV];
};

}  // namespace detail
}  // namespace MULTIHEAD_ISA_NAMESPACE
}  // namespace multihead
