// What every cache does with rows: the checks of appended K/V against a cache's shape, block
// alignment, and narrowing float rows into the storage type (simd/convert.hpp).
#pragma once

#include <cstdint>
#include <numeric>

#include "../core/aligned_buffer.hpp"
#include "../core/error.hpp"
#include "../core/tensor_view.hpp"
#include "../simd/convert.hpp"
#include "../storage/codec.hpp"

namespace multihead {
inline namespace MULTIHEAD_ISA_NAMESPACE {
namespace detail {

// What both caches require of a token's K/V rows: positive group count and dims.
inline void check_cache_dims(std::int64_t kv_groups, std::int64_t head_dim,
                             std::int64_t value_dim) {
  require_positive(kv_groups, "kv_groups");
  require_positive(head_dim, "head_dim");
  require_positive(value_dim, "value_dim");
}

// n rounded up to a whole number of cache lines' worth of T, so that consecutive blocks stay
// 64-byte aligned (for a 34-byte q8 block, 32 of them: 17 lines).
template <class T>
std::int64_t round_up_to_lines(std::int64_t n, const char* what) {
  constexpr std::int64_t size = static_cast<std::int64_t>(sizeof(T));
  constexpr std::int64_t per_line = std::lcm(std::int64_t(kCacheAlignment), size) / size;
  return checked_mul((checked_add(n, per_line - 1, what)) / per_line, per_line, what);
}

// Checks an appended k or v against the cache's shape, naming the view and field.
inline void check_kv_input(const TensorView<const float>& x, const char* name, std::int64_t batch,
                           std::int64_t kv_groups, std::int64_t dim, const char* dim_name) {
  x.validate(name);
  require(x.batch() == batch, name, ".batch (", x.batch(), ") must equal the cache's batch (",
          batch, ")");
  require(x.heads() == kv_groups, name, ".heads (", x.heads(),
          ") must equal the cache's kv_groups (", kv_groups, ")");
  require(x.dim() == dim, name, ".dim (", x.dim(), ") must equal the cache's ", dim_name, " (", dim,
          ")");
}

// Appended views come in pairs (k and v; a latent and its RoPE key) of one token count.
inline std::int64_t same_tokens(const TensorView<const float>& a, const char* a_name,
                                const TensorView<const float>& b, const char* b_name) {
  require(a.tokens() == b.tokens(), "append: ", a_name, ".tokens (", a.tokens(), ") and ", b_name,
          ".tokens (", b.tokens(), ") differ");
  return a.tokens();
}

// Checks appended k and v against a KV cache's shape; returns their token count.
inline std::int64_t check_kv_append(const TensorView<const float>& k,
                                    const TensorView<const float>& v, std::int64_t batch,
                                    std::int64_t kv_groups, std::int64_t head_dim,
                                    std::int64_t value_dim) {
  check_kv_input(k, "append: k", batch, kv_groups, head_dim, "head_dim");
  check_kv_input(v, "append: v", batch, kv_groups, value_dim, "value_dim");
  return same_tokens(k, "k", v, "v");
}

// A contiguous cache holding `length` of `capacity` tokens must have room for n more.
inline void require_room(std::int64_t n, std::int64_t length, std::int64_t capacity) {
  require(n <= capacity - length, "append of ", n, " tokens to a cache holding ", length,
          " of capacity ", capacity);
}

// Narrows (or quantizes) tokens [t0, t0 + n) of batch entry b of x into dst, where each token's
// rows [heads, dim] are dense, Codec::units(dim) elements each, and tokens dst_stride elements
// apart: one conversion call when both sides are dense (the usual case), else one per row. A
// quantized row starts a block of its own, so quantized rows go one at a time.
template <class Storage>
void store_tokens(const TensorView<const float>& x, std::int64_t b, std::int64_t t0, std::int64_t n,
                  Storage* dst, std::int64_t dst_stride) {
  const std::int64_t heads = x.heads(), dim = x.dim();
  if constexpr (is_quantized_v<Storage>) {
    const std::int64_t row = Codec<Storage>::units(dim);
    for (std::int64_t t = 0; t < n; ++t)
      for (std::int64_t h = 0; h < heads; ++h)
        Codec<Storage>::encode(x.row(b, t0 + t, h), dim, dst + t * dst_stride + h * row);
  } else if (x.head_stride() == dim && x.token_stride() == heads * dim &&
             dst_stride == heads * dim) {
    convert(x.row(b, t0, 0), dst, n * heads * dim);
  } else {
    for (std::int64_t t = 0; t < n; ++t)
      for (std::int64_t h = 0; h < heads; ++h)
        convert(x.row(b, t0 + t, h), dst + t * dst_stride + h * dim, dim);
  }
}

// Into dense [n, heads, dim].
template <class Storage>
void store_tokens(const TensorView<const float>& x, std::int64_t b, std::int64_t t0, std::int64_t n,
                  Storage* dst) {
  store_tokens(x, b, t0, n, dst, x.heads() * Codec<Storage>::units(x.dim()));
}

}  // namespace detail
}  // namespace MULTIHEAD_ISA_NAMESPACE
}  // namespace multihead
