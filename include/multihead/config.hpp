// The configuration of an attention layer and the shape of one kernel call, with their checks.
//
// Every check throws std::invalid_argument naming the field and its value, e.g.
// "heads (12) must be divisible by kv_groups (5)", before anything is written.
#pragma once

#include <cstdint>
#include <cmath>
#include <optional>
#include <vector>

#include "error.hpp"
#include "rope.hpp"

namespace multihead {
inline namespace MULTIHEAD_ISA_NAMESPACE {
namespace detail {

// What every layer and kernel requires of its heads: positive sizes, and kv_groups K/V heads
// that the query heads share evenly.
inline void check_heads(std::int64_t heads, std::int64_t kv_groups, std::int64_t head_dim,
                        std::int64_t value_dim) {
  require_positive(heads, "heads");
  require_positive(kv_groups, "kv_groups");
  require_positive(head_dim, "head_dim");
  require_positive(value_dim, "value_dim");
  require(kv_groups <= heads, "kv_groups (", kv_groups, ") must not exceed heads (", heads, ")");
  require(heads % kv_groups == 0, "heads (", heads, ") must be divisible by kv_groups (",
          kv_groups, ")");
}

}  // namespace detail

// One attention layer: model_dim → heads × head_dim queries, kv_groups × head_dim keys and
// kv_groups × value_dim values, heads × value_dim → model_dim output.
// MHA has kv_groups = heads, MQA kv_groups = 1, GQA anything in between that divides heads.
struct LayerConfig {
  std::int64_t model_dim = 0;
  std::int64_t heads = 0;
  std::int64_t kv_groups = 0;
  std::int64_t head_dim = 0;
  std::optional<std::int64_t> value_dim;  // defaults to head_dim
  bool bias = false;                      // q, k, v and o projections carry a bias
  bool causal = true;                     // decoder self-attention; see KernelOptions::causal
  std::optional<float> scale;             // defaults to 1/sqrt(head_dim)
  std::optional<RopeConfig> rope;         // rotary position embedding of q and k (rope.hpp)
  // Score modifiers (modifiers.hpp, KernelOptions): a sliding window (Mistral's window W is
  // window_left = W − 1; −1 unbounded), a logit soft-cap (Gemma 2; 0 off), ALiBi with the
  // standard slopes for `heads` (BLOOM, MPT), and one attention-sink logit per head (gpt-oss;
  // empty off).
  std::int64_t window_left = -1, window_right = -1;
  float softcap = 0.0f;
  bool alibi = false;
  std::vector<float> sinks;

  std::int64_t v_dim() const { return value_dim.value_or(head_dim); }
  std::int64_t group_size() const { return heads / kv_groups; }

  // Throws unless every size is positive, kv_groups divides heads, the weight sizes fit and a
  // rope suits head_dim.
  void validate() const {
    using detail::require;
    using detail::require_positive;
    require_positive(model_dim, "model_dim");
    detail::check_heads(heads, kv_groups, head_dim, v_dim());
    if (scale)
      require(*scale > 0.0f && std::isfinite(*scale), "scale (", *scale,
              ") must be positive and finite");
    if (rope) rope->validate(head_dim);
    require(window_left >= -1 && window_right >= -1, "window (left ", window_left, ", right ",
            window_right, ") must be -1 (unbounded) or a number of keys");
    require(std::isfinite(softcap) && softcap >= 0.0f, "softcap (", softcap,
            ") must be 0 (off) or positive");
    require(sinks.empty() || std::int64_t(sinks.size()) == heads, "sinks: one per head needed: ",
            sinks.size(), " given, heads ", heads);
    for (std::size_t h = 0; h < sinks.size(); ++h)
      require(std::isfinite(sinks[h]) || (std::isinf(sinks[h]) && sinks[h] < 0.0f), "sinks[", h,
              "] (", sinks[h], ") must be finite or -inf (no sink)");
    // The largest weights: Wq [heads·head_dim, model_dim] and Wo [model_dim, heads·value_dim].
    detail::checked_product("Wq size (heads * head_dim * model_dim)", heads, head_dim, model_dim);
    detail::checked_product("Wo size (model_dim * heads * value_dim)", model_dim, heads, v_dim());
  }
};

// The extents of one kernel call. Q is [batch, q_len, heads, head_dim], K is
// [batch, kv_len, kv_groups, head_dim], V is [batch, kv_len, kv_groups, value_dim] and the
// output [batch, q_len, heads, value_dim].
struct KernelShape {
  std::int64_t batch = 0;
  std::int64_t q_len = 0;
  std::int64_t kv_len = 0;
  std::int64_t heads = 0;
  std::int64_t kv_groups = 0;
  std::int64_t head_dim = 0;
  std::int64_t value_dim = 0;

  std::int64_t group_size() const { return heads / kv_groups; }

  // Throws unless every extent is positive, kv_groups divides heads and no buffer size overflows.
  void validate() const {
    using detail::require;
    using detail::require_positive;
    require_positive(batch, "batch");
    require_positive(q_len, "q_len");
    require_positive(kv_len, "kv_len");
    detail::check_heads(heads, kv_groups, head_dim, value_dim);
    detail::checked_product("q size (batch * q_len * heads * head_dim)", batch, q_len, heads,
                            head_dim);
    detail::checked_product("o size (batch * q_len * heads * value_dim)", batch, q_len, heads,
                            value_dim);
    detail::checked_product("k size (batch * kv_len * kv_groups * head_dim)", batch, kv_len,
                            kv_groups, head_dim);
    detail::checked_product("v size (batch * kv_len * kv_groups * value_dim)", batch, kv_len,
                            kv_groups, value_dim);
    detail::checked_product("scores per head (q_len * kv_len)", q_len, kv_len);
  }
};

}  // namespace MULTIHEAD_ISA_NAMESPACE
}  // namespace multihead
