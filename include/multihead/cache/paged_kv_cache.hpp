// The paged KV cache of one layer: many sequences of different lengths sharing one pool of
// fixed-size blocks, as inference servers keep them (vLLM's PagedAttention).
//
//   K block [block_size, kv_groups, head_dim]    V block [block_size, kv_groups, value_dim]
//
// Each sequence owns a block table: the ids of its blocks in token order, so token t lives in
// block block_table[t / block_size] at row t % block_size. Blocks are taken from the pool as
// appends need them and returned on release, so memory follows the live tokens, not the longest
// sequence. The pool, its block tables and what it shares with the latent cache: paged_pool.hpp.
// Storage as for KvCache (kv_cache.hpp): block views count their last axis in codec units.
#pragma once

#include <cstdint>
#include <vector>

#include "../attention/shape.hpp"
#include "../core/tensor_view.hpp"
#include "paged_pool.hpp"
#include "rows.hpp"

namespace multihead {
inline namespace MULTIHEAD_ISA_NAMESPACE {

template <class Storage>
class PagedKvCache : public detail::PagedPool<Storage> {
  static_assert(is_cache_storage_v<Storage>,
                "PagedKvCache<Storage>: Storage must be float, bf16, fp16, q8 or q4");
  using Pool = detail::PagedPool<Storage>;

 public:
  using typename Pool::SequenceId;

  // Throws std::invalid_argument unless every size is positive and the pool's size fits in
  // 64 bits; then allocates the pool of num_blocks K blocks and num_blocks V blocks.
  PagedKvCache(std::int64_t num_blocks, std::int64_t block_size, std::int64_t kv_groups,
               std::int64_t head_dim, std::int64_t value_dim)
      : Pool(num_blocks, block_size), kv_groups_(kv_groups), head_dim_(head_dim),
        value_dim_(value_dim) {
    detail::check_cache_dims(kv_groups, head_dim, value_dim);
    // Rows of Codec::units elements (the dims themselves but for q8 and q4, kv_cache.hpp).
    const std::int64_t k_row = Codec<Storage>::units(head_dim);
    const std::int64_t v_row = Codec<Storage>::units(value_dim);
    this->allocate(
        detail::checked_product("K block size (block_size * kv_groups * head_dim)", block_size,
                                kv_groups, k_row),
        detail::checked_product("V block size (block_size * kv_groups * value_dim)", block_size,
                                kv_groups, v_row),
        kv_groups * k_row, kv_groups * v_row, k_row, v_row);
  }

  // value_dim = head_dim.
  PagedKvCache(std::int64_t num_blocks, std::int64_t block_size, std::int64_t kv_groups,
               std::int64_t head_dim)
      : PagedKvCache(num_blocks, block_size, kv_groups, head_dim, head_dim) {}

  std::int64_t kv_groups() const noexcept { return kv_groups_; }
  std::int64_t head_dim() const noexcept { return head_dim_; }
  std::int64_t value_dim() const noexcept { return value_dim_; }

  // Bytes one token occupies in a full block: K and V of every group.
  std::int64_t bytes_per_token() const noexcept {
    return kv_groups_ * (Codec<Storage>::row_bytes(head_dim_) + Codec<Storage>::row_bytes(value_dim_));
  }

  // Appends k [1, n, kv_groups, head_dim] and v [1, n, kv_groups, value_dim], n ≥ 1 tokens of
  // sequence `seq`, narrowed to Storage, taking blocks from the pool as they fill. Throws
  // std::invalid_argument on an unknown or released id, a shape that differs from the cache's,
  // or a pool too small; then nothing is written and no block is taken.
  void append(SequenceId seq, TensorView<const float> k, TensorView<const float> v) {
    this->tables_.append(
        seq, [&] { return detail::check_kv_append(k, v, 1, kv_groups_, head_dim_, value_dim_); },
        [&](std::int64_t block, std::int64_t row, std::int64_t t, std::int64_t run) {
          detail::store_tokens(k, 0, t, run,
                               this->key_block_data(block) + row * this->key_token_stride());
          detail::store_tokens(v, 0, t, run,
                               this->value_block_data(block) + row * this->value_token_stride());
        });
  }

  // The pool, as a pool the caller owns is given to the kernels (paged_view.hpp): with the
  // ids of block_table(seq), decode_attention over it reads what it reads over this cache.
  PagedKvView<Storage> view() const noexcept { return this->pool_view(kv_groups_, head_dim_, value_dim_); }

  // What a call over `sequences` sequences of this cache reads (attention/shape.hpp); kv_len is
  // the caller's to fill.
  detail::KvExtents kv_extents(std::int64_t sequences) const {
    return {sequences, 0, kv_groups_, head_dim_, value_dim_};
  }

  // The filled rows of the sequence's i-th block as [1, rows, kv_groups, dim] views, where rows
  // is block_size for every block but the last: what a kernel walks block by block.
  TensorView<const Storage> block_keys(SequenceId seq, std::int64_t i) const {
    const auto [block, rows] = this->tables_.filled_block(seq, i, "block_keys");
    return TensorView<const Storage>::strided(
        this->key_block_data(block), this->key_block_stride(), 1, rows, kv_groups_,
        Codec<Storage>::units(head_dim_), this->key_block_stride(), this->key_token_stride(),
        Codec<Storage>::units(head_dim_));
  }
  TensorView<const Storage> block_values(SequenceId seq, std::int64_t i) const {
    const auto [block, rows] = this->tables_.filled_block(seq, i, "block_values");
    return TensorView<const Storage>::strided(
        this->value_block_data(block), this->value_block_stride(), 1, rows, kv_groups_,
        Codec<Storage>::units(value_dim_), this->value_block_stride(), this->value_token_stride(),
        Codec<Storage>::units(value_dim_));
  }

 private:
  std::int64_t kv_groups_, head_dim_, value_dim_;
};

}  // namespace MULTIHEAD_ISA_NAMESPACE
}  // namespace multihead
