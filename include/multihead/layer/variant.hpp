// The dense attention variants: tags for Attention<Variant> that say which KV-group counts a
// layer may have. MHA, GQA and MQA share one implementation; only the accepted groups differ.
#pragma once

#include "config.hpp"

namespace multihead {
inline namespace MULTIHEAD_ISA_NAMESPACE {
namespace variant {

// Multi-head attention: every query head has its own K/V head (kv_groups = heads).
struct MultiHead {
  static constexpr const char* name = "MHA";
  static void check(const LayerConfig& config) {
    detail::require(config.kv_groups == config.heads, "MHA: kv_groups (", config.kv_groups,
                    ") must equal heads (", config.heads, ")");
  }
};

// Grouped-query attention: heads / kv_groups query heads share each K/V head. Any kv_groups
// that divides heads is accepted, so MHA and MQA are its two extremes.
struct GroupedQuery {
  static constexpr const char* name = "GQA";
  static void check(const LayerConfig&) {}
};

// Multi-query attention: all query heads share one K/V head (kv_groups = 1).
struct MultiQuery {
  static constexpr const char* name = "MQA";
  static void check(const LayerConfig& config) {
    detail::require(config.kv_groups == 1, "MQA: kv_groups (", config.kv_groups,
                    ") must be 1");
  }
};

}  // namespace variant
}  // namespace MULTIHEAD_ISA_NAMESPACE
}  // namespace multihead
