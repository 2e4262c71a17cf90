// Merging attention results over disjoint key sets through their log-sum-exps.
//
// If (o_a, lse_a) is attention of some queries over keys A and (o_b, lse_b) over keys B, then
// attention over A ∪ B is
//   lse = log(exp(lse_a) + exp(lse_b))
//   o   = exp(lse_a − lse)·o_a + exp(lse_b − lse)·o_b
// which is how a long context is sharded across threads or machines, how cascade attention
// combines a shared prefix with each request's own suffix; computed by the online-softmax state's
// own merge (state.hpp), as the decode kernel combines its cache splits. A side that saw no key
// (lse = −inf) contributes nothing; if neither did, the result is 0 with lse −inf.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>

#include "../core/error.hpp"
#include "../core/tensor_view.hpp"
#include "options.hpp"
#include "state.hpp"

namespace multihead {
inline namespace MULTIHEAD_ISA_NAMESPACE {
namespace detail {

// An output may be one of the inputs (in place), element for element, or apart from it.
template <class T, class U>
void check_same_or_apart(const TensorView<T>& out, const char* out_name, const TensorView<U>& in,
                         const char* in_name) {
  const float* a = out.data();
  const float* b = in.data();
  const bool apart = a + out.extent() <= b || b + in.extent() <= a;
  const bool same = a == b && out.batch_stride() == in.batch_stride() &&
                    out.token_stride() == in.token_stride() &&
                    out.head_stride() == in.head_stride();
  require(apart || same, out_name, " overlaps ", in_name,
          " without being the same view: write in place only with identical strides");
}

inline void check_lse_span(const float* data, std::int64_t size, std::int64_t rows,
                           const char* name) {
  require(data != nullptr, name, ": data is null");
  require(size == rows, name, ": size (", size, ") must be batch * heads * q_len (", rows, ")");
}

}  // namespace detail

// Combines (o_a, lse_a) and (o_b, lse_b), attention of the same queries over two disjoint key
// sets, into attention over both: o [batch, q_len, heads, value_dim] and optionally lse
// [batch, heads, q_len] (the layout every kernel writes). o may be o_a or o_b itself and lse may
// be lse_a or lse_b (in place). Throws std::invalid_argument, before writing, on shapes that
// differ or outputs that partly overlap an input.
inline void merge_states(const TensorView<const float>& o_a, Span<const float> lse_a,
                         const TensorView<const float>& o_b, Span<const float> lse_b,
                         const TensorView<float>& o, LseOutput lse = {}) {
  using detail::require;
  o_a.validate("o_a");
  o_b.validate("o_b");
  o.validate("o");
  o.validate_no_overlap("o");
  const auto same_shape = [](const auto& x, const auto& y) {
    return x.batch() == y.batch() && x.tokens() == y.tokens() && x.heads() == y.heads() &&
           x.dim() == y.dim();
  };
  require(same_shape(o_a, o_b) && same_shape(o_a, o), "merge_states: o_a [", o_a.batch(), ", ",
          o_a.tokens(), ", ", o_a.heads(), ", ", o_a.dim(), "], o_b [", o_b.batch(), ", ",
          o_b.tokens(), ", ", o_b.heads(), ", ", o_b.dim(), "] and o [", o.batch(), ", ",
          o.tokens(), ", ", o.heads(), ", ", o.dim(), "] must have the same shape");
  const std::int64_t rows = detail::checked_product("lse size (batch * heads * q_len)",
                                                    o.batch(), o.heads(), o.tokens());
  detail::check_lse_span(lse_a.data, lse_a.size, rows, "lse_a");
  detail::check_lse_span(lse_b.data, lse_b.size, rows, "lse_b");
  if (lse.data != nullptr || lse.size != 0) {
    detail::check_lse_span(lse.data, lse.size, rows, "lse");
    for (const float* in : {lse_a.data, lse_b.data})
      require(lse.data == in || lse.data + rows <= in || in + rows <= lse.data,
              "lse overlaps lse_a or lse_b without being the same buffer");
  }
  detail::check_same_or_apart(o, "o", o_a, "o_a");
  detail::check_same_or_apart(o, "o", o_b, "o_b");

  // Each side is a state of the online softmax (state.hpp): its normalised output, with max its
  // lse and sum 1, or sum 0 when it saw no key (lse −inf).
  constexpr float kNone = -std::numeric_limits<float>::infinity();
  for (std::int64_t b = 0; b < o.batch(); ++b)
    for (std::int64_t h = 0; h < o.heads(); ++h)
      for (std::int64_t t = 0; t < o.tokens(); ++t) {
        const std::int64_t index = (b * o.heads() + h) * o.tokens() + t;
        const float la = lse_a.data[index], lb = lse_b.data[index];
        const detail::MergeWeights w =
            detail::merge_weights(la, la == kNone ? 0.0f : 1.0f, lb, lb == kNone ? 0.0f : 1.0f);
        const float inverse = inverse_sum(w.sum);
        const float* a = o_a.row(b, t, h);
        const float* x = o_b.row(b, t, h);
        float* out = o.row(b, t, h);  // may be a or x itself: each element is read, then written
        for (std::int64_t c = 0; c < o.dim(); ++c) out[c] = (w.a * a[c] + w.b * x[c]) * inverse;
        if (lse.data != nullptr) lse.data[index] = log_sum_exp(w.max, w.sum);
      }
}

}  // namespace MULTIHEAD_ISA_NAMESPACE
}  // namespace multihead
