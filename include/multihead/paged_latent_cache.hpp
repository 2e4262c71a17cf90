// The paged latent cache of one MLA layer: the rows of latent_cache.hpp ([c_KV; k_R],
// latent_dim + rope_dim elements per token), kept for many sequences of different lengths in one
// pool of fixed-size blocks, with the contract of PagedKvCache (paged_kv_cache.hpp):
//
//   block [block_size, latent_dim + rope_dim]
//
// Each sequence owns a block table: token t lives in block block_table[t / block_size] at row
// t % block_size. Blocks are taken from the pool as appends need them and returned on release
// (block_tables.hpp). A block holds keys and values at once: the values are the first
// latent_dim elements of each key row. The pool is allocated once, 64-byte aligned per block, and
// left uninitialised. Not thread-safe for writes (add_sequence, append, release); reads may be
// concurrent.
#pragma once

#include <cstdint>
#include <vector>

#include "block_tables.hpp"
#include "kv_cache.hpp"
#include "latent_cache.hpp"

namespace multihead {
inline namespace MULTIHEAD_ISA_NAMESPACE {

template <class Storage>
class PagedLatentCache {
  static_assert(is_storage_type_v<Storage>,
                "PagedLatentCache<Storage>: Storage must be float, bf16 or fp16");

 public:
  using storage_type = Storage;
  using SequenceId = std::int64_t;

  // Throws std::invalid_argument unless num_blocks, block_size and latent_dim are positive,
  // rope_dim is not negative and the pool's size fits in 64 bits; then allocates the pool.
  PagedLatentCache(std::int64_t num_blocks, std::int64_t block_size, std::int64_t latent_dim,
                   std::int64_t rope_dim)
      : tables_(num_blocks, block_size), latent_dim_(latent_dim), rope_dim_(rope_dim) {
    detail::check_latent_dims(latent_dim, rope_dim);
    // Blocks are padded to whole cache lines so that every block starts 64-byte aligned.
    block_stride_ = detail::round_up_to_lines<Storage>(
        detail::checked_product("block size (block_size * (latent_dim + rope_dim))", block_size,
                                detail::checked_add(latent_dim, rope_dim, "latent_dim + rope_dim")),
        "block size");
    pool_ = detail::AlignedBuffer<Storage>(
        detail::checked_mul(num_blocks, block_stride_, "pool size"));
  }

  std::int64_t num_blocks() const noexcept { return tables_.num_blocks(); }
  std::int64_t block_size() const noexcept { return tables_.block_size(); }
  std::int64_t latent_dim() const noexcept { return latent_dim_; }
  std::int64_t rope_dim() const noexcept { return rope_dim_; }
  std::int64_t free_blocks() const noexcept { return tables_.free_blocks(); }
  // Live sequences: added and not yet released.
  std::int64_t sequences() const noexcept { return tables_.sequences(); }

  // Bytes one token occupies in a full block: its latent and its RoPE key.
  std::int64_t bytes_per_token() const noexcept {
    return row() * static_cast<std::int64_t>(sizeof(Storage));
  }

  // A new, empty sequence. Ids are never reused, so a stale id cannot reach another sequence.
  SequenceId add_sequence() { return tables_.add_sequence(); }

  // Appends c_kv [1, n, 1, latent_dim] and k_rope [1, n, 1, rope_dim], n ≥ 1 tokens of sequence
  // `seq`, narrowed to Storage, taking blocks from the pool as they fill. With rope_dim 0,
  // k_rope must be empty: call append(seq, c_kv). Throws std::invalid_argument on an unknown or
  // released id, a shape that differs from the cache's, or a pool too small; then nothing is
  // written and no block is taken.
  void append(SequenceId seq, TensorView<const float> c_kv, TensorView<const float> k_rope) {
    tables_.append(
        seq, [&] { return detail::check_latent_append(c_kv, k_rope, 1, latent_dim_, rope_dim_); },
        [&](std::int64_t block, std::int64_t row_in_block, std::int64_t t, std::int64_t run) {
          detail::store_latent_rows(c_kv, k_rope, 0, t, run, latent_dim_, rope_dim_,
                                    block_data(block) + row_in_block * row());
        });
  }

  // For a cache with rope_dim 0 (throws otherwise).
  void append(SequenceId seq, TensorView<const float> c_kv) { append(seq, c_kv, {}); }

  // Returns the sequence's blocks to the pool and forgets the id.
  void release(SequenceId seq) { tables_.release(seq); }

  std::int64_t length(SequenceId seq) const { return tables_.length(seq); }

  // The sequence's block ids in token order; ceil(length / block_size) of them. The reference is
  // valid until the next append to or release of this sequence.
  const std::vector<std::int64_t>& block_table(SequenceId seq) const {
    return tables_.block_table(seq);
  }

  // Block `block`'s rows, as PagedKvCache names them for the kernels: key row r at
  // key_block(block) + r·key_token_stride(), latent_dim + rope_dim elements; value row r the
  // first latent_dim elements of the same row (value_block is key_block). 64-byte aligned.
  // Throws on an id outside [0, num_blocks).
  const Storage* key_block(std::int64_t block) const {
    tables_.check_block(block, "key_block");
    return block_data(block);
  }
  const Storage* value_block(std::int64_t block) const {
    tables_.check_block(block, "value_block");
    return block_data(block);
  }
  std::int64_t key_token_stride() const noexcept { return row(); }
  std::int64_t value_token_stride() const noexcept { return row(); }
  // Elements from one block's first row to the next block's, for keys and values alike.
  std::int64_t key_block_stride() const noexcept { return block_stride_; }
  std::int64_t value_block_stride() const noexcept { return block_stride_; }

  // The filled rows of the sequence's i-th block as views [1, rows, 1, latent_dim + rope_dim]
  // (keys) and [1, rows, 1, latent_dim] (values) of the same memory, where rows is block_size
  // for every block but the last.
  TensorView<const Storage> block_keys(SequenceId seq, std::int64_t i) const {
    return block_rows(tables_.filled_block(seq, i, "block_keys"), row());
  }
  TensorView<const Storage> block_values(SequenceId seq, std::int64_t i) const {
    return block_rows(tables_.filled_block(seq, i, "block_values"), latent_dim_);
  }

 private:
  std::int64_t row() const noexcept { return latent_dim_ + rope_dim_; }

  Storage* block_data(std::int64_t block) const noexcept {
    return pool_.data() + block * block_stride_;
  }

  // The first `dim` elements of a block's filled rows.
  TensorView<const Storage> block_rows(detail::BlockTables::FilledBlock filled,
                                       std::int64_t dim) const {
    return TensorView<const Storage>::strided(block_data(filled.block), block_stride_, 1,
                                              filled.rows, 1, dim, block_stride_, row(), row());
  }

  detail::BlockTables tables_;
  std::int64_t latent_dim_, rope_dim_;
  std::int64_t block_stride_ = 0;
  detail::AlignedBuffer<Storage> pool_;
};

}  // namespace MULTIHEAD_ISA_NAMESPACE
}  // namespace multihead
