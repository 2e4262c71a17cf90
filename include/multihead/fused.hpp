// The fused attention kernel: FlashAttention's algorithm on the CPU.
//
// Work unit: one batch entry × one KV group × one block of query rows. The heads/kv_groups
// query heads that share a KV head are stacked into the block's rows (row = query position ·
// group_size + head in group), so each K/V tile is read once per group and block, and MQA/GQA
// do less memory traffic per flop than MHA. For each K/V tile of BC keys: scores
// S = scale·Q·Kᵀ, the online-softmax step (state.hpp), O += P·V; one normalisation at the end.
// The score matrix is never stored: memory per thread is O(block · (head_dim + value_dim + BC)).
//
// Causal (bottom-right aligned, see KernelOptions): tiles entirely above the diagonal are never
// visited, tiles entirely below it run unmasked, and only tiles that cross it are masked.
//
// Threads: units are pairs of query blocks (block i with block n−1−i of the same batch entry
// and group) so that causal costs even out, handed out dynamically. Each block is computed by
// one thread in a fixed order, so the results are bitwise identical for any thread count.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "kernel_args.hpp"
#include "microkernel.hpp"
#include "parallel.hpp"
#include "state.hpp"

namespace multihead {
inline namespace MULTIHEAD_ISA_NAMESPACE {
namespace detail {

// One thread's buffers, allocated once per call before the threads start.
class FusedWorkspace {
 public:
  FusedWorkspace(std::int64_t head_dim, std::int64_t value_dim, int block_rows, int tile_keys)
      : buffer_(static_cast<std::size_t>((head_dim + value_dim + tile_keys + 3) * block_rows + 16)),
        last_key_(static_cast<std::size_t>(block_rows)) {
    float* p = buffer_.data();
    p += (64 - reinterpret_cast<std::uintptr_t>(p) % 64) % 64 / sizeof(float);  // 64-byte aligned
    qt = p;
    p += head_dim * block_rows;
    st = p;
    p += static_cast<std::int64_t>(tile_keys) * block_rows;
    ot = p;
    p += value_dim * block_rows;
    limit = p;
    p += block_rows;
    max_sum = p;
  }

  float* qt;       // [head_dim][rows]  the query block, transposed
  float* st;       // [tile_keys][rows] scores of one tile, then its probabilities
  float* ot;       // [value_dim][rows] unnormalised output, transposed
  float* limit;    // [rows]            last visible key relative to the current tile (causal)
  float* max_sum;  // [2·rows]          final running max and sum, spilled for the epilogue
  std::int64_t* last_visible() { return last_key_.data(); }  // [rows], absolute key index

 private:
  std::vector<float> buffer_;
  std::vector<std::int64_t> last_key_;
};

struct FusedProblem {
  TensorView<const float> q, k, v;
  TensorView<float> o;
  float* lse;
  KernelShape shape;
  float scale;
  bool causal;
};

template <class Ops, int D, int DV>
struct FusedKernel {
  using T = Tiles<Ops, D, DV>;
  using V = typename Ops::V;
  static constexpr int W = Ops::W, NV = T::NV, BR = T::BR, BC = T::BC;

  // Packs rows [r0, r0 + rows) of group g's (position, head in group) row space into Qt and
  // records each row's last visible key. Padding rows repeat the last real row's limit and have
  // zero queries: they compute finite values that are never stored.
  static void pack_queries(const FusedProblem& pr, std::int64_t b, std::int64_t g,
                           std::int64_t r0, int rows, FusedWorkspace& ws) {
    const std::int64_t gs = pr.shape.group_size();
    const std::int64_t offset = pr.shape.kv_len - pr.shape.q_len;
    for (int r = 0; r < BR; ++r)
      ws.last_visible()[r] = (r0 + std::min(r, rows - 1)) / gs + offset;
    pack_transposed_rows(pr.q, b, g, gs, r0, rows, BR, D ? D : pr.shape.head_dim, ws.qt);
  }

  // Each row's last visible key relative to the tile starting at j0, clamped to [−1, BC] so
  // that it is exact as a float whatever the sequence length.
  static void tile_limits(std::int64_t j0, FusedWorkspace& ws) {
    for (int r = 0; r < BR; ++r)
      ws.limit[r] = float(std::clamp<std::int64_t>(ws.last_visible()[r] - j0, -1, BC));
  }

  // Normalises the block's rows and scatters them to o (and lse).
  static void store_rows(const FusedProblem& pr, std::int64_t b, std::int64_t g, std::int64_t r0,
                         int rows, const FusedWorkspace& ws) {
    const std::int64_t dv = DV ? DV : pr.shape.value_dim, gs = pr.shape.group_size();
    const float* max = ws.max_sum;
    const float* sum = ws.max_sum + BR;
    for (int r = 0; r < rows; ++r) {
      const std::int64_t row = r0 + r, position = row / gs, head = g * gs + row % gs;
      const float inverse = inverse_sum(sum[r]);
      float* target = pr.o.row(b, position, head);
      for (std::int64_t c = 0; c < dv; ++c) target[c] = ws.ot[c * BR + r] * inverse;
      if (pr.lse != nullptr)
        pr.lse[(b * pr.shape.heads + head) * pr.shape.q_len + position] =
            log_sum_exp(max[r], sum[r]);
    }
  }

  // One query block: batch b, KV group g, rows [r0, r0 + rows).
  static void block(const FusedProblem& pr, std::int64_t b, std::int64_t g, std::int64_t r0,
                    int rows, FusedWorkspace& ws) {
    const KernelShape& s = pr.shape;
    const std::int64_t d = D ? D : s.head_dim, dv = DV ? DV : s.value_dim;
    pack_queries(pr, b, g, r0, rows, ws);
    std::fill(ws.ot, ws.ot + dv * BR, 0.0f);

    // Keys at or after kv_end are hidden from every row of the block (never visited); keys up
    // to all_visible are seen by every row (no mask needed).
    std::int64_t kv_end = s.kv_len, all_visible = s.kv_len - 1;
    if (pr.causal) {
      const std::int64_t offset = s.kv_len - s.q_len, gs = s.group_size();
      kv_end = std::clamp<std::int64_t>((r0 + rows - 1) / gs + offset + 1, 0, s.kv_len);
      all_visible = r0 / gs + offset;
    }

    const std::int64_t k_stride = pr.k.token_stride(), v_stride = pr.v.token_stride();
    V m[NV], l[NV], alpha[NV], tile_max[NV];
    for (int v = 0; v < NV; ++v) {
      m[v] = Ops::set1(simd::negative_infinity);
      l[v] = Ops::zero();
    }
    for (std::int64_t j0 = 0; j0 < kv_end; j0 += BC) {
      const int keys = int(std::min<std::int64_t>(BC, kv_end - j0));
      for (int v = 0; v < NV; ++v) tile_max[v] = Ops::set1(simd::negative_infinity);
      const float* k0 = pr.k.row(b, j0, g);
      const float* v0 = pr.v.row(b, j0, g);
      // While Q·Kᵀ of this tile runs, fetch this tile's V; during P·V, the next tile's K.
      const TilePrefetch this_v{v0, v_stride, keys, dv};
      TilePrefetch next_k;
      if (j0 + BC < kv_end)
        next_k = {k0 + BC * k_stride, k_stride, std::min<std::int64_t>(BC, kv_end - j0 - BC), d};
      if (j0 + keys - 1 > all_visible) {  // the tile crosses the diagonal
        tile_limits(j0, ws);
        T::template qk_tile<true>(ws.qt, k0, k_stride, d, pr.scale, keys, ws.limit, ws.st,
                                  tile_max, this_v);
      } else {
        T::template qk_tile<false>(ws.qt, k0, k_stride, d, pr.scale, keys, ws.limit, ws.st,
                                   tile_max, this_v);
      }
      T::softmax_tile(ws.st, keys, tile_max, m, l, alpha);
      T::pv_tile(ws.ot, ws.st, keys, v0, v_stride, dv, alpha, next_k);
    }
    for (int v = 0; v < NV; ++v) {
      Ops::store(ws.max_sum + v * W, m[v]);
      Ops::store(ws.max_sum + BR + v * W, l[v]);
    }
    store_rows(pr, b, g, r0, rows, ws);
  }

  static void run(const FusedProblem& pr, int threads) {
    const KernelShape& s = pr.shape;
    const std::int64_t rows_total = s.q_len * s.group_size();
    const std::int64_t blocks = (rows_total + BR - 1) / BR;
    const std::int64_t pairs = (blocks + 1) / 2;
    const std::int64_t units = s.batch * s.kv_groups * pairs;
    threads = int(std::min<std::int64_t>(threads, units));
    std::vector<FusedWorkspace> workspaces;
    workspaces.reserve(static_cast<std::size_t>(threads));
    for (int t = 0; t < threads; ++t)
      workspaces.emplace_back(D ? D : s.head_dim, DV ? DV : s.value_dim, BR, BC);

    parallel_dynamic(units, threads, [&](int thread, std::int64_t unit) {
      const std::int64_t pair = unit % pairs, bg = unit / pairs;
      const std::int64_t b = bg / s.kv_groups, g = bg % s.kv_groups;
      const std::int64_t first = pair, second = blocks - 1 - pair;
      FusedWorkspace& ws = workspaces[static_cast<std::size_t>(thread)];
      const auto run_block = [&](std::int64_t index) {
        const std::int64_t r0 = index * BR;
        block(pr, b, g, r0, int(std::min<std::int64_t>(BR, rows_total - r0)), ws);
      };
      run_block(first);
      if (second != first) run_block(second);
    });
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

}  // namespace detail

// The same contract as reference_attention (kernel_args.hpp): O = softmax(scale·Q·Kᵀ
// [+ causal mask])·V per batch and query head, with GQA/MQA head sharing, optional lse,
// and every argument checked before anything is written. fp32 in, fp32 accumulation.
inline void fused_attention(const TensorView<const float>& q, const TensorView<const float>& k,
                            const TensorView<const float>& v, const TensorView<float>& o,
                            const KernelOptions& options = {}, LseOutput lse = {}) {
  const KernelShape shape = check_kernel_args(q, k, v, o, lse, options);
  const detail::FusedProblem problem{q, k, v, o, lse.data, shape,
                                     resolved_scale(options, shape.head_dim), options.causal};
  detail::run_fused<simd::Ops>(problem, resolve_threads(options.threads));
}

}  // namespace MULTIHEAD_ISA_NAMESPACE
}  // namespace multihead
