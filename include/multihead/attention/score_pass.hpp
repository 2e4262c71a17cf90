// How the kernels apply the score modifiers of modifiers.hpp: one ScorePass per call, built from
// the options and a custom modifier, asked by each kernel for
//  - the keys each query row may see (causal and window: a range, so that tiles outside every
//    row's range are skipped and tiles inside it run unmasked),
//  - each head's sink, the softmax's starting state,
//  - and, on a tile of scores, everything else (apply), only when a modifier needs it.
// A call with no modifier beyond causal never calls apply: the kernels run their plain code.
#pragma once

#include "../core/eigen.hpp"
#include <algorithm>
#include <cassert>
#include <cmath>
#include <cstdint>
#include <limits>

#include "options.hpp"
#include "shape.hpp"

namespace multihead {
inline namespace MULTIHEAD_ISA_NAMESPACE {
namespace detail {

// The keys [first, last] one query row may see; empty when last < first.
struct KeyRange {
  std::int64_t first = 0, last = -1;
};

// The most rows a tile of any kernel holds (fused and decode blocks are at most 3 AVX-512
// vectors of rows, 48); kernels static_assert their block sizes against it.
constexpr int kMaxTileRows = 64;

// A block of query rows of one KV group and the keys they see, made once per block by
// ScorePass::block_rows: rows [r0, r0 + rows) of group g's row space (row = query position ·
// group_size + head in the group) of batch entry (or packed sequence) b, in a sequence of q_len
// queries and `length` keys. Padding rows of a tile, up to the `padded` rows asked for, repeat
// the last real row.
struct BlockRows {
  std::int64_t b = 0;  // for the sinks and custom modifiers
  int rows = 0;
  KeyRange range[kMaxTileRows];  // each row's visible keys (absolute)
  std::int64_t query[kMaxTileRows], head[kMaxTileRows];
  std::int64_t diagonal[kMaxTileRows];  // the key aligned with each row's query
  alignas(64) float slope[kMaxTileRows];  // each row's ALiBi slope (0 without)
  std::int64_t begin = 0, end = 0;        // keys some row sees: [begin, end), else 0, 0
  std::int64_t all_first = 0, all_last = -1;  // keys every row sees: [all_first, all_last]

  // Whether some row may not see some key of the tile [j0, j0 + keys): at its start (a
  // window's lower edge), at its end (the causal diagonal, a window's upper edge).
  bool masked_start(std::int64_t j0) const { return j0 < all_first; }
  bool masked_end(std::int64_t j0, std::int64_t keys) const { return j0 + keys - 1 > all_last; }

  // Each of the first `count` rows' last visible key relative to the tile starting at j0,
  // clamped to [−1, tile_keys] so that it is exact as a float whatever the length: the causal
  // epilogue's limits (column_tiles.hpp).
  void limits(std::int64_t j0, int count, int tile_keys, float* limit) const {
    for (int r = 0; r < count; ++r)
      limit[r] = float(std::clamp<std::int64_t>(range[r].last - j0, -1, tile_keys));
  }
};

class ScorePass {
 public:
  // Keeps a reference to the options: a pass lives within the kernel call it was made for.
  ScorePass(const KernelOptions& options, const KernelShape& shape)
      : options_(options), hooks_(options.modifier), group_size_(shape.group_size()),
        per_score_(options.softcap > 0.0f || options.alibi_slopes.size > 0 ||
                   !options.additive_mask.empty() || !options.boolean_mask.empty() ||
                   hooks_.has_logit() || hooks_.has_visible()),
        sinks_(options.sinks.size > 0 || hooks_.has_sink()) {}

  // Whether tiles need apply(): a modifier that looks at every score.
  bool per_score() const { return per_score_; }

  // The keys query `query` of `q_len` may see among a sequence of `length` keys.
  KeyRange keys(std::int64_t query, std::int64_t q_len, std::int64_t length) const {
    const std::int64_t diagonal = query + offset(q_len, length);
    KeyRange range{0, length - 1};
    if (options_.causal) range.last = std::min(range.last, diagonal);
    // Saturating: a window of any width (INT64_MAX is "unbounded" too) cannot overflow.
    if (options_.window_right >= 0)
      range.last = std::min(range.last, saturating_add(diagonal, options_.window_right));
    if (options_.window_left >= 0)
      range.first = std::max(range.first, saturating_add(diagonal, -options_.window_left));
    return range;
  }

  // Fills `block` for rows [r0, r0 + rows) of group g of batch entry b (see BlockRows), and
  // `padded` ≥ rows rows in all.
  void block_rows(BlockRows& block, std::int64_t b, std::int64_t g, std::int64_t r0, int rows,
                  int padded, std::int64_t q_len, std::int64_t length) const {
    assert(rows >= 1 && rows <= padded && padded <= kMaxTileRows);
    block.b = b;
    block.rows = rows;
    const std::int64_t shift = offset(q_len, length);
    const RowSite first = row_site(g, r0, group_size_);  // then stepped, no division per row
    std::int64_t query = first.position, in_group = first.head - g * group_size_;
    for (int r = 0; r < padded; ++r) {
      block.query[r] = query;
      block.head[r] = g * group_size_ + in_group;
      block.diagonal[r] = query + shift;
      block.slope[r] =
          options_.alibi_slopes.size > 0 ? options_.alibi_slopes.data[block.head[r]] : 0.0f;
      block.range[r] = keys(query, q_len, length);
      if (r + 1 < rows && ++in_group == group_size_) in_group = 0, ++query;
    }
    block.begin = length, block.end = 0, block.all_first = 0, block.all_last = length - 1;
    for (int r = 0; r < rows; ++r) {
      const KeyRange range = block.range[r];
      block.all_first = std::max(block.all_first, range.first);
      block.all_last = std::min(block.all_last, range.last);
      if (range.first > range.last) continue;
      block.begin = std::min(block.begin, range.first);
      block.end = std::max(block.end, range.last + 1);
    }
    if (block.begin >= block.end) block.begin = block.end = 0;
  }

  // The online softmax's starting state of row r of a block: its head's sink (max = sink,
  // sum = 1), or nothing (−inf, 0), also when the caller computes a later split of the row's
  // keys (`first_split` false: the sink joins the split that holds its first keys, once).
  void start(const BlockRows& block, int r, bool first_split, float& max, float& sum) const {
    max = first_split && sinks_ ? sink(block.b, block.head[r]) : kNone;
    sum = max == kNone ? 0.0f : 1.0f;
  }

  // The sink logit of head h of batch entry b, −inf when it has none.
  float sink(std::int64_t b, std::int64_t h) const {
    float s = options_.sinks.size > 0 ? options_.sinks.data[h] : kNone;
    if (hooks_.has_sink()) {
      const float t = hooks_.sink(b, h), high = std::max(s, t);
      if (high != kNone) s = high + std::log(std::exp(s - high) + std::exp(t - high));
    }
    return s;
  }

  // Applies the modifiers to the block's scores against keys [j0, j0 + keys): score (r, j) at
  // s[r·row_step + j·key_step], one of the steps 1 (the line that is contiguous is
  // vectorised). Scores outside a row's range become −inf whatever they were.
  void apply(float* s, std::int64_t row_step, std::int64_t key_step, std::int64_t keys,
             std::int64_t j0, const BlockRows& block) const {
    const int rows = block.rows;
    TileRows tile;  // the block's diagonals and ranges relative to this tile
    tile.crossing = block.masked_start(j0) || block.masked_end(j0, keys);
    for (int r = 0; r < rows; ++r) {
      tile.diagonal[r] = float(block.diagonal[r] - j0);
      tile.first[r] = float(std::clamp<std::int64_t>(block.range[r].first - j0, -1, keys));
      tile.last[r] = float(std::clamp<std::int64_t>(block.range[r].last - j0, -1, keys));
    }
    if (row_step == 1)
      for (std::int64_t j = 0; j < keys; ++j) rows_line(s + j * key_step, rows, j, block, tile);
    else
      for (int r = 0; r < rows; ++r) keys_line(s + r * row_step, keys, block.slope[r], tile, r);
    if (!options_.additive_mask.empty() || !options_.boolean_mask.empty() ||
        hooks_.has_logit() || hooks_.has_visible())
      for (int r = 0; r < rows; ++r)
        for (std::int64_t j = 0; j < keys; ++j) {
          float& x = s[r * row_step + j * key_step];
          if (x == kNone) continue;  // outside the row's range
          x = per_site(x, ScoreSite{block.b, block.head[r], block.query[r], j0 + j});
        }
  }

 private:
  static constexpr float kNone = -std::numeric_limits<float>::infinity();

  // The block's rows relative to one tile, as the vectorised lines read them.
  struct TileRows {
    alignas(64) float diagonal[kMaxTileRows], first[kMaxTileRows], last[kMaxTileRows];
    bool crossing;  // some row's range starts or ends inside the tile
  };
  using Line = Eigen::Map<Eigen::ArrayXf>;
  using ConstLine = Eigen::Map<const Eigen::ArrayXf>;

  std::int64_t offset(std::int64_t q_len, std::int64_t length) const {
    return options_.alignment == CausalAlignment::bottom_right ? length - q_len : 0;
  }

  // One key's scores for `rows` contiguous rows: soft-cap and ALiBi, then the ranges.
  void rows_line(float* s, int rows, std::int64_t j, const BlockRows& block,
                 const TileRows& tile) const {
    Line x(s, rows);
    if (options_.softcap > 0.0f)
      x = options_.softcap * (x * (1.0f / options_.softcap)).tanh();
    if (options_.alibi_slopes.size > 0)
      x -= ConstLine(block.slope, rows) * (ConstLine(tile.diagonal, rows) - float(j)).abs();
    if (!tile.crossing) return;
    const float key = float(j);
    x = (ConstLine(tile.first, rows) > key || ConstLine(tile.last, rows) < key).select(kNone, x);
  }

  // Row r's scores for `keys` contiguous keys: the same.
  void keys_line(float* s, std::int64_t keys, float slope, const TileRows& tile, int r) const {
    Line x(s, keys);
    if (options_.softcap > 0.0f)
      x = options_.softcap * (x * (1.0f / options_.softcap)).tanh();
    if (options_.alibi_slopes.size > 0) {
      const float diagonal = tile.diagonal[r];
      for (std::int64_t j = 0; j < keys; ++j) s[j] -= slope * std::abs(diagonal - float(j));
    }
    // [0, first) and (last, keys) are hidden: all of the row when first > last.
    const auto first = std::int64_t(tile.first[r]), last = std::int64_t(tile.last[r]);
    std::fill(s, s + std::clamp<std::int64_t>(first, 0, keys), kNone);
    std::fill(s + std::clamp<std::int64_t>(last + 1, 0, keys), s + keys, kNone);
  }

  // The per-score modifiers that read memory or call the user: masks and custom hooks.
  float per_site(float x, const ScoreSite& at) const {
    const MaskView<float>& add = options_.additive_mask;
    if (!add.empty()) x += add.at(at.batch, at.head, at.query, at.key);
    if (hooks_.has_logit()) x = hooks_.logit(x, at);
    const MaskView<bool>& keep = options_.boolean_mask;
    if (!keep.empty() && !keep.at(at.batch, at.head, at.query, at.key)) return kNone;
    if (hooks_.has_visible() && !hooks_.visible(at)) return kNone;
    return x;
  }

  const KernelOptions& options_;
  ModifierRef hooks_;
  std::int64_t group_size_;
  bool per_score_, sinks_;
};

}  // namespace detail
}  // namespace MULTIHEAD_ISA_NAMESPACE
}  // namespace multihead
