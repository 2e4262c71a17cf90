// The contiguous latent cache of one MLA layer (DeepSeek-V2/V3): per token only the latent c_KV
// (latent_dim values, d_c) and the RoPE key k_R shared by all heads (rope_dim values, d_r; 0 for
// layers without RoPE), side by side in one row:
//
//   rows [batch, capacity, latent_dim + rope_dim]      row = [c_KV; k_R]
//
// Decoding attends over the rows as MQA (one KV group): the keys are whole rows (qk-dim
// d_c + d_r), the values their first d_c elements (v-dim d_c). keys() and values() are two views
// of the same memory, so the values are not stored twice: a token costs d_c + d_r elements,
// against 2·heads·head_dim for MHA.
//
// Storage as for KvCache (kv_cache.hpp): float, bf16, fp16, or q8 / q4, whose blocks of 32 need a
// latent_dim that is a multiple of 32 (the RoPE key then starts a block, and the values are the
// keys' first blocks); views count their last axis in codec units. Appends take float and
// narrow (or quantize) once. Memory is
// allocated once, in the constructor, 64-byte aligned, and left uninitialised (only the filled
// part is ever read). Not thread-safe for writes: append and clear need exclusive access; reads
// may be concurrent.
#pragma once

#include <cstdint>

#include "../attention/kv_source.hpp"
#include "../attention/shape.hpp"
#include "../core/error.hpp"
#include "../core/tensor_view.hpp"
#include "../storage/codec.hpp"
#include "kv_cache.hpp"
#include "rows.hpp"
#include "slot_lengths.hpp"

