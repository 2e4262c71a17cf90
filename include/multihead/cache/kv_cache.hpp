// The contiguous KV cache of one layer: a batch of sequences, each in a slot of its own.
//
//   K [batch, capacity, kv_groups, head_dim]    V [batch, capacity, kv_groups, value_dim]
//
// Sequences grow together (append(k, v): the same new tokens for each) or one at a time
// (append(b, k, v): a server's slots, each sequence at its own position), and each keeps its
// own length. Slot b is a pool block of `capacity` tokens (view()), so everything that reads a
// paged pool, batch_attention over a subset of slots included, reads this cache too.
//
// Storage is float, bf16, fp16 (storage/half.hpp) or a quantized format, q8 or q4
// (storage/quantized.hpp); appends take float and narrow (or quantize) once, kernels read the
// storage type through its codec and widen as they go. A row of head_dim values is
// Codec<Storage>::units(head_dim) elements: head_dim itself for the plain types, its blocks of 32
// for q8 and q4 (keys() and values() count their last axis in those elements). Memory is allocated once, in
// the constructor, 64-byte aligned (in huge pages when large: aligned_buffer.hpp), and left
// uninitialised (only the filled part is ever read).
// Not thread-safe for writes: append and clear need exclusive access; reads may be concurrent.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "../attention/kv_source.hpp"
#include "../attention/shape.hpp"
#include "../core/aligned_buffer.hpp"
#include "../core/error.hpp"
#include "../core/tensor_view.hpp"
#include "../storage/codec.hpp"
#include "paged_view.hpp"
#include "rows.hpp"
#include "slot_lengths.hpp"

