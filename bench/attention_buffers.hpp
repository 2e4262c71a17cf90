// The tensors of one attention benchmark: allocated and filled once, outside any timed loop.
#pragma once

#include <multihead/multihead.hpp>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <new>
#include <random>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "shapes.hpp"

namespace bench {

// The four views a kernel is called with: fp32, or bf16 holding the same values rounded.
template <class T>
struct ViewsOf {
  multihead::TensorView<const T> q, k, v;
  multihead::TensorView<T> o;
};
using AttentionViews = ViewsOf<float>;
using Bf16AttentionViews = ViewsOf<multihead::bf16>;

// A 64-byte aligned float buffer (a cache line, and the alignment AVX-512 loads like best).
class AlignedFloats {
 public:
  explicit AlignedFloats(std::int64_t size) : size_(size) {
    const std::size_t bytes = (static_cast<std::size_t>(size) * sizeof(float) + 63) / 64 * 64;
    data_.reset(static_cast<float*>(std::aligned_alloc(64, bytes)));
    if (!data_) throw std::bad_alloc();
  }
  float* data() const noexcept { return data_.get(); }
  std::int64_t size() const noexcept { return size_; }

 private:
  struct Free {
    void operator()(float* p) const noexcept { std::free(p); }
  };
  std::unique_ptr<float, Free> data_;
  std::int64_t size_;
};

// Q, K and V hold uniform random values in [-1, 1) (a seeded generator: every run sees the same
// data); O is zeroed, so all four are first touched here rather than in the timed loop.
class AttentionBuffers {
 public:
  explicit AttentionBuffers(const Shape& shape)
      : shape_(shape), q_(shape.q_elements()), k_(shape.kv_elements()),
        v_(shape.kv_elements()), o_(shape.q_elements()) {
    std::mt19937 generator(20240601);
    std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
    for (const AlignedFloats* buffer : {&q_, &k_, &v_})
      for (std::int64_t i = 0; i < buffer->size(); ++i) buffer->data()[i] = uniform(generator);
    std::fill(o_.data(), o_.data() + o_.size(), 0.0f);
  }

  AttentionViews views() const { return views_of(q_, k_, v_, o_); }

  // The bf16 copies, made on the first request.
  Bf16AttentionViews bf16_views() const {
    if (!q16_) {
      q16_ = std::make_unique<Bf16>(q_);
      k16_ = std::make_unique<Bf16>(k_);
      v16_ = std::make_unique<Bf16>(v_);
      o16_ = std::make_unique<Bf16>(o_);
    }
    return views_of(*q16_, *k16_, *v16_, *o16_);
  }

  // The buffers of `shape`, kept from one call to the next: Google Benchmark calls a benchmark
  // several times (to size its iterations, then once per repetition) and consecutive
  // benchmarks share a shape, so filling them once per shape change saves seconds. Only the
  // last shape's buffers are kept, so memory stays at one shape's worth. Shapes are told apart
  // by name, which is unique across the shape tables.
  static const AttentionBuffers& of(const Shape& shape) {
    static std::unique_ptr<AttentionBuffers> cached;
    if (!cached || cached->shape_.name != std::string(shape.name)) {
      cached.reset();  // free the old shape before allocating the new one
      cached = std::make_unique<AttentionBuffers>(shape);
    }
    return *cached;
  }

 private:
  // A buffer's values rounded to bf16.
  struct Bf16 {
    explicit Bf16(const AlignedFloats& x) : values(static_cast<std::size_t>(x.size())) {
      multihead::convert(x.data(), values.data(), x.size());
    }
    multihead::bf16* data() { return values.data(); }
    std::int64_t size() const { return std::int64_t(values.size()); }
    std::vector<multihead::bf16> values;
  };

  template <class Buffer>
  ViewsOf<std::remove_pointer_t<decltype(std::declval<Buffer&>().data())>> views_of(
      Buffer& q, Buffer& k, Buffer& v, Buffer& o) const {
    const Shape& s = shape_;
    return {{q.data(), q.size(), s.batch, s.lq, s.heads, s.d},
            {k.data(), k.size(), s.batch, s.lkv, s.groups, s.d},
            {v.data(), v.size(), s.batch, s.lkv, s.groups, s.d},
            {o.data(), o.size(), s.batch, s.lq, s.heads, s.d}};
  }

  Shape shape_;
  AlignedFloats q_, k_, v_, o_;
  mutable std::unique_ptr<Bf16> q16_, k16_, v16_, o16_;
};

}  // namespace bench