namespace multihead {
inline namespace MULTIHEAD_ISA_NAMESPACE {
namespace detail {

// What both latent caches require of a token's row (its size checked against overflow).
template <class Storage>
void check_latent_dims(std::int64_t latent_dim, std::int64_t rope_dim) {
  require_positive(latent_dim, "latent_dim");
  require(rope_dim >= 0, "rope_dim (", rope_dim, ") must not be negative");
  checked_add(latent_dim, rope_dim, "latent_dim + rope_dim");
  if constexpr (is_quantized_v<Storage>)
    require(latent_dim % Storage::kValues == 0, "latent_dim (", latent_dim,
            ") must be a multiple of ", Storage::kValues, " in a quantized latent cache");
}

// Elements of a latent row: the latent's, then the RoPE key's (codec units).
template <class Storage>
std::int64_t latent_row_units(std::int64_t latent_dim, std::int64_t rope_dim) {
  return Codec<Storage>::units(latent_dim) + Codec<Storage>::units(rope_dim);
}

// Checks an appended latent c_kv [batch, n, 1, latent_dim] and RoPE key k_rope
// [batch, n, 1, rope_dim] against a latent cache's shape; returns n. With rope_dim 0 there is no
// RoPE key: k_rope must be empty (size 0, as a default TensorView is).
inline std::int64_t check_latent_append(const TensorView<const float>& c_kv,
                                        const TensorView<const float>& k_rope, std::int64_t batch,
                                        std::int64_t latent_dim, std::int64_t rope_dim) {
  check_kv_input(c_kv, "append: c_kv", batch, 1, latent_dim, "latent_dim");
  if (rope_dim == 0) {
    require(k_rope.size() == 0, "append: k_rope must be empty (the cache's rope_dim is 0) but "
            "has size ", k_rope.size());
    return c_kv.tokens();
  }
  require(k_rope.data() != nullptr || k_rope.size() != 0, "append: k_rope is missing: the "
          "cache's rope_dim is ", rope_dim, ", so every token needs a RoPE key");
  check_kv_input(k_rope, "append: k_rope", batch, 1, rope_dim, "rope_dim");
  return same_tokens(c_kv, "c_kv", k_rope, "k_rope");
}

// Narrows tokens [t0, t0 + n) of batch entry b into latent rows from dst: c_kv's values first,
// then k_rope's.
template <class Storage>
void store_latent_rows(const TensorView<const float>& c_kv, const TensorView<const float>& k_rope,
                       std::int64_t b, std::int64_t t0, std::int64_t n, std::int64_t latent_dim,
                       std::int64_t rope_dim, Storage* dst) {
  const std::int64_t row = latent_row_units<Storage>(latent_dim, rope_dim);
  store_tokens(c_kv, b, t0, n, dst, row);
  if (rope_dim > 0) store_tokens(k_rope, b, t0, n, dst + Codec<Storage>::units(latent_dim), row);
}

}  // namespace detail

template <class Storage>
class LatentCache {
  static_assert(is_cache_storage_v<Storage>,
                "LatentCache<Storage>: Storage must be float, bf16, fp16, q8 or q4");

 public:
  using storage_type = Storage;

  // Throws std::invalid_argument unless batch, capacity and latent_dim are positive, rope_dim is
  // not negative and the buffer's size fits in 64 bits; then allocates the buffer.
  LatentCache(std::int64_t batch, std::int64_t capacity, std::int64_t latent_dim,
              std::int64_t rope_dim)
      : batch_(batch), capacity_(capacity), latent_dim_(latent_dim), rope_dim_(rope_dim) {
    detail::require_positive(batch, "batch");
    detail::require_positive(capacity, "capacity");
    detail::check_latent_dims<Storage>(latent_dim, rope_dim);
    buffer_ = detail::AlignedBuffer<Storage>(detail::checked_product(
        "latent cache size (batch * capacity * (latent_dim + rope_dim))", batch, capacity,
        row()));
    lengths_ = detail::SlotLengths(batch);
  }

  std::int64_t batch() const noexcept { return batch_; }
  std::int64_t capacity() const noexcept { return capacity_; }
  // The length every sequence has (throws if slots were appended to one at a time and differ:
  // ask length(b)), slot b's, and all of them, as KvCache keeps them.
  std::int64_t length() const { return lengths_.common(); }
  std::int64_t length(std::int64_t b) const { return lengths_.of(b); }
  Span<const std::int64_t> lengths() const noexcept { return lengths_.all(); }
  std::int64_t latent_dim() const noexcept { return latent_dim_; }
  std::int64_t rope_dim() const noexcept { return rope_dim_; }

  // Bytes one token of one sequence occupies: its latent and its RoPE key.
  std::int64_t bytes_per_token() const noexcept {
    return Codec<Storage>::row_bytes(latent_dim_) + Codec<Storage>::row_bytes(rope_dim_);
  }

  // Appends c_kv [batch, n, 1, latent_dim] and k_rope [batch, n, 1, rope_dim], n ≥ 1 tokens for
  // every sequence, narrowed to Storage. Any strides with a contiguous last axis (both may be
  // column ranges of one projection's output). With rope_dim 0, k_rope must be empty: call
  // append(c_kv). Throws std::invalid_argument, with the cache unchanged, if a shape differs
  // from the cache's or the tokens do not fit.
  void append(TensorView<const float> c_kv, TensorView<const float> k_rope) {
    const std::int64_t n =
        detail::check_latent_append(c_kv, k_rope, batch_, latent_dim_, rope_dim_);
    detail::require_room(n, lengths_.longest(), capacity_);
    for (std::int64_t b = 0; b < batch_; ++b)
      detail::store_latent_rows(c_kv, k_rope, b, 0, n, latent_dim_, rope_dim_, next_row(b));
    lengths_.grow_all(n);
  }

  // For a cache with rope_dim 0 (throws otherwise).
  void append(TensorView<const float> c_kv) { append(c_kv, {}); }

  // Appends c_kv [1, n, 1, latent_dim] and k_rope [1, n, 1, rope_dim] to sequence b alone; the
  // same checks, and b in [0, batch).
  void append(std::int64_t b, TensorView<const float> c_kv, TensorView<const float> k_rope) {
    const std::int64_t length = lengths_.of(b);
    const std::int64_t n = detail::check_latent_append(c_kv, k_rope, 1, latent_dim_, rope_dim_);
    detail::require_room(n, length, capacity_);
    detail::store_latent_rows(c_kv, k_rope, 0, 0, n, latent_dim_, rope_dim_, next_row(b));
    lengths_.grow(b, n);
  }
  void append(std::int64_t b, TensorView<const float> c_kv) { append(b, c_kv, {}); }

  // The filled part as attention reads it, one KV group: keys [batch, length, 1, latent_dim +
  // rope_dim], whole rows, and values [batch, length, 1, latent_dim], the same rows' first
  // latent_dim elements; both with the strides of the full buffer (token stride latent_dim +
  // rope_dim). With length 0 the views have no tokens: do not validate them, there is nothing
  // to read.
  TensorView<const Storage> keys() const noexcept { return rows(row()); }
  TensorView<const Storage> values() const noexcept {
    return rows(Codec<Storage>::units(latent_dim_));
  }

  // The KV-source contract (attention/kv_source.hpp): the filled rows as the kernels read them,
  // MQA-like (one group of latent_dim + rope_dim key and latent_dim value elements), and their
  // extents.
  detail::KvRows<Storage> kv_rows() const {
    detail::KvRows<Storage> rows = detail::view_rows(keys(), values());
    rows.lengths = lengths_.data();
    return rows;
  }
  detail::KvExtents kv_extents() const {
    return {batch_, lengths_.longest(), 1, latent_dim_ + rope_dim_, latent_dim_};
  }
  // What a call over `sequences` of its slots reads (as a paged cache's); kv_len the caller's.
  detail::KvExtents kv_extents(std::int64_t sequences) const {
    return {sequences, 0, 1, latent_dim_ + rope_dim_, latent_dim_};
  }

  // The cache as a paged pool (paged_view.hpp), as PagedLatentCache::view(): slot b is block b
  // of `capacity` rows, one group, each value row the first latent_dim values of its key row.
  PagedKvView<Storage> view() const noexcept {
    const std::int64_t r = row();
    return {buffer_.data(), buffer_.data(), batch_, capacity_, 1, latent_dim_ + rope_dim_,
            latent_dim_, capacity_ * r, r, r, capacity_ * r, r, r};
  }

  // Forgets every token (or sequence b's); the memory stays allocated for the next sequences.
  void clear() noexcept { lengths_.clear(); }
  void clear(std::int64_t b) { lengths_.clear(b); }

 private:
  // Elements of a row.
  std::int64_t row() const noexcept {
    return detail::latent_row_units<Storage>(latent_dim_, rope_dim_);
  }

  // Where slot b's next row goes.
  Storage* next_row(std::int64_t b) const noexcept {
    return buffer_.data() + (b * capacity_ + lengths_.data()[b]) * row();
  }

  // The first `dim` elements of every filled row.
  TensorView<const Storage> rows(std::int64_t dim) const noexcept {
    return TensorView<const Storage>::strided(buffer_.data(), buffer_.size(), batch_,
                                              lengths_.longest(), 1,
                                              dim, capacity_ * row(), row(), row());
  }

  std::int64_t batch_, capacity_, latent_dim_, rope_dim_;
  detail::SlotLengths lengths_;
  detail::AlignedBuffer<Storage> buffer_;
};

}  // namespace MULTIHEAD_ISA_NAMESPACE
}  // namespace multihead