namespace multihead {
inline namespace MULTIHEAD_ISA_NAMESPACE {
template <class Storage>
class KvCache {
  static_assert(is_cache_storage_v<Storage>,
                "KvCache<Storage>: Storage must be float, bf16, fp16, q8 or q4");

 public:
  using storage_type = Storage;

  // Throws std::invalid_argument unless every size is positive and the buffers' sizes fit in
  // 64 bits; then allocates both buffers.
  KvCache(std::int64_t batch, std::int64_t capacity, std::int64_t kv_groups, std::int64_t head_dim,
          std::int64_t value_dim)
      : batch_(batch),
        capacity_(capacity),
        kv_groups_(kv_groups),
        head_dim_(head_dim),
        value_dim_(value_dim) {
    detail::require_positive(batch, "batch");
    detail::require_positive(capacity, "capacity");
    detail::check_cache_dims(kv_groups, head_dim, value_dim);
    const std::int64_t k_size =
        detail::checked_product("K cache size (batch * capacity * kv_groups * head_dim)", batch,
                                capacity, kv_groups, Codec<Storage>::units(head_dim));
    const std::int64_t v_size =
        detail::checked_product("V cache size (batch * capacity * kv_groups * value_dim)", batch,
                                capacity, kv_groups, Codec<Storage>::units(value_dim));
    // One allocation; V starts on a cache line of its own.
    v_offset_ = detail::round_up_to_lines<Storage>(k_size, "K cache size");
    buffer_ = detail::AlignedBuffer<Storage>(detail::checked_add(v_offset_, v_size, "cache size"));
    k_size_ = k_size;
    v_size_ = v_size;
    lengths_ = detail::SlotLengths(batch);
  }

  // value_dim = head_dim.
  KvCache(std::int64_t batch, std::int64_t capacity, std::int64_t kv_groups, std::int64_t head_dim)
      : KvCache(batch, capacity, kv_groups, head_dim, head_dim) {}

  std::int64_t batch() const noexcept { return batch_; }
  std::int64_t capacity() const noexcept { return capacity_; }
  // The length every sequence has; throws std::invalid_argument if they differ (sequences
  // appended to one at a time): ask length(b).
  std::int64_t length() const { return lengths_.common(); }
  std::int64_t length(std::int64_t b) const { return lengths_.of(b); }
  // Every sequence's length, [batch] (FlashAttention's cache_seqlens).
  Span<const std::int64_t> lengths() const noexcept { return lengths_.all(); }
  std::int64_t kv_groups() const noexcept { return kv_groups_; }
  std::int64_t head_dim() const noexcept { return head_dim_; }
  std::int64_t value_dim() const noexcept { return value_dim_; }

  // Bytes one token of one sequence occupies: K and V of every group.
  std::int64_t bytes_per_token() const noexcept {
    return kv_groups_ * (Codec<Storage>::row_bytes(head_dim_) + Codec<Storage>::row_bytes(value_dim_));
  }

  // Appends k [batch, n, kv_groups, head_dim] and v [batch, n, kv_groups, value_dim], n ≥ 1
  // tokens for every sequence (after its own length), narrowed to Storage. Any strides with a
  // contiguous last axis. Throws std::invalid_argument, with the cache unchanged, if a shape
  // differs from the cache's or the tokens do not fit.
  void append(TensorView<const float> k, TensorView<const float> v) {
    const std::int64_t n =
        detail::check_kv_append(k, v, batch_, kv_groups_, head_dim_, value_dim_);
    detail::require_room(n, lengths_.longest(), capacity_);
    for (std::int64_t b = 0; b < batch_; ++b) store(b, k, v, b, n);
    lengths_.grow_all(n);
  }

  // Appends k [1, n, kv_groups, head_dim] and v [1, n, kv_groups, value_dim] to sequence b
  // alone; the same checks, and b in [0, batch).
  void append(std::int64_t b, TensorView<const float> k, TensorView<const float> v) {
    const std::int64_t length = lengths_.of(b);
    const std::int64_t n = detail::check_kv_append(k, v, 1, kv_groups_, head_dim_, value_dim_);
    detail::require_room(n, length, capacity_);
    store(b, k, v, 0, n);
    lengths_.grow(b, n);
  }

  // The filled part, [batch, longest length, kv_groups, head_dim] and [..., value_dim], with the
  // strides of the full buffer (batch stride capacity·kv_groups·dim): sequence b's first
  // length(b) tokens are its own. With length 0 the views have no tokens: do not validate them,
  // there is nothing to read.
  TensorView<const Storage> keys() const noexcept {
    return TensorView<const Storage>::strided(key_data(), k_size_, batch_, lengths_.longest(),
                                              kv_groups_, k_row(), capacity_ * kv_groups_ * k_row(),
                                              kv_groups_ * k_row(), k_row());
  }
  TensorView<const Storage> values() const noexcept {
    return TensorView<const Storage>::strided(value_data(), v_size_, batch_, lengths_.longest(),
                                              kv_groups_, v_row(), capacity_ * kv_groups_ * v_row(),
                                              kv_groups_ * v_row(), v_row());
  }

  // The cache as a paged pool (paged_view.hpp): slot b is block b, of `capacity` tokens.
  PagedKvView<Storage> view() const noexcept {
    return PagedKvView<Storage>::token_major(key_data(), value_data(), batch_, capacity_,
                                             kv_groups_, head_dim_, value_dim_);
  }

  // The KV-source contract (attention/kv_source.hpp): the filled rows as the kernels read them,
  // each sequence's length its own, and their extents.
  detail::KvRows<Storage> kv_rows() const {
    detail::KvRows<Storage> rows = detail::view_rows(keys(), values());
    rows.lengths = lengths_.data();
    return rows;
  }
  detail::KvExtents kv_extents() const {
    return {batch_, lengths_.longest(), kv_groups_, head_dim_, value_dim_};
  }
  // What a call over `sequences` of its slots reads (as a paged cache's); kv_len the caller's.
  detail::KvExtents kv_extents(std::int64_t sequences) const {
    return {sequences, 0, kv_groups_, head_dim_, value_dim_};
  }

  // Forgets every token (or sequence b's); the memory stays allocated for the next sequences.
  void clear() noexcept { lengths_.clear(); }
  void clear(std::int64_t b) { lengths_.clear(b); }

 private:
  Storage* key_data() const noexcept { return buffer_.data(); }
  // Elements of a K (V) row.
  std::int64_t k_row() const noexcept { return Codec<Storage>::units(head_dim_); }
  std::int64_t v_row() const noexcept { return Codec<Storage>::units(value_dim_); }
  Storage* value_data() const noexcept { return buffer_.data() + v_offset_; }

  // The n tokens of batch entry `entry` of k and v, after sequence b's length.
  void store(std::int64_t b, const TensorView<const float>& k, const TensorView<const float>& v,
             std::int64_t entry, std::int64_t n) {
    const std::int64_t at = (b * capacity_ + lengths_.of(b)) * kv_groups_;
    detail::store_tokens(k, entry, 0, n, key_data() + at * k_row());
    detail::store_tokens(v, entry, 0, n, value_data() + at * v_row());
  }

  std::int64_t batch_, capacity_, kv_groups_, head_dim_, value_dim_;
  detail::SlotLengths lengths_;
  std::int64_t k_size_ = 0, v_size_ = 0, v_offset_ = 0;
  detail::AlignedBuffer<Storage> buffer_;
};

}  // namespace MULTIHEAD_ISA_NAMESPACE
}  // namespace multihead
