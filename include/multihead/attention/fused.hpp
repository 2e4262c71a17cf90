// The fused attention kernel: FlashAttention's algorithm on the CPU.
//
// Work unit: one sequence (batch entry) × one KV group × one block of query rows. The heads/kv_groups
// query heads that share a KV head are stacked into the block's rows (row = query position ·
// group_size + head in group), so each K/V tile is read once per group and block, and MQA/GQA
// do less memory traffic per flop than MHA. For each K/V tile of BC keys: scores
// S = scale·Q·Kᵀ, the online-softmax step (state.hpp), O += P·V; one normalisation at the end.
// The score matrix is never stored: memory per thread is O(block · (head_dim + value_dim + BC)).
//
// Masks and modifiers (modifiers.hpp, score_pass.hpp): each row sees a range of keys (causal,
// sliding window); tiles outside every row's range are never visited, tiles inside all of them
// run unmasked, and only tiles that cross a range's end are masked — in the Q·Kᵀ epilogue for
// a causal diagonal, by the ScorePass for a window's start and for every per-score modifier.
// Sinks are the online softmax's starting state.
//
// Threads: units are pairs of query blocks (block i with block n−1−i of the same sequence and
// group) so that causal costs even out, handed out dynamically. Packed sequences (varlen.hpp)
// are units of their own lengths. Each block is computed by
// one thread in a fixed order, so the results are bitwise identical for any thread count.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

#include "../core/compiled.hpp"
#include "../core/parallel.hpp"
#include "../core/scratch.hpp"
#include "../simd/convert.hpp"
#include "activations.hpp"
#include "column_tiles.hpp"
#include "options.hpp"
#include "prefetch.hpp"
#include "score_pass.hpp"
#include "shape.hpp"
#include "state.hpp"

