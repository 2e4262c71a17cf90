// How the kernels apply the score modifiers of modifiers.hpp: one ScorePass per call, built from
// the options and a custom modifier, asked by each kernel for
//  - the keys each query row may see (causal and window: a range, so that tiles outside every
//    row's range are skipped and tiles inside it run unmasked),
//  - each head's sink, the softmax's starting state,
//  - and, on a tile of scores, everything else (apply), only when a modifier needs it.
// A call with no modifier beyond causal never calls apply: the kernels run their plain code.
#pragma once

#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>

#include "kernel_args.hpp"

namespace multihead {
inline namespace MULTIHEAD_ISA_NAMESPACE {
namespace detail {

// The keys [first, last] one query row may see; empty when last < first.
struct KeyRange {
  std::int64_t first = 0, last = -1;
};

// The most rows a tile of any kernel holds (fused and decode blocks are at most 3 AVX-512
// vectors of rows, 48).
constexpr int kMaxTileRows = 64;

class ScorePass {
 public:
  ScorePass(const KernelOptions& options, const KernelShape& shape)
      : options_(options), hooks_(options.modifier), group_size_(shape.group_size()),
        per_score_(options.softcap > 0.0f || options.alibi_slopes.size > 0 ||
                   !options.additive_mask.empty() || !options.boolean_mask.empty() ||
                   hooks_.has_logit() || hooks_.has_visible()),
        sinks_(options.sinks.size > 0 || hooks_.has_sink()) {}

  // Whether tiles need apply(): a modifier that looks at every score.
  bool per_score() const { return per_score_; }
  bool has_sinks() const { return sinks_; }

  // The keys query `query` of `q_len` may see among a sequence of `length` keys.
  KeyRange keys(std::int64_t query, std::int64_t q_len, std::int64_t length) const {
    const std::int64_t diagonal = query + offset(q_len, length);
    KeyRange range{0, length - 1};
    if (options_.causal) range.last = std::min(range.last, diagonal);
    if (options_.window_right >= 0) range.last = std::min(range.last, diagonal + options_.window_right);
    if (options_.window_left >= 0) range.first = std::max(range.first, diagonal - options_.window_left);
    return range;
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

  // Applies the modifiers to a tile of scores: rows [r0, r0 + rows) of KV group g's row space
  // (row = query · group_size + head in the group) of batch entry (or sequence) b against keys
  // [j0, j0 + keys) of a sequence of q_len queries and `length` keys, score (r, j) at s[r·row_step + j·key_step] with one of
  // the steps 1 (the line that is contiguous is vectorised). ranges[r]: row r's visible keys;
  // scores outside them become −inf whatever they were.
  void apply(float* s, std::int64_t row_step, std::int64_t key_step, int rows, std::int64_t keys,
             std::int64_t b, std::int64_t g, std::int64_t r0, std::int64_t j0, std::int64_t q_len,
             std::int64_t length, const KeyRange* ranges) const {
    Rows info;
    info.crossing = false;
    const std::int64_t shift = offset(q_len, length) - j0;  // diagonals relative to the tile
    std::int64_t query = r0 / group_size_, in_group = r0 % group_size_;  // no division per row
    for (int r = 0; r < rows; ++r) {
      info.query[r] = query;
      info.head[r] = g * group_size_ + in_group;
      info.slope[r] = options_.alibi_slopes.size > 0 ? options_.alibi_slopes.data[info.head[r]] : 0.0f;
      info.diagonal[r] = float(query + shift);
      info.first[r] = float(std::clamp<std::int64_t>(ranges[r].first - j0, -1, keys));
      info.last[r] = float(std::clamp<std::int64_t>(ranges[r].last - j0, -1, keys));
      info.crossing |= ranges[r].first > j0 || ranges[r].last < j0 + keys - 1;
      if (++in_group == group_size_) in_group = 0, ++query;
    }
    if (row_step == 1)
      for (std::int64_t j = 0; j < keys; ++j) rows_line(s + j * key_step, rows, j, info);
    else
      for (int r = 0; r < rows; ++r) keys_line(s + r * row_step, keys, r, info);
    if (!options_.additive_mask.empty() || !options_.boolean_mask.empty() ||
        hooks_.has_logit() || hooks_.has_visible())
      for (int r = 0; r < rows; ++r)
        for (std::int64_t j = 0; j < keys; ++j) {
          float& x = s[r * row_step + j * key_step];
          if (x == kNone) continue;  // outside the row's range
          x = per_site(x, ScoreSite{b, info.head[r], info.query[r], j0 + j});
        }
  }

 private:
  static constexpr float kNone = -std::numeric_limits<float>::infinity();

  // Per row of a tile, what the vectorised lines read (ALiBi and ranges relative to the tile).
  struct Rows {
    std::int64_t query[kMaxTileRows], head[kMaxTileRows];
    alignas(64) float slope[kMaxTileRows], diagonal[kMaxTileRows], first[kMaxTileRows],
        last[kMaxTileRows];
    bool crossing;  // some row's range starts or ends inside the tile
  };
  using Line = Eigen::Map<Eigen::ArrayXf>;
  using ConstLine = Eigen::Map<const Eigen::ArrayXf>;

  std::int64_t offset(std::int64_t q_len, std::int64_t length) const {
    return options_.alignment == CausalAlignment::bottom_right ? length - q_len : 0;
  }

  // One key's scores for `rows` contiguous rows: soft-cap and ALiBi, then the ranges.
  void rows_line(float* s, int rows, std::int64_t j, const Rows& info) const {
    Line x(s, rows);
    if (options_.softcap > 0.0f)
      x = options_.softcap * (x * (1.0f / options_.softcap)).tanh();
    if (options_.alibi_slopes.size > 0)
      x -= ConstLine(info.slope, rows) * (ConstLine(info.diagonal, rows) - float(j)).abs();
    if (!info.crossing) return;
    const float key = float(j);
    x = (ConstLine(info.first, rows) > key || ConstLine(info.last, rows) < key).select(kNone, x);
  }

  // One row's scores for `keys` contiguous keys: the same.
  void keys_line(float* s, std::int64_t keys, int r, const Rows& info) const {
    Line x(s, keys);
    if (options_.softcap > 0.0f)
      x = options_.softcap * (x * (1.0f / options_.softcap)).tanh();
    if (options_.alibi_slopes.size > 0) {
      const float slope = info.slope[r], diagonal = info.diagonal[r];
      for (std::int64_t j = 0; j < keys; ++j) s[j] -= slope * std::abs(diagonal - float(j));
    }
    // [0, first) and (last, keys) are hidden: all of the row when first > last.
    const auto first = std::int64_t(info.first[r]), last = std::int64_t(info.last[r]);
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

  KernelOptions options_;
  ModifierRef hooks_;
  std::int64_t group_size_;
  bool per_score_, sinks_;
};

}  // namespace detail
}  // namespace MULTIHEAD_ISA_NAMESPACE
}  // namespace multihead
