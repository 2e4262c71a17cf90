// P·V over the keys a row sees, for the rare tile where it matters which those are.
//
// The tiles' P·V products run over every key of a tile, with a hidden key's probability 0. When
// some row of a tile hides some key (a causal diagonal, a window's edge, a mask), and a V row of
// that tile holds a NaN or an infinity, 0 · NaN would reach the hiding row. The kernels mark
// hidden keys' probabilities −0 in such tiles (state.hpp's kHiddenProbability), ask the codec
// whether the tile's V rows are finite, and only if not take the scalar update here, which
// skips the hidden keys. The semantics: attention/modifiers.hpp, "Non-finite values".
#pragma once

#include <algorithm>
#include <cstdint>

#include "../simd/ops.hpp"
#include "../storage/codec.hpp"
#include "state.hpp"

namespace multihead {
inline namespace MULTIHEAD_ISA_NAMESPACE {
namespace detail {

// Whether `keys` rows of `dv` values (codec units `stride` apart) are all finite.
template <class S>
bool values_finite(const S* rows, std::int64_t stride, std::int64_t keys, std::int64_t dv) {
  for (std::int64_t j = 0; j < keys; ++j)
    if (!Codec<S>::finite(rows + j * stride, dv)) return false;
  return true;
}

// out(r, c) += p(r, j) · v[j][c] for rows [0, rows), keys [0, keys) and columns [0, dv), except
// where p(r, j) is a hidden key's (−0). p(r, j) returns a probability, out(r, c) a reference to
// an accumulator. V rows of any codec, widened a block of columns at a time.
template <class S, class Probability, class Output>
void accumulate_visible(std::int64_t rows, std::int64_t keys, const S* v, std::int64_t v_stride,
                        std::int64_t dv, Probability p, Output out) {
  constexpr std::int64_t kColumns = 64;  // a multiple of every codec's block
  float values[kColumns];
  for (std::int64_t j = 0; j < keys; ++j)
    for (std::int64_t c0 = 0; c0 < dv; c0 += kColumns) {
      const std::int64_t n = std::min(kColumns, dv - c0);
      Codec<S>::template widen<simd::Ops>(v + j * v_stride + Codec<S>::units(c0), n, values);
      for (std::int64_t r = 0; r < rows; ++r) {
        const float weight = p(r, j);
        if (hidden_probability(weight)) continue;
        for (std::int64_t c = 0; c < n; ++c) out(r, c0 + c) += weight * values[c];
      }
    }
}

}  // namespace detail
}  // namespace MULTIHEAD_ISA_NAMESPACE
}  // namespace multihead
