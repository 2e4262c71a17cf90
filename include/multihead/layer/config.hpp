// The configuration of an attention layer, with its checks.
//
// Every check throws std::invalid_argument naming the field and its value, e.g.
// "heads (12) must be divisible by kv_groups (5)", before anything is written.
#pragma once

#include <cstdint>
#include <cmath>
#include <optional>
#include <vector>

#include "../attention/modifiers.hpp"
#include "../attention/shape.hpp"
#include "../core/error.hpp"
#include "rope.hpp"

namespace multihead {
inline namespace MULTIHEAD_ISA_NAMESPACE {
// One attention layer: model_dim → heads × head_dim queries, kv_groups × head_dim keys and
// kv_groups × value_dim values, heads × value_dim → model_dim output.
// MHA has kv_groups = heads, MQA kv_groups = 1, GQA anything in between that divides heads.
// The score modifiers (causal, window, soft-cap, ALiBi, sinks) are the ScoreModifiers it derives
// from (attention/modifiers.hpp), the same as an MLA layer's.
struct LayerConfig : ScoreModifiers {
  std::int64_t model_dim = 0;
  std::int64_t heads = 0;
  std::int64_t kv_groups = 0;
  std::int64_t head_dim = 0;
  std::optional<std::int64_t> value_dim;  // defaults to head_dim
  bool bias = false;                      // q, k, v and o projections carry a bias
  std::optional<bool> output_bias;        // o's alone; defaults to bias (Qwen2: q, k, v only)
  std::optional<float> scale;             // defaults to 1/sqrt(head_dim)
  std::optional<RopeConfig> rope;         // rotary position embedding of q and k (rope.hpp)

  std::int64_t v_dim() const { return value_dim.value_or(head_dim); }
  bool o_bias() const { return output_bias.value_or(bias); }
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
    validate_modifiers(heads);
    detail::checked_mul(weight_floats(), std::int64_t(sizeof(float)), "weight bytes");
  }

  // The floats of the four weights (and biases): Wq [heads·head_dim, model_dim], Wk and Wv
  // [kv_groups·(head_dim or value_dim), model_dim], Wo [model_dim, heads·value_dim]. Every
  // product and sum is checked: a config whose weights do not fit is refused by validate(), not
  // by an allocation.
  std::int64_t weight_floats() const {
    using detail::checked_add;
    using detail::checked_product;
    const char* what = "weight size (floats of Wq, Wk, Wv, Wo and their biases)";
    const std::int64_t projected = checked_add(  // rows of Wq, Wk and Wv
        checked_product(what, checked_add(heads, kv_groups, what), head_dim),
        checked_product(what, kv_groups, v_dim()), what);
    const std::int64_t inputs = checked_add(model_dim, bias ? 1 : 0, what);  // a bias: a column
    const std::int64_t attended = checked_product(what, heads, v_dim());
    return checked_add(checked_product(what, projected, inputs),
                       checked_product(what, model_dim, checked_add(attended, o_bias() ? 1 : 0, what)),
                       what);
  }
};

}  // namespace MULTIHEAD_ISA_NAMESPACE
}  // namespace multihead
