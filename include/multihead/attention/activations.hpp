// Queries and outputs in float, bf16 or fp16: how a kernel reads the one and writes the other.
//
// A kernel touches its queries once per block (packing them, widened, into the block's fp32
// layout) and its outputs once per row (normalised, then narrowed), so their element type is
// a run-time choice here, a std::variant visited per row, and not a template parameter of the
// kernels: the tiles are compiled once per K/V storage type, never once per (Q, O) pair. The
// fused kernel widens its K and V a tile at a time the same way, so it is compiled once for all
// three (compiled per type, its bf16 and fp16 copies took 50% more time to build the kernels).
// Everything between the pack and the store runs in fp32.
#pragma once

#include <cstdint>
#include <type_traits>
#include <variant>

#include "../core/tensor_view.hpp"
#include "../simd/convert.hpp"
#include "../storage/half.hpp"

namespace multihead {
inline namespace MULTIHEAD_ISA_NAMESPACE {

// The element types of queries, keys, values and outputs: float, bf16, fp16.
template <class T>
constexpr bool is_activation_type_v = is_storage_type_v<std::remove_const_t<T>>;

template <class T>
constexpr const char* element_name() {
  using U = std::remove_const_t<T>;
  if constexpr (std::is_same_v<U, bf16>) return "bf16";
  else if constexpr (std::is_same_v<U, fp16>) return "fp16";
  else return "float";
}

namespace detail {

// An input (queries, or a fused call's keys or values) and an output of any of the three types.
using InputRows =
    std::variant<TensorView<const float>, TensorView<const bf16>, TensorView<const fp16>>;
using QueryRows = InputRows;
using OutputRows = std::variant<TensorView<float>, TensorView<bf16>, TensorView<fp16>>;

// Tokens [t0, t0 + count) of batch entry b of a view, as a view of batch 1.
template <class T>
TensorView<T> token_range(const TensorView<T>& view, std::int64_t b, std::int64_t t0,
                          std::int64_t count) {
  T* first = view.row(b, t0, 0);
  return TensorView<T>::strided(first, view.size() - (first - view.data()), 1, count,
                                view.heads(), view.dim(), view.batch_stride(),
                                view.token_stride(), view.head_stride());
}
template <class Rows>
Rows token_range(const Rows& rows, std::int64_t b, std::int64_t t0, std::int64_t count) {
  return std::visit([&](const auto& view) { return Rows(token_range(view, b, t0, count)); }, rows);
}

// The element types of a call's queries and outputs, checked and made const as the kernels read
// them (activations.hpp).
template <class Q, class O>
void check_activation_types() {
  static_assert(is_activation_type_v<Q> && is_activation_type_v<O>,
                "q and o must be float, bf16 or fp16");
  static_assert(!std::is_const_v<O>, "o must be writable");
}
template <class T>
TensorView<const std::remove_const_t<T>> const_view(const TensorView<T>& view) {
  return view;
}

// Rows [t0, t0 + count) of head h of batch entry 0 of x, widened into `count` rows of `pitch`
// floats.
inline void widen_rows(const InputRows& x, std::int64_t t0, int count, std::int64_t h, float* out,
                       std::int64_t pitch) {
  std::visit(
      [&](const auto& view) {
        for (int j = 0; j < count; ++j) convert(view.row(0, t0 + j, h), out + j * pitch, view.dim());
      },
      x);
}

// Row (b, t, h) of q, widened and multiplied by `scale`: dim values to out[p · step].
inline void load_query_row(const QueryRows& q, std::int64_t b, std::int64_t t, std::int64_t h,
                           float scale, float* out, std::int64_t step = 1) {
  std::visit(
      [&](const auto& view) {
        const auto* source = view.row(b, t, h);
        for (std::int64_t p = 0; p < view.dim(); ++p) out[p * step] = to_float(source[p]) * scale;
      },
      q);
}

// Writes dim values, values[c · step] · factor, to row (b, t, h) of o, narrowed to its type
// (round to nearest even).
inline void store_output_row(const OutputRows& o, std::int64_t b, std::int64_t t, std::int64_t h,
                             const float* values, std::int64_t step, float factor) {
  std::visit(
      [&](const auto& view) {
        using T = std::remove_pointer_t<decltype(view.data())>;
        T* target = view.row(b, t, h);
        for (std::int64_t c = 0; c < view.dim(); ++c)
          target[c] = from_float<T>(values[c * step] * factor);
      },
      o);
}

}  // namespace detail
}  // namespace MULTIHEAD_ISA_NAMESPACE
}  // namespace multihead
