// Rotary position embedding (RoPE): queries and keys rotated by their position, so that q·k
// depends on the two tokens' distance.
//
// The first rotary_dim dims of a head (all of them by default) form rotary_dim / 2 pairs; pair i
// of a token at position p is rotated by the angle p·θ^(−2i / rotary_dim):
//   (a, b) → (a·cos − b·sin, b·cos + a·sin).
// The dims from rotary_dim on are left as they are (partial rotary, as in GPT-NeoX and Phi).
// Two layouts pair the dims differently:
//   rotate_half  pairs (i, i + rotary_dim/2): Llama, Mistral, Qwen, GPT-NeoX;
//   interleaved  pairs (2i, 2i + 1): GPT-J, the original paper, DeepSeek's decoupled RoPE key.
//
// RopeConfig::scaling stretches the frequencies for contexts longer than the model was trained
// on (linear, dynamic NTK, Llama 3's, YaRN: rope_scaling.hpp).
//
// RopeTable holds cos and sin per position; apply_rope rotates a [batch, tokens, heads, dim]
// view in place, token t of the view at position offset + t (or offsets[b] + t per sequence), so
// a decode step rotates its token at the position it really has.
//
// Dynamic scaling's frequencies depend on the context length L of the call that rotates: the
// largest position among its new tokens, plus one. A call is stateless: its tokens are rotated
// at its own L, and keys rotated by earlier calls keep their rotation (in a cache, as Hugging
// Face's do). For one sequence fed in order, prefill then steps, every call's L is the L Hugging
// Face picks for it (torch.max(position_ids) + 1), so the two agree. Within original_context the
// frequencies are the default ones and the table's rows serve; past it a call computes the cos
// and sin of its own tokens only, O(tokens·rotary_dim), never a row per position.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include "../core/error.hpp"
#include "../core/tensor_view.hpp"
#include "rope_scaling.hpp"

