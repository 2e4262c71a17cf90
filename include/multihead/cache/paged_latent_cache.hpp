// The paged latent cache of one MLA layer: the rows of latent_cache.hpp ([c_KV; k_R],
// latent_dim + rope_dim elements per token), kept for many sequences of different lengths in one
// pool of fixed-size blocks, with the contract of PagedKvCache (paged_kv_cache.hpp):
//
//   block [block_size, latent_dim + rope_dim]
//
// Each sequence owns a block table: token t lives in block block_table[t / block_size] at row
// t % block_size. Blocks are taken from the pool as appends need them and returned on release
// (paged_pool.hpp). A block holds keys and values at once: the values are the first latent_dim
// elements of each key row.
#pragma once

#include <cstdint>
#include <vector>

#include "../attention/shape.hpp"
#include "../core/tensor_view.hpp"
#include "latent_cache.hpp"
#include "paged_pool.hpp"

namespace multihead {
inline namespace MULTIHEAD_ISA_NAMESPACE {

template <class Storage>
class PagedLatentCache : public detail::PagedPool<Storage> {
  static_assert(is_cache_storage_v<Storage>,
                "PagedLatentCache<Storage>: Storage must be float, bf16, fp16, q8 or q4");
  using Pool = detail::PagedPool<Storage>;

 public:
  using typename Pool::SequenceId;

  // Throws std::invalid_argument unless num_blocks, block_size and latent_dim are positive,
  // rope_dim is not negative and the pool's size fits in 64 bits; then allocates the pool.
  PagedLatentCache(std::int64_t num_blocks, std::int64_t block_size, std::int64_t latent_dim,
                   std::int64_t rope_dim)
      : Pool(num_blocks, block_size), latent_dim_(latent_dim), rope_dim_(rope_dim) {
    detail::check_latent_dims<Storage>(latent_dim, rope_dim);
    // Values are the first latent_dim values of each key row, in the same blocks.
    this->allocate(detail::checked_product("block size (block_size * (latent_dim + rope_dim))",
                                           block_size, row()),
                   0, row(), row(), row(), Codec<Storage>::units(latent_dim));
  }

  std::int64_t latent_dim() const noexcept { return latent_dim_; }
  std::int64_t rope_dim() const noexcept { return rope_dim_; }

  // Bytes one token occupies in a full block: its latent and its RoPE key.
  std::int64_t bytes_per_token() const noexcept {
    return Codec<Storage>::row_bytes(latent_dim_) + Codec<Storage>::row_bytes(rope_dim_);
  }

  // Appends c_kv [1, n, 1, latent_dim] and k_rope [1, n, 1, rope_dim], n ≥ 1 tokens of sequence
  // `seq`, narrowed to Storage, taking blocks from the pool as they fill. With rope_dim 0,
  // k_rope must be empty: call append(seq, c_kv). Throws std::invalid_argument on an unknown or
  // released id, a shape that differs from the cache's, or a pool too small; then nothing is
  // written and no block is taken.
  void append(SequenceId seq, TensorView<const float> c_kv, TensorView<const float> k_rope) {
    this->tables_.append(
        seq, [&] { return detail::check_latent_append(c_kv, k_rope, 1, latent_dim_, rope_dim_); },
        [&](std::int64_t block, std::int64_t row_in_block, std::int64_t t, std::int64_t run) {
          detail::store_latent_rows(c_kv, k_rope, 0, t, run, latent_dim_, rope_dim_,
                                    this->key_block_data(block) + row_in_block * row());
        });
  }

  // For a cache with rope_dim 0 (throws otherwise).
  void append(SequenceId seq, TensorView<const float> c_kv) { append(seq, c_kv, {}); }

  // The pool, as a pool the caller owns is given to the kernels (paged_view.hpp): one group,
  // each value row the first latent_dim values of its key row (v = k).
  PagedKvView<Storage> view() const noexcept {
    return this->pool_view(1, latent_dim_ + rope_dim_, latent_dim_);
  }

  // What a call over `sequences` sequences reads, as MQA: one group of latent_dim + rope_dim key
  // and latent_dim value elements; kv_len is the caller's to fill.
  detail::KvExtents kv_extents(std::int64_t sequences) const {
    return {sequences, 0, 1, latent_dim_ + rope_dim_, latent_dim_};
  }

  // The filled rows of the sequence's i-th block as views [1, rows, 1, latent_dim + rope_dim]
  // (keys) and [1, rows, 1, latent_dim] (values) of the same memory, where rows is block_size
  // for every block but the last.
  TensorView<const Storage> block_keys(SequenceId seq, std::int64_t i) const {
    return block_rows(this->tables_.filled_block(seq, i, "block_keys"), row());
  }
  TensorView<const Storage> block_values(SequenceId seq, std::int64_t i) const {
    return block_rows(this->tables_.filled_block(seq, i, "block_values"),
                      Codec<Storage>::units(latent_dim_));
  }

 private:
  // Elements of a row (latent_cache.hpp).
  std::int64_t row() const noexcept {
    return detail::latent_row_units<Storage>(latent_dim_, rope_dim_);
  }

  // The first `dim` elements of a block's filled rows.
  TensorView<const Storage> block_rows(detail::BlockTables::FilledBlock filled,
                                       std::int64_t dim) const {
    return TensorView<const Storage>::strided(this->key_block_data(filled.block),
                                              this->key_block_stride(), 1, filled.rows, 1, dim,
                                              this->key_block_stride(), row(), row());
  }

  std::int64_t latent_dim_, rope_dim_;
};

}  // namespace MULTIHEAD_ISA_NAMESPACE
}  // namespace multihead
