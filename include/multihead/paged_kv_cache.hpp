// The paged KV cache of one layer: many sequences of different lengths sharing one pool of
// fixed-size blocks, as inference servers keep them (vLLM's PagedAttention).
//
//   K block [block_size, kv_groups, head_dim]    V block [block_size, kv_groups, value_dim]
//
// Each sequence owns a block table: the ids of its blocks in token order, so token t lives in
// block block_table[t / block_size] at row t % block_size. Blocks are taken from a free list as
// appends need them and returned on release, so memory follows the live tokens, not the longest
// sequence. The pool is allocated once, 64-byte aligned per block, and left uninitialised.
// Not thread-safe for writes (add_sequence, append, release); reads may be concurrent.
#pragma once

#include <algorithm>
#include <cstdint>
#include <unordered_map>
#include <vector>

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
      : num_blocks_(num_blocks),
        block_size_(block_size),
        kv_groups_(kv_groups),
        head_dim_(head_dim),
        value_dim_(value_dim) {
    detail::require_positive(num_blocks, "num_blocks");
    detail::require_positive(block_size, "block_size");
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
    // Handed out from the back: block 0 first, so a fresh pool fills in order.
    free_.reserve(static_cast<std::size_t>(num_blocks));
    for (std::int64_t block = num_blocks; block-- > 0;) free_.push_back(block);
  }

  // value_dim = head_dim.
  PagedKvCache(std::int64_t num_blocks, std::int64_t block_size, std::int64_t kv_groups,
               std::int64_t head_dim)
      : PagedKvCache(num_blocks, block_size, kv_groups, head_dim, head_dim) {}

  std::int64_t num_blocks() const noexcept { return num_blocks_; }
  std::int64_t block_size() const noexcept { return block_size_; }
  std::int64_t kv_groups() const noexcept { return kv_groups_; }
  std::int64_t head_dim() const noexcept { return head_dim_; }
  std::int64_t value_dim() const noexcept { return value_dim_; }
  std::int64_t free_blocks() const noexcept { return static_cast<std::int64_t>(free_.size()); }
  // Live sequences: added and not yet released.
  std::int64_t sequences() const noexcept { return static_cast<std::int64_t>(sequences_.size()); }

  // Bytes one token occupies in a full block: K and V of every group.
  std::int64_t bytes_per_token() const noexcept {
    return kv_groups_ * (head_dim_ + value_dim_) * static_cast<std::int64_t>(sizeof(Storage));
  }

  // A new, empty sequence. Ids are never reused, so a stale id cannot reach another sequence.
  SequenceId add_sequence() {
    const SequenceId id = next_id_;
    sequences_.emplace(id, Sequence{});
    ++next_id_;
    return id;
  }

  // Appends k [1, n, kv_groups, head_dim] and v [1, n, kv_groups, value_dim], n ≥ 1 tokens of
  // sequence `seq`, narrowed to Storage, taking blocks from the pool as they fill. Throws
  // std::invalid_argument on an unknown or released id, a shape that differs from the cache's,
  // or a pool too small; then nothing is written and no block is taken.
  void append(SequenceId seq, TensorView<const float> k, TensorView<const float> v) {
    Sequence& s = find(seq, "append");
    detail::check_kv_input(k, "append: k", 1, kv_groups_, head_dim_, "head_dim");
    detail::check_kv_input(v, "append: v", 1, kv_groups_, value_dim_, "value_dim");
    const std::int64_t n = k.tokens();
    detail::require(v.tokens() == n, "append: k.tokens (", n, ") and v.tokens (", v.tokens(),
                    ") differ");
    const std::int64_t new_length = detail::checked_add(s.length, n, "sequence length");
    const std::int64_t held = static_cast<std::int64_t>(s.blocks.size());
    const std::int64_t needed = (new_length - 1) / block_size_ + 1 - held;
    detail::require(needed <= free_blocks(), "append of ", n, " tokens to sequence ", seq,
                    " (holding ", s.length, " tokens in ", held, " blocks of ", block_size_,
                    ") needs ", needed, " more blocks but only ", free_blocks(), " of ",
                    num_blocks_, " are free");
    // Reserve first: if that throws (bad_alloc), no block has left the free list yet.
    s.blocks.reserve(static_cast<std::size_t>(held + needed));
    for (std::int64_t i = 0; i < needed; ++i) {
      s.blocks.push_back(free_.back());
      free_.pop_back();
    }
    // Copy in runs that end at block boundaries.
    for (std::int64_t t = 0; t < n;) {
      const std::int64_t position = s.length + t;
      const std::int64_t block = s.blocks[static_cast<std::size_t>(position / block_size_)];
      const std::int64_t row = position % block_size_;
      const std::int64_t run = std::min(block_size_ - row, n - t);
      detail::store_tokens(k, 0, t, run, key_block_data(block) + row * kv_groups_ * head_dim_);
      detail::store_tokens(v, 0, t, run, value_block_data(block) + row * kv_groups_ * value_dim_);
      t += run;
    }
    s.length = new_length;
  }

  // Returns the sequence's blocks to the pool and forgets the id.
  void release(SequenceId seq) {
    Sequence& s = find(seq, "release");
    // Reverse order, so that the next sequence takes them in the order this one had them.
    free_.insert(free_.end(), s.blocks.rbegin(), s.blocks.rend());  // capacity is num_blocks
    sequences_.erase(seq);
  }

  std::int64_t length(SequenceId seq) const { return find(seq, "length").length; }

  // The sequence's block ids in token order; ceil(length / block_size) of them. The reference is
  // valid until the next append to or release of this sequence.
  const std::vector<std::int64_t>& block_table(SequenceId seq) const {
    return find(seq, "block_table").blocks;
  }

  // Block `block`'s rows: key row (r, g) at key_block(block) + (r·kv_groups + g)·head_dim, value
  // row likewise with value_dim. 64-byte aligned. Throws on an id outside [0, num_blocks).
  const Storage* key_block(std::int64_t block) const {
    check_block(block, "key_block");
    return key_block_data(block);
  }
  const Storage* value_block(std::int64_t block) const {
    check_block(block, "value_block");
    return value_block_data(block);
  }

  // The filled rows of the sequence's i-th block as [1, rows, kv_groups, dim] views, where rows
  // is block_size for every block but the last: what a kernel walks block by block.
  TensorView<const Storage> block_keys(SequenceId seq, std::int64_t i) const {
    const std::int64_t block = block_of(seq, i, "block_keys");
    return TensorView<const Storage>::strided(key_block_data(block), key_block_stride_, 1,
                                              rows_in_block(seq, i), kv_groups_, head_dim_,
                                              key_block_stride_, kv_groups_ * head_dim_, head_dim_);
  }
  TensorView<const Storage> block_values(SequenceId seq, std::int64_t i) const {
    const std::int64_t block = block_of(seq, i, "block_values");
    return TensorView<const Storage>::strided(
        value_block_data(block), value_block_stride_, 1, rows_in_block(seq, i), kv_groups_,
        value_dim_, value_block_stride_, kv_groups_ * value_dim_, value_dim_);
  }

 private:
  struct Sequence {
    std::int64_t length = 0;
    std::vector<std::int64_t> blocks;
  };

  const Sequence& find(SequenceId seq, const char* operation) const {
    const auto it = sequences_.find(seq);
    if (it == sequences_.end()) {
      detail::require(seq < 0 || seq >= next_id_, operation, ": sequence ", seq, " was released");
      detail::fail(operation, ": sequence ", seq, " does not exist (ids so far: 0 to ",
                   next_id_ - 1, ")");
    }
    return it->second;
  }
  Sequence& find(SequenceId seq, const char* operation) {
    return const_cast<Sequence&>(static_cast<const PagedKvCache&>(*this).find(seq, operation));
  }

  void check_block(std::int64_t block, const char* operation) const {
    detail::require(block >= 0 && block < num_blocks_, operation, ": block id (", block,
                    ") must be in [0, ", num_blocks_, ")");
  }

  std::int64_t block_of(SequenceId seq, std::int64_t i, const char* operation) const {
    const Sequence& s = find(seq, operation);
    const std::int64_t held = static_cast<std::int64_t>(s.blocks.size());
    detail::require(i >= 0 && i < held, operation, ": block index (", i, ") must be in [0, ", held,
                    ") for sequence ", seq);
    return s.blocks[static_cast<std::size_t>(i)];
  }

  std::int64_t rows_in_block(SequenceId seq, std::int64_t i) const {
    return std::min(block_size_, find(seq, "rows_in_block").length - i * block_size_);
  }

  Storage* key_block_data(std::int64_t block) const noexcept {
    return pool_.data() + block * key_block_stride_;
  }
  Storage* value_block_data(std::int64_t block) const noexcept {
    return pool_.data() + value_pool_offset_ + block * value_block_stride_;
  }

  std::int64_t num_blocks_, block_size_, kv_groups_, head_dim_, value_dim_;
  std::int64_t key_block_stride_ = 0, value_block_stride_ = 0, value_pool_offset_ = 0;
  detail::AlignedBuffer<Storage> pool_;
  std::vector<std::int64_t> free_;  // a stack of free block ids
  std::unordered_map<SequenceId, Sequence> sequences_;
  SequenceId next_id_ = 0;
};

}  // namespace MULTIHEAD_ISA_NAMESPACE
}  // namespace multihead