namespace multihead {
inline namespace MULTIHEAD_ISA_NAMESPACE {

enum class RopeLayout { rotate_half, interleaved };

struct RopeConfig {
  std::optional<std::int64_t> rotary_dim;  // defaults to head_dim; even, at most head_dim
  double base = 10000.0;                   // θ
  RopeLayout layout = RopeLayout::rotate_half;
  RopeScaling scaling;                     // none: the frequencies as trained (rope_scaling.hpp)

  // How many dims of a head of head_dim rotate: rotary_dim, or all of them.
  std::int64_t rotary_dims(std::int64_t head_dim) const { return rotary_dim.value_or(head_dim); }

  // Throws unless rotary_dim is positive, even and at most head_dim, base positive and finite,
  // the layout one of the two and the scaling usable (RopeScaling::validate).
  void validate(std::int64_t head_dim) const {
    using detail::require;
    const std::int64_t dims = rotary_dims(head_dim);
    const char* from = rotary_dim ? "" : ", the head_dim";  // the default, named as such
    require(dims > 0, "rope.rotary_dim (", dims, from, ") must be positive");
    require(dims % 2 == 0, "rope.rotary_dim (", dims, from, ") must be even: dims rotate in pairs");
    require(dims <= head_dim, "rope.rotary_dim (", dims, ") must not exceed head_dim (", head_dim,
            ")");
    require(base > 0.0 && std::isfinite(base), "rope.base (", base,
            ") must be positive and finite");
    require(layout == RopeLayout::rotate_half || layout == RopeLayout::interleaved,
            "rope.layout (", static_cast<int>(layout), ") must be rotate_half or interleaved");
    // The largest inverse frequency, base^(−(dims − 2)/dims) (below 1 for base > 1), times any
    // int64 position must stay finite, or the table's angles are inf and its entries NaN.
    const double fastest = std::pow(base, -double(dims - 2) / double(dims));
    require(std::isfinite(fastest * 9.3e18), "rope.base (", base,
            ") is too small: its fastest frequency (", fastest,
            " rad per position) makes the angles of large positions infinite");
    // Scaling only slows pairs down (factor ≥ 1; dynamic's base' ≥ base), so the bound holds.
    scaling.validate(dims, base);
  }
};

// cos and sin of every pair's angle at positions [0, positions()), times the scaling's
// attention factor (1 but for yarn), as floats. Each angle is computed in double (error about
// p·2e-16 rad) and only its cos and sin are rounded to float, so every entry is within about one
// float ulp of the exact value even far out: an angle computed in float would be off by up to
// p·6e-8 rad, 6e-3 at p = 10^5.
// With dynamic scaling the rows are those of calls within original_context, and the table keeps
// no more than original_context of them: a call past it computes its own (see the top).
class RopeTable {
 public:
  // A table for heads of head_dim dims covering positions [0, positions). Throws on a bad config
  // or a negative count.
  RopeTable(const RopeConfig& config, std::int64_t head_dim, std::int64_t positions = 0)
      : config_(config), head_dim_(head_dim) {
    detail::require_positive(head_dim, "head_dim");
    config.validate(head_dim);
    rotary_dim_ = config.rotary_dims(head_dim);
    inv_freq_ = config.scaling.inverse_frequencies(rotary_dim_, config.base);
    attention_factor_ = config.scaling.resolved_attention_factor();
    detail::require(positions >= 0, "positions (", positions, ") must not be negative");
    grow(std::min(positions, row_limit()));
  }

  const RopeConfig& config() const noexcept { return config_; }
  RopeLayout layout() const noexcept { return config_.layout; }
  std::int64_t head_dim() const noexcept { return head_dim_; }
  std::int64_t rotary_dim() const noexcept { return rotary_dim_; }
  std::int64_t positions() const noexcept { return positions_; }

  // The inverse frequencies of the rows, pair by pair: the scaled ones (for dynamic scaling,
  // those of every call within original_context, the default ones).
  const std::vector<double>& inverse_frequencies() const noexcept { return inv_freq_; }
  // Those a call of context length `context` rotates with (differ from the rows' for dynamic
  // scaling past original_context only).
  std::vector<double> inverse_frequencies(std::int64_t context) const {
    return config_.scaling.inverse_frequencies(rotary_dim_, config_.base, context);
  }
  // What every cos and sin is multiplied by (RopeScaling::resolved_attention_factor).
  double attention_factor() const noexcept { return attention_factor_; }
  // Whether a call of context length `context` reads the rows, or (dynamic scaling past
  // original_context) computes its own cos and sin.
  bool uses_rows(std::int64_t context) const noexcept {
    return !config_.scaling.depends_on_context() || context <= config_.scaling.original_context;
  }

  // The rotary_dim / 2 cosines and sines of position p, pair by pair; p < positions().
  const float* cos(std::int64_t p) const noexcept { return values_.data() + p * rotary_dim_; }
  const float* sin(std::int64_t p) const noexcept { return cos(p) + rotary_dim_ / 2; }

  // Makes the table cover at least positions [0, positions), or with dynamic scaling
  // [0, min(positions, original_context)): no call past that reads rows. It grows to at least
  // twice its size, as std::vector does, so a decoder that asks for one more position per step
  // allocates O(log n) times. Rows already computed keep their values.
  void reserve(std::int64_t positions) {
    detail::require(positions >= 0, "positions (", positions, ") must not be negative");
    positions = std::min(positions, row_limit());
    if (positions <= positions_) return;
    const bool can_double = positions_ <= std::numeric_limits<std::int64_t>::max() / 2;
    grow(std::min(can_double ? std::max(positions, 2 * positions_) : positions, row_limit()));
  }

 private:
  // The most rows any call reads.
  std::int64_t row_limit() const noexcept {
    return config_.scaling.depends_on_context() ? config_.scaling.original_context
                                                : std::numeric_limits<std::int64_t>::max();
  }

  void grow(std::int64_t positions) {
    if (positions <= positions_) return;
    const std::int64_t size =
        detail::checked_product("rope table size (positions * rotary_dim)", positions, rotary_dim_);
    values_.resize(static_cast<std::size_t>(size));
    const std::int64_t pairs = rotary_dim_ / 2;
    for (std::int64_t p = positions_; p < positions; ++p) {
      float* c = values_.data() + p * rotary_dim_;
      for (std::int64_t i = 0; i < pairs; ++i) {
        const double angle = static_cast<double>(p) * inv_freq_[static_cast<std::size_t>(i)];
        c[i] = static_cast<float>(std::cos(angle) * attention_factor_);
        c[pairs + i] = static_cast<float>(std::sin(angle) * attention_factor_);
      }
    }
    positions_ = positions;
  }

  RopeConfig config_;
  std::int64_t head_dim_ = 0;
  std::int64_t rotary_dim_ = 0;
  std::int64_t positions_ = 0;
  double attention_factor_ = 1.0;
  std::vector<double> inv_freq_;  // of the rows, pair by pair (θ^(−2i / rotary_dim) unscaled)
  std::vector<float> values_;     // [positions, rotary_dim]: per position the cosines, then sines
};

namespace detail {

// The checks of both apply_rope overloads that do not depend on the offsets.
inline void check_rope_view(const RopeTable& table, const TensorView<float>& x) {
  x.validate("x");
  x.validate_no_overlap("x");  // a row reached twice would be rotated twice
  require(x.dim() == table.head_dim(), "x.dim (", x.dim(),
          ") must equal the rope table's head_dim (", table.head_dim(), ")");
}

// Positions [offset, offset + tokens) must be below the call's context length and, when the
// call reads rows, in the table; `name` and `index` (-1 for none) say which offset is checked.
// The name is only put together for a message.
inline void check_rope_positions(const RopeTable& table, std::int64_t offset, std::int64_t tokens,
                                 std::int64_t context, const char* name, std::int64_t index = -1) {
  const auto which = [&] { return index < 0 ? std::string(name) : concat(name, "[", index, "]"); };
  if (offset < 0) fail(which(), " (", offset, ") must not be negative");
  const std::int64_t end = checked_add(offset, tokens, "last position (offset + tokens)");
  if (end > context)
    fail("positions [", offset, ", ", end, ") from ", which(), " reach past the call's context (",
         context, " positions)");
  if (table.uses_rows(context) && end > table.positions())
    fail("positions [", offset, ", ", end, ") from ", which(), " exceed the rope table's ",
         table.positions(), " positions (reserve more)");
}

// The context of a call rotating `tokens` tokens from `offset`: its last position plus one
// (clamped: check_rope_positions rejects a negative offset or an overflow).
inline std::int64_t rope_call_context(std::int64_t offset, std::int64_t tokens) {
  return saturating_add(std::max<std::int64_t>(offset, 0), tokens);
}

// Rotates the first rotary_dim dims of one head's row at the position of cos / sin. Plain loops
// over contiguous pairs, which the compiler vectorises; RoPE costs O(tokens·heads·head_dim), far
// below the projections around it, so it needs no hand-written SIMD.
inline void rotate_row(float* x, const float* c, const float* s, std::int64_t pairs,
                       RopeLayout layout) {
  if (layout == RopeLayout::rotate_half) {
    float* y = x + pairs;
    for (std::int64_t i = 0; i < pairs; ++i) {
      const float a = x[i], b = y[i];
      x[i] = a * c[i] - b * s[i];
      y[i] = b * c[i] + a * s[i];
    }
  } else {
    for (std::int64_t i = 0; i < pairs; ++i) {
      const float a = x[2 * i], b = x[2 * i + 1];
      x[2 * i] = a * c[i] - b * s[i];
      x[2 * i + 1] = b * c[i] + a * s[i];
    }
  }
}

// Rotates pair i of one head's row by cos c and sin s: rotate_row's arithmetic, one pair.
inline void rotate_pair(float* x, std::int64_t i, float c, float s, std::int64_t pairs,
                        RopeLayout layout) {
  float* a = layout == RopeLayout::rotate_half ? x + i : x + 2 * i;
  float* b = layout == RopeLayout::rotate_half ? x + pairs + i : x + 2 * i + 1;
  const float x0 = *a, x1 = *b;
  *a = x0 * c - x1 * s;
  *b = x1 * c + x0 * s;
}

inline void rotate_sequence(const RopeTable& table, const TensorView<float>& x, std::int64_t b,
                            std::int64_t offset) {
  const std::int64_t pairs = table.rotary_dim() / 2;
  for (std::int64_t t = 0; t < x.tokens(); ++t) {
    const float* c = table.cos(offset + t);
    const float* s = table.sin(offset + t);
    for (std::int64_t h = 0; h < x.heads(); ++h)
      rotate_row(x.row(b, t, h), c, s, pairs, table.layout());
  }
}

// As rotate_sequence for a call that does not read the rows (dynamic scaling past the original
// context): each token's cos and sin computed here, from the frequencies of base `theta`, once
// per pair and shared by the heads, with the table's arithmetic (a row computed for position p
// equals the row a table of those frequencies holds). Stores nothing, so allocates nothing.
inline void rotate_sequence_at(const RopeTable& table, const TensorView<float>& x, std::int64_t b,
                               std::int64_t offset, double theta) {
  const std::int64_t pairs = table.rotary_dim() / 2;
  const double factor = table.attention_factor();
  for (std::int64_t t = 0; t < x.tokens(); ++t) {
    const double p = static_cast<double>(offset + t);
    for (std::int64_t i = 0; i < pairs; ++i) {
      const double angle = p * rope_inverse_frequency(theta, i, table.rotary_dim());
      const float c = static_cast<float>(std::cos(angle) * factor);
      const float s = static_cast<float>(std::sin(angle) * factor);
      for (std::int64_t h = 0; h < x.heads(); ++h)
        rotate_pair(x.row(b, t, h), i, c, s, pairs, table.layout());
    }
  }
}

// Rotates sequence b of x from `offset` in a call of context length `context`.
inline void rotate_sequence(const RopeTable& table, const TensorView<float>& x, std::int64_t b,
                            std::int64_t offset, std::int64_t context) {
  if (table.uses_rows(context)) return rotate_sequence(table, x, b, offset);
  const RopeConfig& c = table.config();
  rotate_sequence_at(table, x, b, offset,
                     c.scaling.frequency_base(c.base, table.rotary_dim(), context));
}

}  // namespace detail

// Rotates x [batch, tokens, heads, head_dim] in place, token t of every sequence at position
// offset + t, in a call of context length `context` (at least offset + tokens): what dynamic
// scaling chooses its frequencies by (rope.hpp's top); the other scalings ignore it. A layer
// whose call rotates several views (queries and keys, or sequences at their own offsets) passes
// the call's context to each. Every head gets the same rotation, so x may hold queries or keys
// of any head count. Throws std::invalid_argument, before writing, unless x is a valid view of
// distinct elements with the table's head_dim and the positions are below the context and, when
// the call reads rows, in the table. Allocates nothing.
inline void apply_rope(const RopeTable& table, const TensorView<float>& x, std::int64_t offset,
                       std::int64_t context) {
  detail::check_rope_view(table, x);
  detail::check_rope_positions(table, offset, x.tokens(), context, "offset");
  for (std::int64_t b = 0; b < x.batch(); ++b)
    detail::rotate_sequence(table, x, b, offset, context);
}

// As above in a call of its own: context offset + tokens.
inline void apply_rope(const RopeTable& table, const TensorView<float>& x,
                       std::int64_t offset = 0) {
  apply_rope(table, x, offset, detail::rope_call_context(offset, x.tokens()));
}

// As above with one offset per sequence: token t of sequence b is at position offsets[b] + t, for
// a batch of sequences of different lengths, in a call of context max(offsets) + tokens.
inline void apply_rope(const RopeTable& table, const TensorView<float>& x,
                       Span<const std::int64_t> offsets) {
  detail::check_rope_view(table, x);
  detail::require(offsets.data != nullptr && offsets.size == x.batch(), "offsets: size (",
                  offsets.size, ") must equal x.batch (", x.batch(), ") and data must not be null");
  std::int64_t context = 0;
  for (std::int64_t b = 0; b < x.batch(); ++b)
    context = std::max(context, detail::rope_call_context(offsets.data[b], x.tokens()));
  for (std::int64_t b = 0; b < x.batch(); ++b)
    detail::check_rope_positions(table, offsets.data[b], x.tokens(), context, "offsets", b);
  for (std::int64_t b = 0; b < x.batch(); ++b)
    detail::rotate_sequence(table, x, b, offsets.data[b], context);
}

}  // namespace MULTIHEAD_ISA_NAMESPACE
}  // namespace multihead
