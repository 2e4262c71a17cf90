// The pool every paged cache is built on: fixed-size blocks of K and V rows, handed to sequences
// by their block tables (block_tables.hpp), as inference servers keep them (vLLM's
// PagedAttention). PagedKvCache and PagedLatentCache derive from it and add only what their rows
// hold and how appends fill them; the pool adapts itself to the kernels' KV-source contract
// (attention/kv_source.hpp), so no kernel names a cache.
//
// Token t of a sequence lives in block block_table[t / block_size] at row t % block_size. Blocks
// are padded to whole cache lines, so every block starts 64-byte aligned; the pool is allocated
// once and left uninitialised. Not thread-safe for writes (add_sequence, append, release);
// reads may be concurrent.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "../attention/kv_source.hpp"
#include "../attention/shape.hpp"
#include "../core/aligned_buffer.hpp"
#include "../core/error.hpp"
#include "block_tables.hpp"
#include "paged_view.hpp"
#include "rows.hpp"

namespace multihead {
inline namespace MULTIHEAD_ISA_NAMESPACE {
namespace detail {

template <class Storage>
class PagedPool {
 public:
  using storage_type = Storage;
  using SequenceId = std::int64_t;

  std::int64_t num_blocks() const noexcept { return tables_.num_blocks(); }
  std::int64_t block_size() const noexcept { return tables_.block_size(); }
  std::int64_t free_blocks() const noexcept { return tables_.free_blocks(); }
  // Live sequences: added and not yet released.
  std::int64_t sequences() const noexcept { return tables_.sequences(); }

  // A new, empty sequence. Ids are never reused, so a stale id cannot reach another sequence.
  SequenceId add_sequence() { return tables_.add_sequence(); }

  // Returns the sequence's blocks to the pool and forgets the id.
  void release(SequenceId seq) { tables_.release(seq); }

  std::int64_t length(SequenceId seq) const { return tables_.length(seq); }

  // The sequence's block ids in token order; ceil(length / block_size) of them. The reference is
  // valid until the next append to or release of this sequence.
  const std::vector<std::int64_t>& block_table(SequenceId seq) const {
    return tables_.block_table(seq);
  }

  // Block `block`'s key rows: token row r at key_block(block) + r·key_token_stride(); value rows
  // likewise. 64-byte aligned. Throws on an id outside [0, num_blocks).
  const Storage* key_block(std::int64_t block) const {
    tables_.check_block(block, "key_block");
    return key_block_data(block);
  }
  const Storage* value_block(std::int64_t block) const {
    tables_.check_block(block, "value_block");
    return value_block_data(block);
  }
  std::int64_t key_token_stride() const noexcept { return key_token_stride_; }
  std::int64_t value_token_stride() const noexcept { return value_token_stride_; }
  // Elements from one block's first key (value) row to the next block's: key_block(i) is
  // key_block(0) + i·key_block_stride().
  std::int64_t key_block_stride() const noexcept { return key_block_stride_; }
  std::int64_t value_block_stride() const noexcept { return value_block_stride_; }

 protected:
  // Checks num_blocks and block_size; allocate() lays out the pool once the rows are known.
  PagedPool(std::int64_t num_blocks, std::int64_t block_size) : tables_(num_blocks, block_size) {}

  // Lays out the pool: a block holds key_block (value_block) elements, tokens' key (value) rows
  // key_row (value_row) apart, a token's kv groups key_group (value_group) apart. value_block 0:
  // the values are the first elements of the key rows, in the same blocks (a latent cache).
  // Throws before allocating if a size overflows.
  void allocate(std::int64_t key_block, std::int64_t value_block, std::int64_t key_row,
                std::int64_t value_row, std::int64_t key_group, std::int64_t value_group) {
    key_token_stride_ = key_row;
    value_token_stride_ = value_row;
    key_group_ = key_group;
    value_group_ = value_group;
    const bool shared = value_block == 0;
    key_block_stride_ = round_up_to_lines<Storage>(key_block, shared ? "block size" : "K block size");
    const std::int64_t k_size = checked_mul(num_blocks(), key_block_stride_,
                                            shared ? "pool size" : "K pool size");
    if (shared) {
      value_block_stride_ = key_block_stride_;
      pool_ = AlignedBuffer<Storage>(k_size);
      return;
    }
    value_block_stride_ = round_up_to_lines<Storage>(value_block, "V block size");
    const std::int64_t v_size = checked_mul(num_blocks(), value_block_stride_, "V pool size");
    pool_ = AlignedBuffer<Storage>(checked_add(k_size, v_size, "pool size"));
    value_pool_offset_ = k_size;
  }

  Storage* key_block_data(std::int64_t block) const noexcept {
    return pool_.data() + block * key_block_stride_;
  }
  Storage* value_block_data(std::int64_t block) const noexcept {
    return pool_.data() + value_pool_offset_ + block * value_block_stride_;
  }

  // The pool as a caller-owned pool is described (paged_view.hpp), with the caches' dims.
  PagedKvView<Storage> pool_view(std::int64_t kv_groups, std::int64_t head_dim,
                                 std::int64_t value_dim) const noexcept {
    return {key_block_data(0), value_block_data(0), num_blocks(), block_size(), kv_groups,
            head_dim, value_dim, key_block_stride_, key_token_stride_, key_group_,
            value_block_stride_, value_token_stride_, value_group_};
  }

  BlockTables tables_;

 private:
  std::int64_t key_token_stride_ = 0, value_token_stride_ = 0, key_group_ = 0, value_group_ = 0;
  std::int64_t key_block_stride_ = 0, value_block_stride_ = 0, value_pool_offset_ = 0;
  AlignedBuffer<Storage> pool_;
};

}  // namespace detail
}  // namespace MULTIHEAD_ISA_NAMESPACE
}  // namespace multihead
