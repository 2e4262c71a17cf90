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
//    the states of one block are merged, in split order, after all units ran.
//  - Two tile paths, by rows per block. Few rows (MHA, small GQA groups; rows ≤ W/2), or up to
//    2·W rows of wide heads (head dim ≥ 256: MLA's absorbed 576): rows stay row-major and Q·Kᵀ is
//    vectorised along the head dim, one lane reduction per score; P·V broadcasts each probability
//    over a row of V. Many rows of narrow heads: the fused kernel's transposed tiles
//    (microkernel.hpp), with as many row vectors as the block needs.
//  - Storage. The row-major tiles read float, bf16 and fp16 rows in place, widening as they
//    load; the transposed tiles get bf16 / fp16 rows widened a tile at a time into a per-thread
//    buffer. Every product runs in fp32.
//  - Tiles of up to BC tokens (fewer when kv_groups is large, to stay in L2), gathered in a
//    paged cache from the runs of consecutive blocks: one softmax step per tile whatever the
//    block size. The next tile's rows are prefetched while the current one is computed, a few
//    lines per inner step or micro-tile (PrefetchCursor, microkernel.hpp).
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

#include "compiled.hpp"
#include "kernel_args.hpp"
#include "kv_cache.hpp"
#include "latent_cache.hpp"
#include "microkernel.hpp"
#include "paged_kv_cache.hpp"
#include "paged_latent_cache.hpp"
#include "parallel.hpp"
#include "score_pass.hpp"
#include "scratch.hpp"
#include "state.hpp"

