// The decode kernel's walk over one unit's keys: tiles of consecutive tokens gathered from a KV
// source's runs (kv_source.hpp), each computed by one tile path per KV group (tile_path.hpp) —
// in place, or widened into a float tile first — while the next tile's rows are prefetched at
// an even pace (prefetch.hpp).
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "../simd/ops.hpp"
#include "../storage/codec.hpp"
#include "kv_source.hpp"
#include "prefetch.hpp"

namespace multihead {
inline namespace MULTIHEAD_ISA_NAMESPACE {
namespace detail {

// Widens (or, for float rows that need padding, copies) `keys` rows into a tile of pitch
// `pitch`, zero-padded: what the products read when rows cannot be read in place.
template <class S>
void widen_rows(const S* rows, std::int64_t stride, int keys, std::int64_t dim,
                std::int64_t pitch, float* tile) {
  for (int j = 0; j < keys; ++j) {
    Codec<S>::template widen<simd::Ops>(rows + j * stride, dim, tile + j * pitch);
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
  // Strides and offsets count storage elements (the codec's units), as rows do.
  const std::int64_t k_units = Codec<S>::units(d), v_units = Codec<S>::units(dv);
  add(run.k, run.k_stride, run.k_group, k_units);
  const bool v_in_k = static_cast<const void*>(run.v) == static_cast<const void*>(run.k) &&
                      run.v_stride == run.k_stride && (groups == 1 || run.v_group == run.k_group) &&
                      v_units <= k_units;
  if (!v_in_k) add(run.v, run.v_stride, run.v_group, v_units);
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

// Group g's pass over a tile whose rows are widened into `tile` first, K then V in turn.
template <class Path, class S, int kMaxRuns>
void attend_tile_widened(Path& path, const KvTile<S, kMaxRuns>& tile, std::int64_t g,
                         std::int64_t j0, std::int64_t d, std::int64_t dv, float* buffer,
                         PrefetchCursor& cursor) {
  const std::int64_t kp = path.key_pitch(), vp = path.value_pitch();
  for (int i = 0, offset = 0; i < tile.count; offset += tile.runs[i++].keys) {
    const KvRun<S>& run = tile.runs[i];
    widen_rows(run.k + g * run.k_group, run.k_stride, run.keys, d, kp, buffer + offset * kp);
  }
  path.scores(static_cast<const float*>(buffer), kp, tile.keys, j0, 0, cursor);
  path.softmax(tile.keys);
  for (int i = 0, offset = 0; i < tile.count; offset += tile.runs[i++].keys) {
    const KvRun<S>& run = tile.runs[i];
    widen_rows(run.v + g * run.v_group, run.v_stride, run.keys, dv, vp, buffer + offset * vp);
  }
  path.accumulate(static_cast<const float*>(buffer), vp, tile.keys, 0, cursor);
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
      if constexpr (Path::kWidens) {
        if (!done) attend_tile_widened(path, current, g, j, d, dv, tile, cursor);
      }
    }
    j += current.keys;
    current = next;
  }
  for (std::int64_t g = 0; g < groups; ++g) paths[g].template finish<S>();
}
}  // namespace detail
}  // namespace MULTIHEAD_ISA_NAMESPACE
}  // namespace multihead
