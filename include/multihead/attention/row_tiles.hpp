// The row-major tile path of the decode kernel (the tile-path contract: tile_path.hpp): few
// query rows per block (MHA, small GQA groups), or up to 2·W rows of wide heads (MLA's absorbed
// 576 / 512). Rows stay row-major; Q·Kᵀ is vectorised along the head dim with one lane
// reduction per score, and P·V broadcasts each probability over a row of V. K/V rows of any
// storage are read in place through their codec (storage/codec.hpp), widened as they load.
#pragma once

#include <algorithm>
#include <cstdint>
#include <limits>
#include <type_traits>

#include "../simd/ops.hpp"
#include "../storage/codec.hpp"
#include "blocking.hpp"
#include "prefetch.hpp"
#include "score_pass.hpp"
#include "state.hpp"
#include "tile_path.hpp"
#include "visible_values.hpp"

namespace multihead {
inline namespace MULTIHEAD_ISA_NAMESPACE {
namespace detail {

// Q rows (pre-scaled) q[r][dp], scores s[r][BC], output o[r][dvp]; dp, dvp: the dims rounded up
// to whole vectors (the padding of Q and of widened tiles is zero, so it adds nothing).
template <class Ops, int D, int DV>
class RowTiles {
  using V = typename Ops::V;
  static constexpr int W = Ops::W;
  // Accumulators per micro-tile: 16 of the 32 AVX-512 registers, 8 of AVX2's 16.
  static constexpr int kAccumulators = 2 * Blocking<Ops>::MRJ;
  // Rows per micro-tile: half the accumulators, so that two keys share each Q load in Q·Kᵀ and
  // two value vectors each broadcast probability in P·V (blocks of 8 rows rather than 4 measured
  // 10% faster on 6–16 rows of head dim 128, equal on 4). Wide heads take 4 rows by 4 keys (or
  // value vectors): MLA's 16 rows of 576 / 512 ran 12% faster in cache (fewer loads per FMA in
  // Q·Kᵀ, and a quarter of Q per block in L1).
  static constexpr int kRowBlock = std::min(D >= 256 ? 4 : 8, kAccumulators / 2);
  // Keys per step of scores(): every row block takes these keys before the next ones are
  // read, so a key row is read from memory once and from L1 by the other blocks.
  static constexpr int kKeyChunk = 8;

 public:
  static constexpr int BC = Blocking<Ops>::BC;
  // The path's limit (kept rows and states are sized by it); run_decode_dims decides which
  // blocks it gets: few rows at any head dim, up to this many when heads are wide.
  static constexpr int kMaxRows = 2 * W;

  static std::int64_t pitch(std::int64_t dim) { return round_up(dim, W); }
  static std::int64_t scratch_floats(int rows, std::int64_t d, std::int64_t dv) {
    return rows * (pitch(d) + BC + W + pitch(dv) + 3);
  }

  RowTiles(float* scratch, int rows, std::int64_t d, std::int64_t dv)
      : rows_(rows), d_(D ? D : d), dv_(DV ? DV : dv), dp_(D ? D : pitch(d)),
        dvp_(DV ? DV : pitch(dv)) {
    q_ = scratch;
    s_ = q_ + rows * dp_;
    o_ = s_ + rows * (BC + W);
    m_ = o_ + rows * dvp_;
    l_ = m_ + rows;
    alpha_ = l_ + rows;
  }

  // K/V rows of any storage (kReads) can be read where they are, widened as they are loaded,
  // when they hold whole vectors (reads_in_place); otherwise the caller widens them into a
  // zero-padded tile of pitch key_pitch() / value_pitch().
  template <class S>
  static constexpr bool kReads = true;
  static constexpr bool kWidens = true;
  bool reads_in_place() const { return dp_ == d_ && dvp_ == dv_; }
  std::int64_t key_pitch() const { return dp_; }
  std::int64_t value_pitch() const { return dvp_; }

  // bf16 rows of fixed dims in whole pairs of vectors are widened a pair at a time, the even-
  // and odd-indexed values apart (Codec::load_pairs: a shift and a mask, where widening vector
  // by vector takes a lane-crossing shuffle and a shift each). Q is packed in that order, and o
  // accumulates in it until finish(). Such rows are always read in place (dp_ = d_, dvp_ =
  // dv_), so the storage type S that packs Q is the element type E the micro-tiles see. D1 bf16
  // (2 threads, 8192 tokens, medians of 8 interleaved runs): 0.775 → 0.641 ms.
  template <class S>
  static constexpr bool kPaired = Codec<S>::kPairs && D > 0 && DV > 0 &&
                                  D % (2 * W) == 0 && DV % (2 * W) == 0;

  template <class S>
  void begin(const DecodeProblem& pr, const BlockSite& at) {
    pr_ = &pr;
    pr.pass->block_rows(block_, at.b, at.g, at.r0, rows_, rows_, pr.queries(at.b), at.length);
    const QueryRows queries = pr.query_rows(at.b);
    for (int r = 0; r < rows_; ++r) {
      float* q = q_ + r * dp_;
      load_query_row(queries, 0, block_.query[r], block_.head[r], pr.scale, q);
      if constexpr (kPaired<S>) {  // even-indexed values first in each pair of vectors
        alignas(64) float pair[2 * W];
        for (std::int64_t p = 0; p < d_; p += 2 * W) {
          std::copy(q + p, q + p + 2 * W, pair);
          for (int i = 0; i < W; ++i) {
            q[p + i] = pair[2 * i];
            q[p + W + i] = pair[2 * i + 1];
          }
        }
      }
      std::fill(q + d_, q + dp_, 0.0f);
      std::fill(o_ + r * dvp_, o_ + (r + 1) * dvp_, 0.0f);
      pr.pass->start(block_, r, at.first_split, m_[r], l_[r]);
    }
  }

  // Calls of the prefetch cursor's issue() per KV group for a run of `keys` keys (scores()
  // and accumulate() once each): one per step of the head dim in each Q·Kᵀ micro-tile, one per
  // key in each P·V micro-tile.
  template <class S>
  std::int64_t prefetch_steps(int keys) const {
    // Q·Kᵀ micro-tiles over n keys: n / mk of mk keys, then one per leftover key (qk_rows).
    const auto micro_tiles = [](int n, int mk) { return n / mk + n % mk; };
    std::int64_t steps = 0;
    for (int r = 0; r < rows_; r += kRowBlock) {
      const int rc = std::min(kRowBlock, rows_ - r), mk = keys_per_micro(rc);
      const int cc = columns_per_micro<S>(rc);
      // Several row blocks take the keys in chunks of kKeyChunk (scores()).
      const int qk = rows_ <= kRowBlock ? micro_tiles(keys, mk)
                                        : keys / kKeyChunk * micro_tiles(kKeyChunk, mk) +
                                              micro_tiles(keys % kKeyChunk, mk);
      steps += std::int64_t(qk) * (dp_ / (kPaired<S> ? 2 * W : W));
      steps += (dvp_ / W + cc - 1) / cc * keys;
    }
    return steps;
  }

  // s = q·kᵀ for keys [j0, j0 + keys), stored from position `offset` of the tile (a tile may
  // gather several runs), masked where a row may not see a key; the next tile's rows are
  // requested meanwhile, a few lines per step. Several row blocks take the keys in chunks,
  // each chunk through every block, so a key row is read from memory once and by the other
  // blocks from L1.
  template <class E>
  void scores(const E* k, std::int64_t k_stride, int keys, std::int64_t j0, int offset,
              PrefetchCursor& ahead) {
    if (rows_ <= kRowBlock) {
      qk_block(0, k, k_stride, keys, offset, ahead);
    } else {
      for (int first = 0; first < keys; first += kKeyChunk) {
        const int count = std::min(kKeyChunk, keys - first);
        for (int r = 0; r < rows_; r += kRowBlock)
          qk_block(r, k + first * k_stride, k_stride, count, offset + first, ahead);
      }
    }
    // Modifiers, or some row's range starts or ends inside this run.
    if (offset == 0) masked_ = false;
    if (pr_->pass->per_score() || block_.masked_start(j0) || block_.masked_end(j0, keys)) {
      pr_->pass->apply(s_ + offset, BC + W, 1, keys, j0, block_);
      masked_ = true;
    }
  }

  // The online-softmax step (state.hpp), per row, its state in scalars: p = exp(s − max) in
  // place (0 past `keys`, so whole vectors can be summed). In a masked tile, hidden keys (−inf)
  // get probability −0 (kHiddenProbability), for P·V.
  void softmax(int keys) {
    if (masked_)
      softmax_rows<true>(keys);
    else
      softmax_rows<false>(keys);
  }

  // o = alpha·o + p·v over the keys at tile positions [offset, offset + keys); alpha is applied
  // with the first run of a tile (offset 0). The next tile's rows are requested meanwhile.
  // In a masked tile whose V holds a non-finite value, the scalar update that skips each row's
  // hidden keys instead (visible_values.hpp).
  template <class E>
  void accumulate(const E* v, std::int64_t v_stride, int keys, int offset,
                  PrefetchCursor& ahead) {
    if (masked_ && !values_finite(v, v_stride, keys, dv_))
      return accumulate_visible_rows(v, v_stride, keys, offset);
    for (int r = 0; r < rows_; r += kRowBlock) pv_block(r, v, v_stride, keys, offset, ahead);
  }

  // The state after the last tile, row by row: paired outputs back in column order.
  template <class S>
  void finish() {
    if constexpr (kPaired<S>) {
      float t[2 * W];
      for (int r = 0; r < rows_; ++r)
        for (std::int64_t c = 0; c < dvp_; c += 2 * W) {
          float* o = o_ + r * dvp_ + c;
          for (int i = 0; i < W; ++i) t[2 * i] = o[i], t[2 * i + 1] = o[W + i];
          std::copy(t, t + 2 * W, o);
        }
    }
  }
  const float* out(int r) const { return o_ + r * dvp_; }
  float max(int r) const { return m_[r]; }
  float sum(int r) const { return l_[r]; }

 private:
  // Scores of RC rows from row r0 against MK keys: RC·MK accumulators along the head dim, each
  // reduced to one score at the end (four at a time, which shares the shuffles).
  template <int RC, int MK, class E>
  void qk_micro(int r0, const E* __restrict k, std::int64_t k_stride, float* __restrict s,
                PrefetchCursor& ahead) const {
    V acc[RC][MK];
    for (int r = 0; r < RC; ++r)
      for (int j = 0; j < MK; ++j) acc[r][j] = Ops::zero();
    // The Q rows' pitch, a constant for the fixed dims: the rows are then one base register
    // and fixed offsets, which leaves registers for the cursor (MLA: 8 rows).
    const std::int64_t length = D ? D : dp_;
    const float* q = q_ + r0 * length;
    if constexpr (kPaired<E>) {
      for (std::int64_t p = 0; p < length; p += 2 * W) {
        ahead.issue();
        V even[MK], odd[MK];
        for (int j = 0; j < MK; ++j)
          Codec<E>::template load_pairs<Ops>(k + j * k_stride, p, even[j], odd[j]);
        for (int r = 0; r < RC; ++r) {
          V x = Ops::load(q + r * length + p), y = Ops::load(q + r * length + p + W);
          Ops::in_register(x);
          Ops::in_register(y);
          for (int j = 0; j < MK; ++j)
            acc[r][j] = Ops::fma(y, odd[j], Ops::fma(x, even[j], acc[r][j]));
        }
      }
    } else {
      for (std::int64_t p = 0; p < length; p += W) {
        ahead.issue();
        V key[MK];
        for (int j = 0; j < MK; ++j) {
          key[j] = Codec<E>::template load<Ops>(k + j * k_stride, p);
          Ops::in_register(key[j]);
        }
        for (int r = 0; r < RC; ++r) {
          V x = Ops::load(q + r * length + p);
          Ops::in_register(x);
          for (int j = 0; j < MK; ++j) acc[r][j] = Ops::fma(x, key[j], acc[r][j]);
        }
      }
    }
    // Bounds known at compile time: with a running j, GCC -O2 warns of undefined behaviour in
    // the remainder loop that never runs.
    constexpr int fours = MK / 4 * 4;
    for (int r = 0; r < RC; ++r) {
      for (int j = 0; j < fours; j += 4)
        Ops::reduce4(acc[r][j], acc[r][j + 1], acc[r][j + 2], acc[r][j + 3], s + r * (BC + W) + j);
      for (int j = fours; j < MK; ++j) s[r * (BC + W) + j] = Ops::reduce_add(acc[r][j]);
    }
  }

  // Keys per micro-tile: the accumulator budget over the rows, in fours for reduce4.
  static constexpr int keys_per_micro(int rc) {
    const int mk = std::min(8, std::max(1, kAccumulators / rc));
    return mk >= 4 ? mk / 4 * 4 : mk;
  }
  // Vectors of output columns per P·V micro-tile: the accumulator budget over the rows (in
  // whole pairs when paired).
  template <class E>
  static constexpr int columns_per_micro(int rc) {
    const int cc = std::min(8, std::max(1, kAccumulators / rc));
    return kPaired<E> ? std::max(2, cc / 2 * 2) : cc;
  }

  template <int RC, class E>
  void qk_rows(int r0, const E* k, std::int64_t k_stride, int keys, int offset,
               PrefetchCursor& ahead) const {
    constexpr int MK = keys_per_micro(RC);
    float* s = s_ + r0 * (BC + W) + offset;
    int j = 0;
    for (; j + MK <= keys; j += MK)
      qk_micro<RC, MK>(r0, k + j * k_stride, k_stride, s + j, ahead);
    for (; j < keys; ++j) qk_micro<RC, 1>(r0, k + j * k_stride, k_stride, s + j, ahead);
  }

  template <class E, int RC = kRowBlock>
  void pv_block(int r0, const E* v, std::int64_t v_stride, int keys, int offset,
                PrefetchCursor& ahead) const {
    if constexpr (RC > 1) {
      if (rows_ - r0 < RC) return pv_block<E, RC - 1>(r0, v, v_stride, keys, offset, ahead);
    }
    pv_rows<RC>(r0, v, v_stride, keys, offset, ahead);
  }

  // Rows [r0, r0 + min(kRowBlock, rows − r0)) against `keys` keys, by micro-tiles of that height.
  template <class E, int RC = kRowBlock>
  void qk_block(int r0, const E* k, std::int64_t k_stride, int keys, int offset,
                PrefetchCursor& ahead) const {
    if constexpr (RC > 1) {
      if (rows_ - r0 < RC) return qk_block<E, RC - 1>(r0, k, k_stride, keys, offset, ahead);
    }
    qk_rows<RC>(r0, k, k_stride, keys, offset, ahead);
  }

  // o rows r0..r0+RC, CC vectors of columns from column c0: loaded once, scaled by alpha, then
  // every key adds p·v.
  template <int RC, int CC, class E>
  void pv_micro(int r0, std::int64_t c0, const E* __restrict v, std::int64_t v_stride, int keys,
                int offset, PrefetchCursor& ahead) const {
    V acc[RC][CC];
    float* o = o_ + r0 * dvp_ + c0;
    const float* p = s_ + r0 * (BC + W) + offset;
    for (int r = 0; r < RC; ++r) {
      const V alpha = Ops::set1(offset == 0 ? alpha_[r0 + r] : 1.0f);
      for (int c = 0; c < CC; ++c) acc[r][c] = Ops::mul(Ops::load(o + r * dvp_ + c * W), alpha);
    }
    for (int j = 0; j < keys; ++j) {
      // Indexed, not stepped (see column_tiles.hpp); columns by value index, which the codec
      // maps to its blocks.
      const E* row = v + j * v_stride;
      ahead.issue();
      V x[CC];
      if constexpr (kPaired<E>) {
        static_assert(CC % 2 == 0, "paired columns come in whole pairs of vectors");
        for (int c = 0; c < CC; c += 2) {
          Codec<E>::template load_pairs<Ops>(row, c0 + c * W, x[c], x[c + 1]);
          Ops::in_register(x[c]);
          Ops::in_register(x[c + 1]);
        }
      } else {
        for (int c = 0; c < CC; ++c) {
          x[c] = Codec<E>::template load<Ops>(row, c0 + c * W);
          Ops::in_register(x[c]);
        }
      }
      for (int r = 0; r < RC; ++r) {
        const V pj = Ops::broadcast(p + r * (BC + W) + j);
        for (int c = 0; c < CC; ++c) acc[r][c] = Ops::fma(pj, x[c], acc[r][c]);
      }
    }
    for (int r = 0; r < RC; ++r)
      for (int c = 0; c < CC; ++c) Ops::store(o + r * dvp_ + c * W, acc[r][c]);
  }

  // The last `vectors` column vectors (at most CC) by a micro-tile of exactly that width; paired
  // widths are even, so they step by two.
  template <int RC, int CC, class E>
  void pv_remainder(int r0, std::int64_t c0, int vectors, const E* v, std::int64_t v_stride,
                    int keys, int offset, PrefetchCursor& ahead) const {
    constexpr int step = kPaired<E> ? 2 : 1;
    if constexpr (CC > 0) {
      if (vectors == CC)
        pv_micro<RC, CC>(r0, c0, v, v_stride, keys, offset, ahead);
      else
        pv_remainder<RC, CC - step>(r0, c0, vectors, v, v_stride, keys, offset, ahead);
    }
  }

  template <int RC, class E>
  void pv_rows(int r0, const E* v, std::int64_t v_stride, int keys, int offset,
               PrefetchCursor& ahead) const {
    constexpr int CC = columns_per_micro<E>(RC);
    const std::int64_t vectors = dvp_ / W;
    std::int64_t c = 0;
    for (; c + CC <= vectors; c += CC)
      pv_micro<RC, CC>(r0, c * W, v, v_stride, keys, offset, ahead);
    if (c < vectors)
      pv_remainder<RC, CC>(r0, c * W, int(vectors - c), v, v_stride, keys, offset, ahead);
  }

  template <bool MASKED>
  void softmax_rows(int keys) {
    const int padded = int(round_up(keys, W));
    for (int r = 0; r < rows_; ++r) {
      float* s = s_ + r * (BC + W);
      std::fill(s + keys, s + padded, simd::negative_infinity);
      V tile_max = Ops::set1(simd::negative_infinity);
      for (int j = 0; j < padded; j += W) tile_max = Ops::max(tile_max, Ops::load(s + j));
      const SoftmaxStep<Ops> step(m_[r], Ops::reduce_max(tile_max));
      V sum = Ops::zero();
      for (int j = 0; j < padded; j += W) {
        const V x = Ops::load(s + j);
        V p = step.probability(x);
        if constexpr (MASKED)  // −FLT_MAX > x: x is −inf
          p = Ops::select_greater(Ops::set1(-std::numeric_limits<float>::max()), x, p,
                                  Ops::set1(kHiddenProbability));
        Ops::store(s + j, p);
        sum = Ops::add(sum, p);
      }
      step.fold(l_[r], Ops::reduce_add(sum));
      alpha_[r] = step.row_alpha;
    }
  }

  template <class E>
  void accumulate_visible_rows(const E* v, std::int64_t v_stride, int keys, int offset) {
    if (offset == 0)
      for (int r = 0; r < rows_; ++r)
        for (std::int64_t c = 0; c < dvp_; ++c) o_[r * dvp_ + c] *= alpha_[r];
    const auto at = [&](std::int64_t r, std::int64_t c) -> float& {
      if constexpr (kPaired<E>) {  // o holds each 2·W columns' even ones, then their odd ones
        const std::int64_t k = c % (2 * W);
        c = c - k + (k % 2) * W + k / 2;
      }
      return o_[r * dvp_ + c];
    };
    accumulate_visible(
        rows_, keys, v, v_stride, dv_,
        [&](std::int64_t r, std::int64_t j) { return s_[r * (BC + W) + offset + j]; }, at);
  }

  int rows_;
  std::int64_t d_, dv_, dp_, dvp_;
  float *q_, *s_, *o_, *m_, *l_, *alpha_;
  const DecodeProblem* pr_ = nullptr;
  BlockRows block_;  // the block's rows and the keys they see
  bool masked_ = false;  // some row of the block hides some key of the current tile
  static_assert(kMaxRows <= kMaxTileRows, "a block's rows must fit a BlockRows");
};

}  // namespace detail
}  // namespace MULTIHEAD_ISA_NAMESPACE
}  // namespace multihead
