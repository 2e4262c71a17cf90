// The paged KV cache of one layer: many sequences of different lengths sharing one pool of
// fixed-size blocks, as inference servers keep them (vLLM's PagedAttention).
//
//   K block [block_size, kv_groups, head_dim]    V block [block_size, kv_groups, value_dim]
//
// Each sequence owns a block table: the ids of its blocks in token order, so token t lives in
// block block_table[t / block_size] at row t % block_size. Blocks are taken from the pool as
// appends need them and returned on release (block_tables.hpp), so memory follows the live
// tokens, not the longest sequence. The pool is allocated once, 64-byte aligned per block, and
// left uninitialised.
// Not thread-safe for writes (add_sequence, append, release); reads may be concurrent.
#pragma once

#include <cstdint>
#include <vector>

#include "block_tables.hpp"
#include "kv_cache.hpp"

namespace multihead {
inline namespace MULTIHEAD_ISA_NAMESPACE {

template <class Storage>
class PagedKvCache {
  static_assert(is_storage_type_v<Storage>,
                "PagedKvCache<Storage>: Storage must be float, bf16 or fp16");

 public:
  using storage_type = Storage;
  using SequenceId = std::int64_t;

  // Throws std::invalid_argument unless every size is positive and the pool's size fits in
  // 64 bits; then allocates the pool of num_blocks K blocks and num_blocks V blocks.
  PagedKvCache(std::int64_t num_blocks, std::int64_t block_size, std::int64_t kv_groups,
               std::int64_t head_dim, std::int64_t value_dim)
      : tables_(num_blocks, block_size),
        kv_groups_(kv_groups),
        head_dim_(head_dim),
        value_dim_(value_dim) {
    detail::check_cache_dims(kv_groups, head_dim, value_dim);
    // Blocks are padded to whole cache lines so that every block starts 64-byte aligned.
    key_block_stride_ = detail::round_up_to_lines<Storage>(
        detail::checked_product("K block size (block_size * kv_groups * head_dim)", block_size,
                                kv_groups, head_dim),
        "K block size");
    value_block_stride_ = detail::round_up_to_lines<Storage>(
        detail::checked_product("V block size (block_size * kv_groups * value_dim)", block_size,
                                kv_groups, value_dim),
        "V block size");
    const std::int64_t k_size = detail::checked_mul(num_blocks, key_block_stride_, "K pool size");
    const std::int64_t v_size = detail::checked_mul(num_blocks, value_block_stride_, "V pool size");
    pool_ = detail::AlignedBuffer<Storage>(detail::checked_add(k_size, v_size, "pool size"));
    value_pool_offset_ = k_size;
  }

  // value_dim = head_dim.
  PagedKvCache(std::int64_t num_blocks, std::int64_t block_size, std::int64_t kv_groups,
               std::int64_t head_dim)
      : PagedKvCache(num_blocks, block_size, kv_groups, head_dim, head_dim) {}

  std::int64_t num_blocks() const noexcept { return tables_.num_blocks(); }
  std::int64_t block_size() const noexcept { return tables_.block_size(); }
  std::int64_t kv_groups() const noexcept { return kv_groups_; }
  std::int64_t head_dim() const noexcept { return head_dim_; }
  std::int64_t value_dim() const noexcept { return value_dim_; }
  std::int64_t free_blocks() const noexcept { return tables_.free_blocks(); }
  // Live sequences: added and not yet released.
  std::int64_t sequences() const noexcept { return tables_.sequences(); }

  // Bytes one token occupies in a full block: K and V of every group.
  std::int64_t bytes_per_token() const noexcept {
    return kv_groups_ * (head_dim_ + value_dim_) * static_cast<std::int64_t>(sizeof(Storage));
  }

  // A new, empty sequence. Ids are never reused, so a stale id cannot reach another sequence.
  SequenceId add_sequence() { return tables_.add_sequence(); }

  // Appends k [1, n, kv_groups, head_dim] and v [1, n, kv_groups, value_dim], n ≥ 1 tokens of
  // sequence `seq`, narrowed to Storage, taking blocks from the pool as they fill. Throws
  // std::invalid_argument on an unknown or released id, a shape that differs from the cache's,
  // or a pool too small; then nothing is written and no block is taken.
  void append(SequenceId seq, TensorView<const float> k, TensorView<const float> v) {
    tables_.append(
        seq, [&] { return detail::check_kv_append(k, v, 1, kv_groups_, head_dim_, value_dim_); },
        [&](std::int64_t block, std::int64_t row, std::int64_t t, std::int64_t run) {
          detail::store_tokens(k, 0, t, run, key_block_data(block) + row * key_token_stride());
          detail::store_tokens(v, 0, t, run, value_block_data(block) + row * value_token_stride());
        });
  }

  // Returns the sequence's blocks to the pool and forgets the id.
  void release(SequenceId seq) { tables_.release(seq); }

  std::int64_t length(SequenceId seq) const { return tables_.length(seq); }

  // The sequence's block ids in token order; ceil(length / block_size) of them. The reference is
  // valid until the next append to or release of this sequence.
  const std::vector<std::int64_t>& block_table(SequenceId seq) const {
    return tables_.block_table(seq);
  }

  // Block `block`'s rows: key row (r, g) at key_block(block) + r·key_token_stride() + g·head_dim,
  // value row likewise with value_token_stride() and value_dim. 64-byte aligned. Throws on an id
  // outside [0, num_blocks).
  const Storage* key_block(std::int64_t block) const {
    tables_.check_block(block, "key_block");
    return key_block_data(block);
  }
  const Storage* value_block(std::int64_t block) const {
    tables_.check_block(block, "value_block");
    return value_block_data(block);
  }
  std::int64_t key_token_stride() const noexcept { return kv_groups_ * head_dim_; }
  std::int64_t value_token_stride() const noexcept { return kv_groups_ * value_dim_; }
  // Elements from one block's first key (value) row to the next block's: key_block(i) is
  // key_block(0) + i·key_block_stride().
  std::int64_t key_block_stride() const noexcept { return key_block_stride_; }
  std::int64_t value_block_stride() const noexcept { return value_block_stride_; }

  // The filled rows of the sequence's i-th block as [1, rows, kv_groups, dim] views, where rows
  // is block_size for every block but the last: what a kernel walks block by block.
  TensorView<const Storage> block_keys(SequenceId seq, std::int64_t i) const {
    const auto [block, rows] = tables_.filled_block(seq, i, "block_keys");
    return TensorView<const Storage>::strided(key_block_data(block), key_block_stride_, 1, rows,
                                              kv_groups_, head_dim_, key_block_stride_,
                                              key_token_stride(), head_dim_);
  }
  TensorView<const Storage> block_values(SequenceId seq, std::int64_t i) const {
    const auto [block, rows] = tables_.filled_block(seq, i, "block_values");
    return TensorView<const Storage>::strided(value_block_data(block), value_block_stride_, 1,
                                              rows, kv_groups_, value_dim_, value_block_stride_,
                                              value_token_stride(), value_dim_);
  }

 private:
  Storage* key_block_data(std::int64_t block) const noexcept {
    return pool_.data() + block * key_block_stride_;
  }
  Storage* value_block_data(std::int64_t block) const noexcept {
    return pool_.data() + value_pool_offset_ + block * value_block_stride_;
  }

  detail::BlockTables tables_;
  std::int64_t kv_groups_, head_dim_, value_dim_;
  std::int64_t key_block_stride_ = 0, value_block_stride_ = 0, value_pool_offset_ = 0;
  detail::AlignedBuffer<Storage> pool_;
};

}  // namespace MULTIHEAD_ISA_NAMESPACE
}  // namespace multihead
