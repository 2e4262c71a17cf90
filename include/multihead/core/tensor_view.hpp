// Non-owning views of the buffers the kernels read and write.
//
// A TensorView is a row-major [batch, tokens, heads, dim] tensor with explicit element strides for
// the first three axes and a contiguous last axis: the layout that x·Wᵀ produces for a batch of
// token rows, and also the head-major layout [batch, heads, tokens, dim] by choice of strides.
// `size` is the number of elements addressable from `data`, so a view can be checked against its
// buffer before anything is read or written.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <type_traits>

#include "error.hpp"

namespace multihead {
inline namespace MULTIHEAD_ISA_NAMESPACE {

// A pointer and the number of elements behind it.
template <class T>
struct Span {
  T* data = nullptr;
  std::int64_t size = 0;
};

template <class T>
class TensorView {
 public:
  TensorView() = default;

  // A contiguous [batch, tokens, heads, dim] buffer of exactly batch·tokens·heads·dim elements.
  TensorView(T* data, std::int64_t size, std::int64_t batch, std::int64_t tokens,
             std::int64_t heads, std::int64_t dim)
      : data_(data), size_(size), batch_(batch), tokens_(tokens), heads_(heads), dim_(dim),
        batch_stride_(wrapping_mul(tokens, wrapping_mul(heads, dim))),
        token_stride_(wrapping_mul(heads, dim)), head_stride_(dim),
        exact_(true) {}

  // Any layout whose last axis is contiguous: element strides of the batch, token and head axes.
  static TensorView strided(T* data, std::int64_t size, std::int64_t batch, std::int64_t tokens,
                            std::int64_t heads, std::int64_t dim, std::int64_t batch_stride,
                            std::int64_t token_stride, std::int64_t head_stride) {
    TensorView view;
    view.data_ = data;
    view.size_ = size;
    view.batch_ = batch;
    view.tokens_ = tokens;
    view.heads_ = heads;
    view.dim_ = dim;
    view.batch_stride_ = batch_stride;
    view.token_stride_ = token_stride;
    view.head_stride_ = head_stride;
    return view;
  }

  // A view of mutable data converts to a view of const data.
  template <class U, class = std::enable_if_t<std::is_same_v<const U, T> && !std::is_same_v<U, T>>>
  TensorView(const TensorView<U>& other)  // NOLINT(google-explicit-constructor)
      : TensorView(strided(other.data(), other.size(), other.batch(), other.tokens(),
                           other.heads(), other.dim(), other.batch_stride(),
                           other.token_stride(), other.head_stride())) {
    exact_ = other.exact_size();
  }

  T* data() const noexcept { return data_; }
  std::int64_t size() const noexcept { return size_; }
  std::int64_t batch() const noexcept { return batch_; }
  std::int64_t tokens() const noexcept { return tokens_; }
  std::int64_t heads() const noexcept { return heads_; }
  std::int64_t dim() const noexcept { return dim_; }
  std::int64_t batch_stride() const noexcept { return batch_stride_; }
  std::int64_t token_stride() const noexcept { return token_stride_; }
  std::int64_t head_stride() const noexcept { return head_stride_; }
  // True for views made by the contiguous constructor, whose buffer must match exactly.
  bool exact_size() const noexcept { return exact_; }

  // Elements from data() to one past the last element any index reaches: the view's span in its
  // buffer. Call only on a validated view.
  std::int64_t extent() const noexcept {
    return (batch_ - 1) * batch_stride_ + (tokens_ - 1) * token_stride_ +
           (heads_ - 1) * head_stride_ + dim_;
  }

  // The first element of row (b, t, h). Call only on a validated view.
  T* row(std::int64_t b, std::int64_t t, std::int64_t h) const noexcept {
    return data_ + b * batch_stride_ + t * token_stride_ + h * head_stride_;
  }

  // Throws std::invalid_argument, naming the view, unless every extent is positive, no stride is
  // negative and the last element lies inside the buffer (or, for a contiguous view, the buffer
  // size equals the element count). All arithmetic is overflow-checked.
  void validate(const char* name) const {
    using detail::checked_add;
    using detail::checked_mul;
    using detail::require;
    require(data_ != nullptr || size_ == 0, name, ": data is null but size is ", size_);
    const std::int64_t extents[4] = {batch_, tokens_, heads_, dim_};
    const char* axes[4] = {"batch", "tokens", "heads", "dim"};
    for (int i = 0; i < 4; ++i)
      require(extents[i] > 0, name, ".", axes[i], " (", extents[i], ") must be positive");
    require(batch_stride_ >= 0 && token_stride_ >= 0 && head_stride_ >= 0, name,
            ": strides (", batch_stride_, ", ", token_stride_, ", ", head_stride_,
            ") must not be negative");
    const std::int64_t elements = detail::checked_product(name, batch_, tokens_, heads_, dim_);
    if (exact_) {
      require(size_ == elements, name, ": buffer size (", size_, ") does not match its shape [",
              batch_, ", ", tokens_, ", ", heads_, ", ", dim_, "] (", elements, " elements)");
      return;
    }
    // One past the last element: the furthest offset any index can reach.
    std::int64_t end = dim_;
    end = checked_add(end, checked_mul(batch_ - 1, batch_stride_, name), name);
    end = checked_add(end, checked_mul(tokens_ - 1, token_stride_, name), name);
    end = checked_add(end, checked_mul(heads_ - 1, head_stride_, name), name);
    require(end <= size_, name, ": buffer size (", size_, ") is too small for shape [", batch_,
            ", ", tokens_, ", ", heads_, ", ", dim_, "] with strides [", batch_stride_, ", ",
            token_stride_, ", ", head_stride_, ", 1] (needs ", end, " elements)");
  }

  // Throws unless no two indices address the same element: required of outputs, which several
  // threads write at once. Sorts the axes by stride and checks each one clears the span of the
  // ones below it.
  void validate_no_overlap(const char* name) const {
    struct Axis {
      std::int64_t extent, stride;
    };
    Axis axes[3] = {{batch_, batch_stride_}, {tokens_, token_stride_}, {heads_, head_stride_}};
    for (int i = 1; i < 3; ++i)  // insertion sort by stride, three elements
      for (int j = i; j > 0 && axes[j].stride < axes[j - 1].stride; --j) {
        const Axis swap = axes[j];
        axes[j] = axes[j - 1];
        axes[j - 1] = swap;
      }
    std::int64_t span = dim_;  // elements covered by the axes below the current one
    for (const Axis& axis : axes) {
      if (axis.extent == 1) continue;
      detail::require(axis.stride >= span, name, ": strides [", batch_stride_, ", ",
                      token_stride_, ", ", head_stride_,
                      ", 1] make elements overlap; an output needs distinct elements");
      span = axis.stride * (axis.extent - 1) + span;  // cannot overflow: validate() bounded it
    }
  }

 private:
  // Strides of a contiguous view are computed before validate() can reject sizes that overflow;
  // wrapping keeps that well defined, and validate() checks the full product.
  static std::int64_t wrapping_mul(std::int64_t a, std::int64_t b) noexcept {
    return static_cast<std::int64_t>(static_cast<std::uint64_t>(a) * static_cast<std::uint64_t>(b));
  }

  T* data_ = nullptr;
  std::int64_t size_ = 0;
  std::int64_t batch_ = 0, tokens_ = 0, heads_ = 0, dim_ = 0;
  std::int64_t batch_stride_ = 0, token_stride_ = 0, head_stride_ = 0;
  bool exact_ = false;
};

namespace detail {

// The bytes of one argument, named for messages: what the aliasing checks compare.
struct ByteRange {
  const void* data;
  std::int64_t bytes;
  const char* name;
};
template <class T>
ByteRange byte_range(const TensorView<T>& view, const char* name) {
  return {view.data(),
          view.data() == nullptr ? 0 : checked_mul(view.extent(), std::int64_t(sizeof(T)), name),
          name};
}
template <class T>
ByteRange byte_range(const Span<T>& span, const char* name) {
  return {span.data,
          span.data == nullptr ? 0 : checked_mul(span.size, std::int64_t(sizeof(T)), name), name};
}

// Throws unless `output` shares no byte with any of `inputs` (outputs of one call included):
// a kernel would read what it has already overwritten, or race with itself. Compared as
// integers, since the ranges may lie in different allocations.
inline void require_apart(const ByteRange& output, std::initializer_list<ByteRange> inputs) {
  const auto begin = reinterpret_cast<std::uintptr_t>(output.data);
  for (const ByteRange& input : inputs) {
    if (output.bytes == 0 || input.bytes == 0) continue;
    const auto other = reinterpret_cast<std::uintptr_t>(input.data);
    require(begin + std::uintptr_t(output.bytes) <= other ||
                other + std::uintptr_t(input.bytes) <= begin,
            output.name, " overlaps ", input.name,
            ": an output must not share memory with an input or another output");
  }
}

}  // namespace detail

}  // namespace MULTIHEAD_ISA_NAMESPACE
}  // namespace multihead