namespace multihead {
inline namespace MULTIHEAD_ISA_NAMESPACE {
namespace detail {

// ---- Where the cached rows are -------------------------------------------------------------

// `keys` consecutive cached tokens of one sequence: group 0's K row (V row) of the first token
// at k (v), tokens k_stride (v_stride) elements apart, groups k_group (v_group) apart.
template <class S>
struct KvRun {
  const S* k = nullptr;
  const S* v = nullptr;
  std::int64_t k_stride = 0, v_stride = 0, k_group = 0, v_group = 0;
  int keys = 0;
};

// Where every batch entry's cached rows are: the one source the decode kernel reads, so that
// the kernel is compiled once per storage type whatever holds the rows. Token t of entry b is
//  - paged caches (tables): row t % block_size of block tables[b][t / block_size];
//  - packed varlen buffers (first = cu_seqlens): row first[b] + t of block 0;
//  - views [batch, tokens, groups, dim] (a contiguous cache is one): row t of block b.
// Blocks lie k_block (v_block) elements apart; in a block, tokens k_stride (v_stride) apart and a
// token's groups k_group (v_group) apart. A run ends at a block's end (paged) and at the entry's.
template <class S>
struct KvRows {
  using storage_type = S;
  const S* k = nullptr;
  const S* v = nullptr;
  std::int64_t k_block = 0, v_block = 0, k_stride = 0, v_stride = 0, k_group = 0, v_group = 0;
  const std::int64_t* const* tables = nullptr;  // paged: per entry, its block ids
  std::int64_t block_size = 0;                  // paged: tokens per block
  const std::int64_t* first = nullptr;          // packed: entry b is tokens [first[b], first[b + 1])
  const std::int64_t* lengths = nullptr;        // paged: per entry, its length
  std::int64_t tokens = 0;                      // views: every entry's length

  std::int64_t length(std::int64_t b) const {
    return lengths != nullptr ? lengths[b] : first != nullptr ? first[b + 1] - first[b] : tokens;
  }
  KvRun<S> run(std::int64_t b, std::int64_t j, std::int64_t most) const {
    std::int64_t block = b, row = j, keys = std::min(most, length(b) - j);
    if (tables != nullptr) {
      block = tables[b][j / block_size];
      row = j % block_size;
      keys = std::min(keys, block_size - row);
    } else if (first != nullptr) {
      block = 0;
      row = first[b] + j;
    }
    return {k + block * k_block + row * k_stride, v + block * v_block + row * v_stride,
            k_stride, v_stride, k_group, v_group, int(keys)};
  }
};

// K/V views [batch, kv_len, kv_groups, dim]: one run per tile.
template <class S>
KvRows<S> view_rows(const TensorView<const S>& k, const TensorView<const S>& v) {
  KvRows<S> rows;
  rows.k = k.data();
  rows.v = v.data();
  rows.k_block = k.batch_stride();
  rows.v_block = v.batch_stride();
  rows.k_stride = k.token_stride();
  rows.v_stride = v.token_stride();
  rows.k_group = k.head_stride();
  rows.v_group = v.head_stride();
  rows.tokens = k.tokens();
  return rows;
}

// Sequences of a paged cache (PagedKvCache, PagedLatentCache) with their block tables and
// lengths; a token's group rows are dense, d (dv) apart. A latent cache's V rows are its K
// rows' first elements.
template <class Cache>
KvRows<typename Cache::storage_type> paged_rows(const Cache& cache,
                                                const std::int64_t* const* tables,
                                                const std::int64_t* lengths, std::int64_t d,
                                                std::int64_t dv) {
  KvRows<typename Cache::storage_type> rows;
  rows.k = cache.key_block(0);
  rows.v = cache.value_block(0);
  rows.k_block = cache.key_block_stride();
  rows.v_block = cache.value_block_stride();
  rows.k_stride = cache.key_token_stride();
  rows.v_stride = cache.value_token_stride();
  rows.k_group = d;
  rows.v_group = dv;
  rows.tables = tables;
  rows.block_size = cache.block_size();
  rows.lengths = lengths;
  return rows;
}

// ---- The problem and its per-thread buffers ------------------------------------------------

struct DecodeProblem {
  TensorView<const float> q;
  TensorView<float> o;
  float* lse;
  KernelShape shape;  // kv_len: the longest sequence
  float scale;
  const ScorePass* pass;
};

inline std::int64_t round_up(std::int64_t n, std::int64_t m) { return (n + m - 1) / m * m; }

// Row r of group g's row space: query position r / group_size, head g·group_size + r % group_size.
// Writes its normalised output (out: dv unnormalised values) and log-sum-exp.
inline void store_row(const DecodeProblem& pr, std::int64_t b, std::int64_t g, std::int64_t r,
                      const float* out, float max, float sum) {
  const std::int64_t gs = pr.shape.group_size(), position = r / gs, head = g * gs + r % gs;
  const float inverse = inverse_sum(sum);
  float* target = pr.o.row(b, position, head);
  for (std::int64_t c = 0; c < pr.shape.value_dim; ++c) target[c] = out[c] * inverse;
  if (pr.lse != nullptr)
    pr.lse[(b * pr.shape.heads + head) * pr.shape.q_len + position] = log_sum_exp(max, sum);
}

// Where a unit's rows are, for the score modifiers and the sinks: batch entry, KV group, first
// row, the sequence's length, and whether this unit holds the first keys of its rows (the
// sinks join the softmax there, once).
struct BlockSite {
  std::int64_t b = 0, g = 0, r0 = 0, length = 0;
  bool first_split = true;
};

// ---- Few rows, or wide heads: row-major tiles ----------------------------------------------

// Q rows (pre-scaled) q[r][dp], scores s[r][BC], output o[r][dvp]; dp, dvp: the dims rounded up
// to whole vectors (the padding of Q and of widened tiles is zero, so it adds nothing).
template <class Ops, int D, int DV>
class RowTiles {
  using V = typename Ops::V;
  static constexpr int W = Ops::W;
  // Accumulators per micro-tile: 16 of the 32 AVX-512 registers, 8 of AVX2's 16.
  static constexpr int kAccumulators = 2 * Ops::MRJ;
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
  static constexpr int BC = Ops::BC;
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
  bool reads_in_place() const { return dp_ == d_ && dvp_ == dv_; }
  std::int64_t key_pitch() const { return dp_; }
  std::int64_t value_pitch() const { return dvp_; }

  // bf16 rows of fixed dims in whole pairs of vectors are widened a pair at a time, the even-
  // and odd-indexed values apart (Ops::loadu_pairs: a shift and a mask, where widening vector
  // by vector takes a lane-crossing shuffle and a shift each). Q is packed in that order, and o
  // accumulates in it until finish(). Such rows are always read in place (dp_ = d_, dvp_ =
  // dv_), so the storage type S that packs Q is the element type E the micro-tiles see. D1 bf16
  // (2 threads, 8192 tokens, medians of 8 interleaved runs): 0.775 → 0.641 ms.
  template <class S>
  static constexpr bool kPaired = std::is_same_v<S, bf16> && D > 0 && DV > 0 &&
                                  D % (2 * W) == 0 && DV % (2 * W) == 0;

  template <class S>
  void begin(const DecodeProblem& pr, const BlockSite& at) {
    pr_ = &pr;
    pr.pass->block_rows(block_, at.b, at.g, at.r0, rows_, rows_, pr.shape.q_len, at.length);
    for (int r = 0; r < rows_; ++r) {
      const float* source = pr.q.row(at.b, block_.query[r], block_.head[r]);
      float* q = q_ + r * dp_;
      if constexpr (kPaired<S>) {
        for (std::int64_t p = 0; p < d_; p += 2 * W)
          for (int i = 0; i < W; ++i) {
            q[p + i] = source[p + 2 * i] * pr.scale;
            q[p + W + i] = source[p + 2 * i + 1] * pr.scale;
          }
      } else {
        for (std::int64_t p = 0; p < d_; ++p) q[p] = source[p] * pr.scale;
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
    if (pr_->pass->per_score() || block_.masked_start(j0) || block_.masked_end(j0, keys))
      pr_->pass->apply(s_ + offset, BC + W, 1, keys, j0, block_);
  }

  // The online-softmax step, per row: new max, the factor alpha carrying the old state over,
  // p = exp(s − max) in place (0 past `keys`, so whole vectors can be summed), new sum.
  void softmax(int keys) {
    const int padded = int(round_up(keys, W));
    for (int r = 0; r < rows_; ++r) {
      float* s = s_ + r * (BC + W);
      std::fill(s + keys, s + padded, simd::negative_infinity);
      V tile_max = Ops::set1(simd::negative_infinity);
      for (int j = 0; j < padded; j += W) tile_max = Ops::max(tile_max, Ops::load(s + j));
      const float new_max = std::max(m_[r], Ops::reduce_max(tile_max));
      const V safe_max = Ops::set1(new_max == simd::negative_infinity ? 0.0f : new_max);
      V sum = Ops::zero();
      for (int j = 0; j < padded; j += W) {
        const V p = Ops::exp(Ops::sub(Ops::load(s + j), safe_max));
        Ops::store(s + j, p);
        sum = Ops::add(sum, p);
      }
      alpha_[r] = rescale_factor(m_[r], new_max);
      l_[r] = l_[r] * alpha_[r] + Ops::reduce_add(sum);
      m_[r] = new_max;
    }
  }

  // o = alpha·o + p·v over the keys at tile positions [offset, offset + keys); alpha is applied
  // with the first run of a tile (offset 0). The next tile's rows are requested meanwhile.
  template <class E>
  void accumulate(const E* v, std::int64_t v_stride, int keys, int offset,
                  PrefetchCursor& ahead) {
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
        for (int j = 0; j < MK; ++j) Ops::loadu_pairs(k + j * k_stride + p, even[j], odd[j]);
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
          key[j] = Ops::loadu(k + j * k_stride + p);
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
    const E* row = v + c0;
    for (int j = 0; j < keys; ++j, row += v_stride) {
      ahead.issue();
      V x[CC];
      if constexpr (kPaired<E>) {
        static_assert(CC % 2 == 0, "paired columns come in whole pairs of vectors");
        for (int c = 0; c < CC; c += 2) {
          Ops::loadu_pairs(row + c * W, x[c], x[c + 1]);
          Ops::in_register(x[c]);
          Ops::in_register(x[c + 1]);
        }
      } else {
        for (int c = 0; c < CC; ++c) {
          x[c] = Ops::loadu(row + c * W);
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

  int rows_;
  std::int64_t d_, dv_, dp_, dvp_;
  float *q_, *s_, *o_, *m_, *l_, *alpha_;
  const DecodeProblem* pr_ = nullptr;
  BlockRows block_;  // the block's rows and the keys they see
  static_assert(kMaxRows <= kMaxTileRows, "a block's rows must fit a BlockRows");
};

// ---- Many rows: the fused kernel's transposed tiles ----------------------------------------

template <class Ops, int D, int DV, int NV>
class ColumnTiles {
  using T = Tiles<Ops, D, DV, NV>;
  using V = typename Ops::V;
  static constexpr int W = Ops::W, BR = T::BR;

 public:
  static constexpr int BC = T::BC;

  static std::int64_t scratch_floats(int, std::int64_t d, std::int64_t dv) {
    return (d + BC + dv + 3) * BR + dv;
  }

  ColumnTiles(float* scratch, int rows, std::int64_t d, std::int64_t dv)
      : rows_(rows), d_(D ? D : d), dv_(DV ? DV : dv) {
    qt_ = scratch;
    st_ = qt_ + d_ * BR;
    ot_ = st_ + BC * BR;
    limit_ = ot_ + dv_ * BR;
    max_sum_ = limit_ + BR;
    row_ = max_sum_ + 2 * BR;
  }

  // The transposed tiles broadcast K/V elements one by one: they read float rows in place
  // (kReads) and need bf16 / fp16 rows widened into a tile first.
  template <class S>
  static constexpr bool kReads = std::is_same_v<S, float>;
  bool reads_in_place() const { return true; }
  std::int64_t key_pitch() const { return d_; }
  std::int64_t value_pitch() const { return dv_; }

  // Packs the block's rows into Qt; padding rows get zero queries and the last real row's
  // limit, so they compute finite values that are never stored. S, the cache's storage type
  // (RowTiles orders Q by it), changes nothing here, in prefetch_steps or in finish.
  template <class S>
  void begin(const DecodeProblem& pr, const BlockSite& at) {
    pr_ = &pr;
    pr.pass->block_rows(block_, at.b, at.g, at.r0, rows_, BR, pr.shape.q_len, at.length);
    for (int r = 0; r < BR; ++r)
      pr.pass->start(block_, r, at.first_split, max_sum_[r], max_sum_[BR + r]);
    pack_transposed_rows(pr.q, at.b, at.g, pr.shape.group_size(), at.r0, rows_, BR, d_, qt_);
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
    return (keys + Ops::MRJ - 1) / Ops::MRJ + (dv_ + Ops::MRC - 1) / Ops::MRC;
  }

  template <class E>
  void scores(const E* k, std::int64_t k_stride, int keys, std::int64_t j0, int offset,
              PrefetchCursor& ahead) {
    static_assert(std::is_same_v<E, float>, "transposed tiles read float rows");
    if (offset == 0)
      for (int v = 0; v < NV; ++v) tile_max_[v] = Ops::set1(simd::negative_infinity);
    T::scored_tile(*pr_->pass, block_, j0, qt_, k, k_stride, d_, pr_->scale, keys, limit_,
                   st_ + offset * BR, tile_max_, ahead);
  }

  void softmax(int keys) { T::softmax_tile(st_, keys, tile_max_, m_, l_, alpha_); }

  template <class E>
  void accumulate(const E* v, std::int64_t v_stride, int keys, int offset,
                  PrefetchCursor& ahead) {
    static_assert(std::is_same_v<E, float>, "transposed tiles read float rows");
    // Later runs of a tile add to outputs already rescaled by the first: factor 1.
    if (offset > 0)
      for (int x = 0; x < NV; ++x) alpha_[x] = Ops::set1(1.0f);
    T::pv_tile(ot_, st_ + offset * BR, keys, v, v_stride, dv_, alpha_, ahead);
  }

  // The state after the last tile, row by row: finish() spills the running max and sum.
  template <class S>
  void finish() {
    for (int v = 0; v < NV; ++v) {
      Ops::store(max_sum_ + v * W, m_[v]);
      Ops::store(max_sum_ + BR + v * W, l_[v]);
    }
  }
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
  const DecodeProblem* pr_ = nullptr;
  BlockRows block_;  // the block's rows and the keys they see
  V m_[NV], l_[NV], alpha_[NV], tile_max_[NV];
};

// ---- One unit: a block of rows over one split of the cache ---------------------------------

// Widens (or, for float rows that need padding, copies) `keys` rows into a tile of pitch
// `pitch`, zero-padded: what the products read when rows cannot be read in place.
template <class S>
void widen_rows(const S* rows, std::int64_t stride, int keys, std::int64_t dim,
                std::int64_t pitch, float* tile) {
  for (int j = 0; j < keys; ++j) {
    convert(rows + j * stride, tile + j * pitch, dim);
    std::fill(tile + j * pitch + dim, tile + (j + 1) * pitch, 0.0f);
  }
}

// Up to tile_keys consecutive tokens, gathered from one run or, in a paged cache, from the
// runs of several blocks: one online-softmax step per tile, whatever the block size.
template <class S, int kMaxRuns>
struct KvTile {
  KvRun<S> runs[kMaxRuns];
  int count = 0, keys = 0;
};

// The rows of one run for the next tile's prefetch, K then V, appended to `regions`. When a
// token's group rows lie within its token stride (a KvCache, a paged block), one region per
// operand: the bytes from group 0's row to the end of the last group's. Otherwise (head-major
// views, [batch, groups, tokens, dim]) that span would take in other tokens' rows, most of the
// cache, so one region per group. V only where it is not K's rows' first elements (as in a
// latent cache).
template <class S>
void add_prefetch_regions(const KvRun<S>& run, std::int64_t groups, std::int64_t d,
                          std::int64_t dv, std::vector<TilePrefetch>& regions) {
  const auto add = [&](const S* rows, std::int64_t stride, std::int64_t group, std::int64_t dim) {
    const std::int64_t span = (groups - 1) * group + dim;
    if (span <= stride) {
      regions.emplace_back(rows, stride, run.keys, span);
      return;
    }
    for (std::int64_t g = 0; g < groups; ++g)
      regions.emplace_back(rows + g * group, stride, run.keys, dim);
  };
  add(run.k, run.k_stride, run.k_group, d);
  const bool v_in_k = static_cast<const void*>(run.v) == static_cast<const void*>(run.k) &&
                      run.v_stride == run.k_stride && (groups == 1 || run.v_group == run.k_group) &&
                      dv <= d;
  if (!v_in_k) add(run.v, run.v_stride, run.v_group, dv);
}

// Calls of the prefetch cursor that one KV group's pass over `tile` makes: scores() and
// accumulate() run once per run when the rows are read in place (a paged tile gathers several
// runs), once for the whole tile when they are widened first. Counting the tile as one run
// paced the requests of a paged MQA tile (four 16-token runs) three times too fast:
// decode/D2-paged16/fp32 at 2 threads 2.07 → 1.90 ms (medians of 6 alternating runs).
template <class Path, class S, int kMaxRuns>
std::int64_t tile_prefetch_steps(const Path& path, const KvTile<S, kMaxRuns>& tile) {
  bool in_place = false;
  if constexpr (Path::template kReads<S>) in_place = path.reads_in_place();
  if (!in_place) return path.template prefetch_steps<S>(tile.keys);
  std::int64_t steps = 0;
  for (int i = 0; i < tile.count; ++i) steps += path.template prefetch_steps<S>(tile.runs[i].keys);
  return steps;
}

// Group g's pass over a tile of keys [j0, j0 + tile.keys) whose rows `path` reads where they
// are: the scores run by run, the online-softmax step, then p·v run by run.
template <class Path, class S, int kMaxRuns>
void attend_tile_in_place(Path& path, const KvTile<S, kMaxRuns>& tile, std::int64_t g,
                          std::int64_t j0, PrefetchCursor& cursor) {
  for (int i = 0, offset = 0; i < tile.count; offset += tile.runs[i++].keys) {
    const KvRun<S>& run = tile.runs[i];
    path.scores(run.k + g * run.k_group, run.k_stride, run.keys, j0 + offset, offset, cursor);
  }
  path.softmax(tile.keys);
  for (int i = 0, offset = 0; i < tile.count; offset += tile.runs[i++].keys) {
    const KvRun<S>& run = tile.runs[i];
    path.accumulate(run.v + g * run.v_group, run.v_stride, run.keys, offset, cursor);
  }
}

// Runs paths[g] (one per KV group) over keys [begin, end) of batch entry b, a tile of at most
// tile_keys tokens at a time, the groups of a tile one after another.
template <class Path, class Source>
void attend_keys(Path* paths, std::int64_t groups, const Source& source, std::int64_t b,
                 std::int64_t begin, std::int64_t end, std::int64_t tile_keys, std::int64_t d,
                 std::int64_t dv, float* tile) {
  using S = typename Source::storage_type;
  using Tile = KvTile<S, Path::BC>;
  const auto tile_at = [&](std::int64_t j) {
    Tile t;
    const std::int64_t want = std::min(tile_keys, end - j);
    while (t.keys < want) {
      t.runs[t.count] = source.run(b, j + t.keys, want - t.keys);
      t.keys += t.runs[t.count++].keys;
    }
    return t;
  };
  Tile current = tile_at(begin);
  thread_local std::vector<TilePrefetch> next_rows;  // kept: no allocation per tile
  for (std::int64_t j = begin; j < end;) {
    const Tile next = j + current.keys < end ? tile_at(j + current.keys) : Tile{};
    next_rows.clear();
    for (int i = 0; i < next.count; ++i)
      add_prefetch_regions(next.runs[i], groups, d, dv, next_rows);
    PrefetchCursor cursor(next_rows.data(), int(next_rows.size()));
    cursor.pace(groups * tile_prefetch_steps(paths[0], current));
    for (std::int64_t g = 0; g < groups; ++g) {
      Path& path = paths[g];
      bool done = false;
      if constexpr (Path::template kReads<S>) {
        if (path.reads_in_place()) {
          attend_tile_in_place(path, current, g, j, cursor);
          done = true;
        }
      }
      if (!done) {  // widened into `tile`, K then V in turn
        const std::int64_t kp = path.key_pitch(), vp = path.value_pitch();
        for (int i = 0, offset = 0; i < current.count; offset += current.runs[i++].keys) {
          const KvRun<S>& run = current.runs[i];
          widen_rows(run.k + g * run.k_group, run.k_stride, run.keys, d, kp, tile + offset * kp);
        }
        path.scores(static_cast<const float*>(tile), kp, current.keys, j, 0, cursor);
        path.softmax(current.keys);
        for (int i = 0, offset = 0; i < current.count; offset += current.runs[i++].keys) {
          const KvRun<S>& run = current.runs[i];
          widen_rows(run.v + g * run.v_group, run.v_stride, run.keys, dv, vp, tile + offset * vp);
        }
        path.accumulate(static_cast<const float*>(tile), vp, current.keys, 0, cursor);
      }
    }
    j += current.keys;
    current = next;
  }
  for (std::int64_t g = 0; g < groups; ++g) paths[g].template finish<S>();
}

struct DecodeUnit {
  std::int64_t b, r0;       // batch entry, first row of the block (in every group)
  std::int64_t begin, end;  // keys of this split
  std::int64_t state;       // slot of the split's states, or -1: the block is not split
  int rows;
  bool first_split;         // holds the block's first keys (its rows' sinks join here)
};

struct DecodeMerge {
  std::int64_t b, r0, first_state, splits;
  int rows;
};

// The calling thread's plan, kept between calls like the per-thread scratch.
struct DecodePlan {
  std::vector<DecodeUnit> units;
  std::vector<DecodeMerge> merges;
  std::vector<float> states;
};

// The smallest split worth its merge: the merge costs about one key's work per row.
constexpr std::int64_t kMinSplitKeys = 256;

// Tokens per tile: as many as keep a tile's K and V, all groups, near 256 KiB, so that it and
// the next one (being prefetched) stay in L2; at least 8, at most the path's tile size.
template <class Path, class S>
std::int64_t tile_tokens(std::int64_t groups, std::int64_t d, std::int64_t dv) {
  const std::int64_t per_token = groups * (d + dv) * std::int64_t(sizeof(S));
  return std::clamp<std::int64_t>((std::int64_t{256} << 10) / per_token / 4 * 4, 8, Path::BC);
}

// Units: batch entry × block of rows × split of the cache, every KV group inside, so that a
// unit reads its part of the cache in address order. States of a split unit: per group
// [rows][dv] outputs, then rows maxima, then rows sums.
template <class Path, class Source>
void run_decode_blocks(const DecodeProblem& pr, const Source& source, int block_rows,
                       int threads) {
  using S = typename Source::storage_type;
  const KernelShape& s = pr.shape;
  const std::int64_t rows_total = s.q_len * s.group_size();
  const std::int64_t blocks = (rows_total + block_rows - 1) / block_rows;
  const std::int64_t d = s.head_dim, dv = s.value_dim, groups = s.kv_groups;
  const std::int64_t tile_keys = tile_tokens<Path, S>(groups, d, dv);

  // Split length: even shares of all keys for ~4 units per thread (dynamic scheduling evens
  // out ragged lengths), never below kMinSplitKeys, in whole tiles; one thread never splits.
  std::int64_t total_keys = 0;
  for (std::int64_t b = 0; b < s.batch; ++b) total_keys += source.length(b);
  const std::int64_t target_units = threads > 1 ? 4 * std::int64_t(threads) : 1;
  const std::int64_t split =
      round_up(std::max(kMinSplitKeys, total_keys * blocks / target_units + 1), tile_keys);

  // The calling thread's plan; a reference, since the lambdas below run on other threads,
  // where the name of a thread_local means their own copy.
  thread_local DecodePlan calling_thread_plan;
  BlockRows block;  // each block's rows in turn, for the keys they see
  DecodePlan& plan = calling_thread_plan;
  plan.units.clear();
  plan.merges.clear();
  const std::int64_t group_floats = block_rows * (dv + 2), slot_floats = groups * group_floats;
  std::int64_t slots = 0;
  for (std::int64_t b = 0; b < s.batch; ++b)
    for (std::int64_t index = 0; index < blocks; ++index) {
      const std::int64_t r0 = index * block_rows;
      const int rows = int(std::min<std::int64_t>(block_rows, rows_total - r0));
      pr.pass->block_rows(block, b, 0, r0, rows, rows, s.q_len, source.length(b));
      const std::int64_t begin = block.begin, end = block.end;  // the keys any row sees
      const std::int64_t splits = std::max<std::int64_t>(1, (end - begin + split - 1) / split);
      if (splits > 1) plan.merges.push_back({b, r0, slots, splits, rows});
      for (std::int64_t i = 0; i < splits; ++i)
        plan.units.push_back({b, r0, begin + i * split, std::min(end, begin + (i + 1) * split),
                              splits > 1 ? slots++ : -1, rows, i == 0});
    }
  if (plan.states.size() < static_cast<std::size_t>(slots * slot_floats))
    plan.states.resize(static_cast<std::size_t>(slots * slot_floats));

  const std::int64_t units = static_cast<std::int64_t>(plan.units.size());
  const std::int64_t path_floats = round_up(Path::scratch_floats(block_rows, d, dv), 16);
  const std::int64_t scratch =
      groups * path_floats + tile_keys * round_up(std::max(d, dv), simd::Ops::W);
  parallel_dynamic(units, int(std::min<std::int64_t>(threads, units)), [&](int, std::int64_t i) {
    const DecodeUnit& u = plan.units[static_cast<std::size_t>(i)];
    float* buffer = thread_scratch(scratch);
    thread_local std::vector<Path> paths;  // kept, like the scratch: no allocation per unit
    paths.clear();
    for (std::int64_t g = 0; g < groups; ++g) {
      paths.emplace_back(buffer + g * path_floats, u.rows, d, dv);
      const BlockSite site{u.b, g, u.r0, source.length(u.b), u.first_split};
      paths.back().template begin<S>(pr, site);
    }
    attend_keys(paths.data(), groups, source, u.b, u.begin, u.end, tile_keys, d, dv,
                buffer + groups * path_floats);
    for (std::int64_t g = 0; g < groups; ++g) {
      const Path& path = paths[static_cast<std::size_t>(g)];
      if (u.state < 0) {
        for (int r = 0; r < u.rows; ++r)
          store_row(pr, u.b, g, u.r0 + r, path.out(r), path.max(r), path.sum(r));
        continue;
      }
      float* state = plan.states.data() + u.state * slot_floats + g * group_floats;
      for (int r = 0; r < u.rows; ++r) {
        std::copy(path.out(r), path.out(r) + dv, state + r * dv);
        state[block_rows * dv + r] = path.max(r);
        state[block_rows * (dv + 1) + r] = path.sum(r);
      }
    }
  });

  // Merge the splits of each block in order, then normalise.
  const std::int64_t merges = static_cast<std::int64_t>(plan.merges.size());
  if (merges == 0) return;
  parallel_chunks(merges, int(std::min<std::int64_t>(threads, merges)),
                  [&](int, std::int64_t first, std::int64_t last) {
    for (std::int64_t i = first; i < last; ++i) {
      const DecodeMerge& m = plan.merges[static_cast<std::size_t>(i)];
      for (std::int64_t g = 0; g < groups; ++g) {
        float* into = plan.states.data() + m.first_state * slot_floats + g * group_floats;
        float* max = into + block_rows * dv;
        float* sum = max + block_rows;
        for (std::int64_t split_index = 1; split_index < m.splits; ++split_index) {
          const float* from = into + split_index * slot_floats;
          for (int r = 0; r < m.rows; ++r)
            merge_row(into + r * dv, max[r], sum[r], from + r * dv, from[block_rows * dv + r],
                      from[block_rows * (dv + 1) + r], dv);
        }
        for (int r = 0; r < m.rows; ++r)
          store_row(pr, m.b, g, m.r0 + r, into + r * dv, max[r], sum[r]);
      }
    }
  });
}

// Picks the tile path for the block's row count: row-major for few rows, transposed with the
// fewest row vectors that hold them otherwise (blocks of equal size, at most Ops::NV vectors).
template <class Ops, int D, int DV, class Source>
void run_decode_dims(const DecodeProblem& pr, const Source& source, int threads) {
  constexpr int W = Ops::W;
  const std::int64_t rows_total = pr.shape.q_len * pr.shape.group_size();
  // Row-major tiles reduce each score across lanes once per head dim, which wide heads (MLA's
  // absorbed 576) make cheap, while the transposed tiles' Qᵀ and Oᵀ (dim × rows) would no
  // longer fit L1: measured on MLA's 16 × 576 / 512, 0.49 of FMA peak against 0.25.
  const bool wide = pr.shape.head_dim >= 256;
  if (rows_total <= W / 2 || (wide && rows_total <= RowTiles<Ops, D, DV>::kMaxRows)) {
    run_decode_blocks<RowTiles<Ops, D, DV>>(pr, source, int(rows_total), threads);
    return;
  }
  const std::int64_t blocks = (rows_total + W * Ops::NV - 1) / (W * Ops::NV);
  const std::int64_t vectors = (round_up(rows_total, blocks) / blocks + W - 1) / W;
  if (vectors == 1)
    run_decode_blocks<ColumnTiles<Ops, D, DV, 1>>(pr, source, W, threads);
  else if (vectors == 2 || Ops::NV == 2)
    run_decode_blocks<ColumnTiles<Ops, D, DV, 2>>(pr, source, 2 * W, threads);
  else if constexpr (Ops::NV >= 3)
    run_decode_blocks<ColumnTiles<Ops, D, DV, 3>>(pr, source, 3 * W, threads);
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

// Runs a checked call: its scale and score modifiers from the options, threads resolved.
template <class Source>
void decode(const TensorView<const float>& q, const TensorView<float>& o, LseOutput lse,
            const KernelOptions& options, const KernelShape& shape, const Source& source) {
  const ScorePass pass(options, shape);
  const DecodeProblem problem{q, o, lse.data, shape, resolved_scale(options, shape.head_dim),
                              &pass};
  run_decode<simd::Ops>(problem, source, resolve_threads(options.threads));
}

// A call over a contiguous cache's views keys [batch, length, kv_groups, head_dim] and values
// [..., value_dim], which may have no tokens.
template <class Storage>
void decode_cache(const TensorView<const float>& q, const TensorView<const Storage>& keys,
                  const TensorView<const Storage>& values, const TensorView<float>& o,
                  const KernelOptions& options, LseOutput lse) {
  KernelShape extents;
  extents.batch = keys.batch();
  extents.kv_len = keys.tokens();
  extents.kv_groups = keys.heads();
  extents.head_dim = keys.dim();
  extents.value_dim = values.dim();
  decode(q, o, lse, options, check_cache_call_args(q, o, lse, options, extents),
         view_rows(keys, values));
}

// A call over sequences of a paged cache, whose tokens are kv_groups K rows of head_dim and V
// rows of value_dim.
template <class Cache>
void decode_paged(const TensorView<const float>& q, const Cache& cache,
                  Span<const std::int64_t> sequences, const TensorView<float>& o,
                  const KernelOptions& options, LseOutput lse, std::int64_t kv_groups,
                  std::int64_t head_dim, std::int64_t value_dim) {
  require(sequences.data != nullptr && sequences.size > 0,
          "sequences: need at least one sequence id (size ", sequences.size, ")");
  thread_local std::vector<const std::int64_t*> tables;
  thread_local std::vector<std::int64_t> lengths;
  tables.clear();
  lengths.clear();
  KernelShape extents;
  extents.batch = sequences.size;
  extents.kv_groups = kv_groups;
  extents.head_dim = head_dim;
  extents.value_dim = value_dim;
  for (std::int64_t b = 0; b < sequences.size; ++b) {
    lengths.push_back(cache.length(sequences.data[b]));  // throws on a bad id
    tables.push_back(cache.block_table(sequences.data[b]).data());
    extents.kv_len = std::max(extents.kv_len, lengths.back());
  }
  decode(q, o, lse, options, check_cache_call_args(q, o, lse, options, extents),
         paged_rows(cache, tables.data(), lengths.data(), head_dim, value_dim));
}

}  // namespace detail

// Attention of q [batch, q_len, heads, head_dim] over k [batch, kv_len, kv_groups, head_dim]
// and v [batch, kv_len, kv_groups, value_dim] stored as float, bf16 or fp16, into o
// [batch, q_len, heads, value_dim] (and lse). The contract of fused_attention (kernel_args.hpp);
// made for small q_len (decoding, speculative verification), correct for any.
template <class Storage>
void decode_attention(const TensorView<const float>& q, const TensorView<const Storage>& k,
                      const TensorView<const Storage>& v, const TensorView<float>& o,
                      const KernelOptions& options = {}, LseOutput lse = {}) {
  static_assert(is_storage_type_v<Storage>, "decode_attention: K/V must be float, bf16 or fp16");
  const KernelShape shape = check_kernel_args(q, k, v, o, lse, options);
  detail::decode(q, o, lse, options, shape, detail::view_rows(k, v));
}

// q [cache.batch(), q_len, heads, head_dim] over the cache's length() tokens. With causal
// masking the queries are the cache's last q_len tokens (append them first). An empty cache
// gives output 0 and log-sum-exp −inf.
template <class Storage>
void decode_attention(const TensorView<const float>& q, const KvCache<Storage>& cache,
                      const TensorView<float>& o, const KernelOptions& options = {},
                      LseOutput lse = {}) {
  detail::decode_cache(q, cache.keys(), cache.values(), o, options, lse);
}

// MLA decoding: q [cache.batch(), q_len, heads, latent_dim + rope_dim] — the absorbed queries,
// W_UK folded into their first latent_dim elements — over the cache's rows as MQA, into o
// [cache.batch(), q_len, heads, latent_dim], still to be multiplied by W_UV. The default scale,
// 1/sqrt(latent_dim + rope_dim), is not MLA's: pass options.scale = 1/sqrt(nope_dim + rope_dim).
// Causal masking and an empty cache as for a KvCache.
template <class Storage>
void decode_attention(const TensorView<const float>& q, const LatentCache<Storage>& cache,
                      const TensorView<float>& o, const KernelOptions& options = {},
                      LseOutput lse = {}) {
  detail::decode_cache(q, cache.keys(), cache.values(), o, options, lse);
}

// q [sequences.size, q_len, heads, head_dim]: batch entry b attends over the tokens of paged
// sequence sequences.data[b], each with its own length (bottom-right causal per sequence;
// an empty sequence gives output 0 and log-sum-exp −inf). Throws std::invalid_argument, before
// writing anything, on an unknown or released id or a shape that differs from the cache's.
template <class Storage>
void decode_attention(const TensorView<const float>& q, const PagedKvCache<Storage>& cache,
                      Span<const std::int64_t> sequences, const TensorView<float>& o,
                      const KernelOptions& options = {}, LseOutput lse = {}) {
  detail::decode_paged(q, cache, sequences, o, options, lse, cache.kv_groups(), cache.head_dim(),
                       cache.value_dim());
}

// MLA decoding over paged sequences: q [sequences.size, q_len, heads, latent_dim + rope_dim],
// o [sequences.size, q_len, heads, latent_dim], as for a LatentCache (mind the scale); the
// sequences as for a PagedKvCache.
template <class Storage>
void decode_attention(const TensorView<const float>& q, const PagedLatentCache<Storage>& cache,
                      Span<const std::int64_t> sequences, const TensorView<float>& o,
                      const KernelOptions& options = {}, LseOutput lse = {}) {
  detail::decode_paged(q, cache, sequences, o, options, lse, 1,
                       cache.latent_dim() + cache.rope_dim(), cache.latent_dim());
}

}  // namespace MULTIHEAD_ISA_NAMESPACE
}  // namespace multihead
