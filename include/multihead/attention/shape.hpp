// The extents of one kernel call, the one place they are assembled and checked, and the map
// between the rows a kernel computes and the (query position, head) they belong to.
//
// Every check throws std::invalid_argument naming the field and its value, e.g.
// "heads (12) must be divisible by kv_groups (5)", before anything is written.
#pragma once

#include <algorithm>
#include <cstdint>

#include "../core/error.hpp"
#include "../core/tensor_view.hpp"

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

namespace detail {

// What a K/V source holds: sequences, the longest one's tokens (0: all empty), and per token
// kv_groups K rows of head_dim and V rows of value_dim.
struct KvExtents {
  std::int64_t batch = 0, kv_len = 0, kv_groups = 0, head_dim = 0, value_dim = 0;
};

template <class T>
KvExtents kv_extents(const TensorView<T>& k, const TensorView<T>& v) {
  return {k.batch(), k.tokens(), k.heads(), k.dim(), v.dim()};
}

// The one KernelShape factory: q's tokens and heads over a K/V source. The shape is validated
// (an empty source counts as one key for the checks: a call over an empty cache is valid).
template <class Q>
KernelShape make_shape(const TensorView<const Q>& q, const KvExtents& kv) {
  KernelShape shape;
  shape.batch = kv.batch;
  shape.q_len = q.tokens();
  shape.kv_len = std::max<std::int64_t>(kv.kv_len, 1);
  shape.heads = q.heads();
  shape.kv_groups = kv.kv_groups;
  shape.head_dim = kv.head_dim;
  shape.value_dim = kv.value_dim;
  shape.validate();
  shape.kv_len = kv.kv_len;
  return shape;
}

// GQA head packing: the group_size query heads that share KV group g are stacked into one
// block of rows, row r = query position · group_size + head within the group, so each K/V row
// is read once for all of them. The one map between such a row and its (position, head).
struct RowSite {
  std::int64_t position, head;
};
inline RowSite row_site(std::int64_t g, std::int64_t r, std::int64_t group_size) {
  return {r / group_size, g * group_size + r % group_size};
}
// The row of (position, head) in its group's row space.
inline std::int64_t group_row(std::int64_t position, std::int64_t head, std::int64_t group_size) {
  return position * group_size + head % group_size;
}

}  // namespace detail
}  // namespace MULTIHEAD_ISA_NAMESPACE
}  // namespace multihead
