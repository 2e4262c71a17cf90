// The decode kernel's work plan: units of (batch entry × block of rows × split of the cache),
// every KV group inside, run in parallel; the splits of a block leave online-softmax states
// (state.hpp) that are merged in split order once all units ran.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "../core/parallel.hpp"
#include "../core/scratch.hpp"
#include "../simd/ops.hpp"
#include "state.hpp"
#include "tile_path.hpp"
#include "tile_walk.hpp"

namespace multihead {
inline namespace MULTIHEAD_ISA_NAMESPACE {
namespace detail {

// A block of one sequence's rows and the keys [begin, end) some row of it sees.
struct DecodeBlock {
  std::int64_t b, r0, begin, end;
  int rows;
};

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
  std::vector<DecodeBlock> blocks;
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
  const std::int64_t per_token = groups * (Codec<S>::row_bytes(d) + Codec<S>::row_bytes(dv));
  return std::clamp<std::int64_t>((std::int64_t{256} << 10) / per_token / 4 * 4, 8, Path::BC);
}

// Runs the batch entries `entries` (each with at least one query) on one path, their rows in
// blocks of at most block_rows. Units: batch entry × block of rows × split of the cache, every
// KV group inside, so that a unit reads its part of the cache in address order. States of a
// split unit: per group [rows][dv] outputs, then rows maxima, then rows sums.
template <class Path, class Source>
void run_decode_blocks(const DecodeProblem& pr, const Source& source,
                       Span<const std::int64_t> entries, int block_rows, int threads) {
  using S = typename Source::storage_type;
  const KernelShape& s = pr.shape;
  const std::int64_t d = s.head_dim, dv = s.value_dim, groups = s.kv_groups;
  const std::int64_t tile_keys = tile_tokens<Path, S>(groups, d, dv);

  // The calling thread's plan; a reference, since the lambdas below run on other threads,
  // where the name of a thread_local means their own copy.
  thread_local DecodePlan calling_thread_plan;
  DecodePlan& plan = calling_thread_plan;
  plan.blocks.clear();
  plan.units.clear();
  plan.merges.clear();

  // Every entry's blocks of rows, and the keys they see in all: the call's work.
  BlockRows block;  // each block's rows in turn, for the keys they see
  std::int64_t total_keys = 0;
  for (std::int64_t i = 0; i < entries.size; ++i) {
    const std::int64_t b = entries.data[i], queries = pr.queries(b);
    const std::int64_t rows_total = queries * s.group_size();
    for (std::int64_t r0 = 0; r0 < rows_total; r0 += block_rows) {
      const int rows = int(std::min<std::int64_t>(block_rows, rows_total - r0));
      pr.pass->block_rows(block, b, 0, r0, rows, rows, queries, source.length(b));
      plan.blocks.push_back({b, r0, block.begin, block.end, rows});
      total_keys += block.end - block.begin;
    }
  }

  // Split length: even shares of the work for ~4 units per thread (dynamic scheduling evens
  // out ragged lengths), never below kMinSplitKeys, in whole tiles; one thread never splits.
  const std::int64_t target_units = threads > 1 ? 4 * std::int64_t(threads) : 1;
  const std::int64_t split =
      round_up(std::max(kMinSplitKeys, total_keys / target_units + 1), tile_keys);
  const std::int64_t group_floats = block_rows * (dv + 2), slot_floats = groups * group_floats;
  std::int64_t slots = 0;
  for (const DecodeBlock& k : plan.blocks) {
    const std::int64_t splits = std::max<std::int64_t>(1, (k.end - k.begin + split - 1) / split);
    if (splits > 1) plan.merges.push_back({k.b, k.r0, slots, splits, k.rows});
    for (std::int64_t i = 0; i < splits; ++i)
      plan.units.push_back({k.b, k.r0, k.begin + i * split,
                            std::min(k.end, k.begin + (i + 1) * split), splits > 1 ? slots++ : -1,
                            k.rows, i == 0});
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

}  // namespace detail
}  // namespace MULTIHEAD_ISA_NAMESPACE
}  // namespace multihead