namespace multihead {
inline namespace MULTIHEAD_ISA_NAMESPACE {
namespace detail {

// A block's buffers, laid out in the running thread's scratch (scratch.hpp): nothing is
// allocated per call. K/V tiles of bf16 / fp16 rows that the tiles cannot read in place are
// widened into kt and vt first (`widened`); the bf16 products (`pairs`) take Qᵀ in pairs in
// qt's place, and tiles of P and V in pairs (products.hpp).
class FusedWorkspace {
 public:
  static std::int64_t floats(std::int64_t head_dim, std::int64_t value_dim, int block_rows,
                             int tile_keys, bool widened, bool pairs) {
    return (head_dim + value_dim + tile_keys + 3) * block_rows +
           (widened ? (head_dim + value_dim) * tile_keys : 0) +
           (pairs ? tile_keys / 2 * (block_rows + value_dim) : 0);
  }

  FusedWorkspace(std::int64_t head_dim, std::int64_t value_dim, int block_rows, int tile_keys,
                 bool widened, bool pairs) {
    float* p = thread_scratch(floats(head_dim, value_dim, block_rows, tile_keys, widened, pairs));
    qt = p;  // aligned, and so is every buffer after it: block_rows is a multiple of 16
    p += head_dim * block_rows;
    st = p;
    p += static_cast<std::int64_t>(tile_keys) * block_rows;
    ot = p;
    p += value_dim * block_rows;
    limit = p;
    p += block_rows;
    max_sum = p;
    p += 2 * block_rows;
    if (widened) {
      kt = p;
      vt = p + head_dim * tile_keys;
      p += (head_dim + value_dim) * tile_keys;
    }
    if (pairs) {
      pairs_ = reinterpret_cast<std::uint32_t*>(p);
      pairs_values_ = pairs_ + tile_keys / 2 * block_rows;
    }
    qpairs_ = reinterpret_cast<std::uint32_t*>(qt);
  }

  float* qt;       // [head_dim][rows]  the query block, transposed
  float* st;       // [tile_keys][rows] scores of one tile, then its probabilities
  float* ot;       // [value_dim][rows] unnormalised output, transposed
  float* limit;    // [rows]            last visible key relative to the current tile (causal)
  float* max_sum;  // [2·rows]          the sinks, then the final running max and sum
  float* kt = nullptr;  // [tile_keys][head_dim]  a widened K tile
  float* vt = nullptr;  // [tile_keys][value_dim] a widened V tile
  BlockRows block;  // the block's rows and the keys they see
  // With pairs: [head_dim / 2][rows] Qᵀ, [tile_keys / 2][rows] Pᵀ, [tile_keys / 2][value_dim] V.
  std::uint32_t* qp() const { return qpairs_; }
  std::uint32_t* pp() const { return pairs_; }
  std::uint32_t* vp() const { return pairs_values_; }

 private:
  std::uint32_t *qpairs_ = nullptr, *pairs_ = nullptr, *pairs_values_ = nullptr;
};

// One sequence of a call, its views of batch 1: batch entry `index`, or in a packed (varlen)
// call the tokens of sequence `index`. lse: where its head 0's log-sum-exps start (heads lie
// lse_stride apart), or null. K and V: of one element type.
struct FusedSequence {
  InputRows q, k, v;
  OutputRows o;
  float* lse;
  std::int64_t lse_stride, index, q_len, kv_len;
};

struct FusedProblem {
  InputRows q, k, v;
  OutputRows o;
  float* lse;
  KernelShape shape;  // packed: batch 1, q_len and kv_len the token totals
  float scale;
  const ScorePass* pass;
  // Packed sequences (varlen): sequence i is query tokens [cu_q[i], cu_q[i + 1]) and key tokens
  // [cu_k[i], cu_k[i + 1]) of batch entry 0; null for a plain batch.
  const std::int64_t* cu_q = nullptr;
  const std::int64_t* cu_k = nullptr;
  std::int64_t packed = 0;  // the number of packed sequences

  std::int64_t sequences() const { return cu_q != nullptr ? packed : shape.batch; }
  FusedSequence sequence(std::int64_t i) const {
    const std::int64_t h = shape.heads;
    if (cu_q == nullptr)
      return {token_range(q, i, 0, shape.q_len), token_range(k, i, 0, shape.kv_len),
              token_range(v, i, 0, shape.kv_len), token_range(o, i, 0, shape.q_len),
              lse != nullptr ? lse + i * h * shape.q_len : nullptr, shape.q_len, i, shape.q_len,
              shape.kv_len};
    // Packed: lse is [heads, total q tokens], FlashAttention's varlen layout.
    const std::int64_t q0 = cu_q[i], lq = cu_q[i + 1] - q0, k0 = cu_k[i], lk = cu_k[i + 1] - k0;
    return {token_range(q, 0, q0, lq), token_range(k, 0, k0, lk), token_range(v, 0, k0, lk),
            token_range(o, 0, q0, lq), lse != nullptr ? lse + q0 : nullptr, shape.q_len, i, lq,
            lk};
  }
};

// Float K/V rows are read in place; bf16 and fp16 rows are widened a tile at a time
// (activations.hpp's widen_rows), a conversion per element of K and V per block against BR
// products, unless the bf16 products read them (Reads::pairs).
template <class Ops, int D, int DV>
struct FusedKernel {
  using T = Tiles<Ops, D, DV>;
  using V = typename Ops::V;
  static constexpr int W = Ops::W, NV = T::NV, BR = T::BR, BC = T::BC;

#if defined(MULTIHEAD_HAS_AVX512BF16)
  using Paired = Tiles<Ops, D, DV, NV, Bf16PairProducts>;
#endif

  // Normalises the block's rows and scatters them to o (and lse).
  static void store_rows(const FusedProblem& pr, const FusedSequence& sq, std::int64_t g,
                         std::int64_t r0, int rows, const FusedWorkspace& ws) {
    const std::int64_t gs = pr.shape.group_size();
    const float* max = ws.max_sum;
    const float* sum = ws.max_sum + BR;
    for (int r = 0; r < rows; ++r) {
      const RowSite at = row_site(g, r0 + r, gs);
      float* lse = sq.lse != nullptr ? sq.lse + at.head * sq.lse_stride + at.position : nullptr;
      store_state_row(sq.o, 0, at.position, at.head, ws.ot + r, BR, max[r], sum[r], lse);
    }
  }

  // How a call reads its K and V: in place (float), widened a tile at a time (bf16, fp16), or
  // in place on the bf16 products (bf16 Q, K and V on AVX-512 BF16, an even head dim).
  enum class Reads { in_place, widened, pairs };
  static Reads reads(const FusedProblem& pr) {
    const auto is_bf16 = [](const InputRows& x) {
      return std::holds_alternative<TensorView<const bf16>>(x);
    };
    if (kHasBf16Products && is_bf16(pr.q) && is_bf16(pr.k) && pr.shape.head_dim % 2 == 0)
      return Reads::pairs;
    return std::holds_alternative<TensorView<const float>>(pr.k) ? Reads::in_place
                                                                 : Reads::widened;
  }

  // One query block: sequence sq, KV group g, rows [r0, r0 + rows). A template on how the
  // call reads K and V, so that the tile loop holds no dispatch of its own.
  template <Reads how>
  static void block(const FusedProblem& pr, const FusedSequence& sq, std::int64_t g,
                    std::int64_t r0, int rows, FusedWorkspace& ws) {
    const KernelShape& s = pr.shape;
    const std::int64_t d = D ? D : s.head_dim, dv = DV ? DV : s.value_dim;
    const ScorePass& pass = *pr.pass;
    // Padding rows (rows to BR) have zero queries and the last real row's keys: they compute
    // finite values that are never stored. Keys outside [block.begin, block.end) are never
    // visited.
    const BlockRows& block = ws.block;
    pass.block_rows(ws.block, sq.index, g, r0, rows, BR, sq.q_len, sq.kv_len);
    if constexpr (how == Reads::pairs)
      pack_query_pairs<BR>(std::get<TensorView<const bf16>>(sq.q), 0, g, s.group_size(), r0,
                           rows, d, ws.qp());
    else
      pack_transposed_rows(sq.q, 0, g, s.group_size(), r0, rows, BR, d, ws.qt);
    std::fill(ws.ot, ws.ot + dv * BR, 0.0f);
    for (int r = 0; r < BR; ++r) pass.start(block, r, true, ws.max_sum[r], ws.max_sum[BR + r]);
    // The rows the tiles read: bf16 in place for the pairs, float in place, or float widened
    // into the scratch a tile at a time.
    using Row = std::conditional_t<how == Reads::pairs, bf16, float>;
    TensorView<const Row> k, v;
    if constexpr (how != Reads::widened) {
      k = std::get<TensorView<const Row>>(sq.k);
      v = std::get<TensorView<const Row>>(sq.v);
    }
    const std::int64_t k_stride = how == Reads::widened ? d : k.token_stride();
    const std::int64_t v_stride = how == Reads::widened ? dv : v.token_stride();
    V m[NV], l[NV], alpha[NV], tile_max[NV];
    for (int i = 0; i < NV; ++i) {
      m[i] = Ops::load(ws.max_sum + i * W);
      l[i] = Ops::load(ws.max_sum + BR + i * W);
    }
    for (std::int64_t j0 = block.begin; j0 < block.end; j0 += BC) {
      const int keys = int(std::min<std::int64_t>(BC, block.end - j0));
      for (int i = 0; i < NV; ++i) tile_max[i] = Ops::set1(simd::negative_infinity);
      const Row *k0, *v0;
      // Rows read in place: while Q·Kᵀ of this tile runs, fetch this tile's V; during P·V, the
      // next tile's K. Widened tiles are read from the scratch, where nothing needs fetching.
      TilePrefetch this_v, next_k;
      if constexpr (how == Reads::widened) {
        widen_rows(sq.k, j0, keys, g, ws.kt, d);
        widen_rows(sq.v, j0, keys, g, ws.vt, dv);
        k0 = ws.kt, v0 = ws.vt;
      } else {
        k0 = k.row(0, j0, g), v0 = v.row(0, j0, g);
        this_v = {v0, v_stride, keys, dv};
        if (j0 + BC < block.end)
          next_k = {k0 + BC * k_stride, k_stride, std::min<std::int64_t>(BC, block.end - j0 - BC),
                    d};
      }
#if defined(MULTIHEAD_HAS_AVX512BF16)
      if constexpr (how == Reads::pairs) {
        const bool masked = Paired::scored_tile(pass, block, j0, ws.qp(), k0, k_stride, d,
                                                pr.scale, keys, ws.limit, ws.st, tile_max, this_v);
        T::softmax_tile(ws.st, keys, tile_max, m, l, alpha, masked);
        Paired::pv_pairs(ws.ot, ws.st, keys, v0, v_stride, dv, alpha, masked, ws.pp(), ws.vp(),
                         next_k);
        continue;
      }
#endif
      if constexpr (how != Reads::pairs) {
        const bool masked = T::scored_tile(pass, block, j0, ws.qt, k0, k_stride, d, pr.scale,
                                           keys, ws.limit, ws.st, tile_max, this_v);
        T::softmax_tile(ws.st, keys, tile_max, m, l, alpha, masked);
        if (masked)
          T::pv_masked_tile(ws.ot, ws.st, keys, v0, v_stride, dv, alpha, next_k);
        else
          T::pv_tile(ws.ot, ws.st, keys, v0, v_stride, dv, alpha, next_k);
      }
    }
    for (int i = 0; i < NV; ++i) {
      Ops::store(ws.max_sum + i * W, m[i]);
      Ops::store(ws.max_sum + BR + i * W, l[i]);
    }
    store_rows(pr, sq, g, r0, rows, ws);
  }

  static void run(const FusedProblem& pr, int threads) {
    const KernelShape& s = pr.shape;
    const std::int64_t sequences = pr.sequences(), gs = s.group_size();
    // Units per sequence: its KV groups × pairs of its query blocks; first_unit[i] is where
    // sequence i's start (all sequences have the same length unless packed).
    const auto pairs_of = [&](std::int64_t q_len) { return ((q_len * gs + BR - 1) / BR + 1) / 2; };
    // The calling thread's, kept between calls; a reference, since the lambda below runs on
    // other threads, where the name of a thread_local means their own copy.
    thread_local std::vector<std::int64_t> calling_thread_units;
    std::vector<std::int64_t>& first_unit = calling_thread_units;
    first_unit.assign(static_cast<std::size_t>(sequences + 1), 0);
    for (std::int64_t i = 0; i < sequences; ++i)
      first_unit[std::size_t(i + 1)] =
          first_unit[std::size_t(i)] +
          s.kv_groups * pairs_of(pr.cu_q != nullptr ? pr.cu_q[i + 1] - pr.cu_q[i] : s.q_len);
    const std::int64_t units = first_unit.back();
    if (units == 0) return;
    threads = int(std::min<std::int64_t>(threads, units));
    const auto blocks_of = [&](auto how) {
      parallel_dynamic(units, threads, [&](int, std::int64_t unit) {
        const std::int64_t i =
            std::upper_bound(first_unit.begin(), first_unit.end(), unit) - first_unit.begin() - 1;
        const FusedSequence sq = pr.sequence(i);
        const std::int64_t rows_total = sq.q_len * gs, blocks = (rows_total + BR - 1) / BR;
        const std::int64_t pairs = (blocks + 1) / 2, local = unit - first_unit[std::size_t(i)];
        const std::int64_t pair = local % pairs, g = local / pairs;
        const std::int64_t first = pair, second = blocks - 1 - pair;
        FusedWorkspace ws(D ? D : s.head_dim, DV ? DV : s.value_dim, BR, BC,
                          how == Reads::widened, how == Reads::pairs);
        const auto run_block = [&](std::int64_t index) {
          const std::int64_t r0 = index * BR;
          block<decltype(how)::value>(pr, sq, g, r0, int(std::min<std::int64_t>(BR, rows_total - r0)), ws);
        };
        run_block(first);
        if (second != first) run_block(second);
      });
    };
    switch (reads(pr)) {
      case Reads::in_place: return blocks_of(std::integral_constant<Reads, Reads::in_place>{});
      case Reads::widened: return blocks_of(std::integral_constant<Reads, Reads::widened>{});
      case Reads::pairs:
#if defined(MULTIHEAD_HAS_AVX512BF16)
        return blocks_of(std::integral_constant<Reads, Reads::pairs>{});
#endif
        break;
    }
  }
};

// Head dims 64, 128 and 256 (with value_dim equal) get kernels with the dims fixed at compile
// time; every other pair runs the general kernel.
template <class Ops>
void run_fused(const FusedProblem& pr, int threads) {
  const std::int64_t d = pr.shape.head_dim;
  if (pr.shape.value_dim == d && d == 64)
    FusedKernel<Ops, 64, 64>::run(pr, threads);
  else if (pr.shape.value_dim == d && d == 128)
    FusedKernel<Ops, 128, 128>::run(pr, threads);
  else if (pr.shape.value_dim == d && d == 256)
    FusedKernel<Ops, 256, 256>::run(pr, threads);
  else
    FusedKernel<Ops, 0, 0>::run(pr, threads);
}

MULTIHEAD_INSTANCE(void run_fused<simd::Ops>(const FusedProblem&, int))

// Runs a checked call of this shape (check_kernel_args): what every overload below and
// varlen.hpp's run.
template <class Q, class S, class O>
void fused_call(const TensorView<const Q>& q, const TensorView<const S>& k,
                const TensorView<const S>& v, const TensorView<O>& o,
                const KernelOptions& options, LseOutput lse, const KernelShape& shape,
                Span<const std::int64_t> cu_q = {}, Span<const std::int64_t> cu_k = {},
                std::int64_t packed = 0) {
  const ScorePass pass(options, shape);
  FusedProblem problem{q, k, v, o, lse.data, shape, resolved_scale(options, shape.head_dim),
                       &pass};
  problem.cu_q = cu_q.data;
  problem.cu_k = cu_k.data;
  problem.packed = packed;
  const ExecutorScope scope(options.executor);
  run_fused<simd::Ops>(problem, resolve_threads(options.threads));
}

}  // namespace detail

// The same contract as reference_attention (options.hpp): O = softmax(modified scale·Q·Kᵀ)·V
// per batch and query head, with GQA/MQA head sharing, the options' score modifiers
// (modifiers.hpp), optional lse, and every argument checked before anything is written. fp32
// in, fp32 accumulation.
inline void fused_attention(const TensorView<const float>& q, const TensorView<const float>& k,
                            const TensorView<const float>& v, const TensorView<float>& o,
                            const KernelOptions& options = {}, LseOutput lse = {}) {
  detail::fused_call(q, k, v, o, options, lse, check_kernel_args(q, k, v, o, lse, options));
}

// The same over queries, keys, values and outputs of float, bf16 or fp16: Q and O each of any
// of the three, K and V of one of them. Softmax and accumulation run in fp32; each output is
// rounded once, to nearest even, when its row is stored. With AVX-512 BF16 and Q, K and V all
// bf16, Q·Kᵀ and P·V run on the bf16 dot product, with P rounded to bf16 after the softmax
// step (as FlashAttention does on GPUs); otherwise every element is widened to fp32 and the
// result is that of fp32 inputs holding the same values.
template <class Q, class K, class V, class O>
void fused_attention(const TensorView<Q>& q, const TensorView<K>& k, const TensorView<V>& v,
                     const TensorView<O>& o, const KernelOptions& options = {},
                     LseOutput lse = {}) {
  static_assert(is_activation_type_v<Q> && is_activation_type_v<K> && is_activation_type_v<O>,
                "fused_attention: q, k, v and o must be float, bf16 or fp16");
  static_assert(std::is_same_v<std::remove_const_t<K>, std::remove_const_t<V>>,
                "fused_attention: k and v must have the same element type");
  static_assert(!std::is_const_v<O>, "fused_attention: o must be writable");
  const auto qc = detail::const_view(q);
  const auto kc = detail::const_view(k), vc = detail::const_view(v);
  detail::fused_call(qc, kc, vc, o, options, lse, check_kernel_args(qc, kc, vc, o, lse, options));
}

}  // namespace MULTIHEAD_ISA_NAMESPACE
}  // namespace multihead
