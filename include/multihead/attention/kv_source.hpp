// The KV-source contract: how a kernel sees cached K/V rows, whoever holds them.
//
// A source is a KvRows<S> (S: the storage type, storage/): for batch entry b, its length(b) and
// run(b, j, most), the next run of at most `most` consecutive tokens from token j, with pointers
// and strides (KvRun). Views, packed varlen buffers and paged block tables are three ways of
// filling the same struct; the decode kernel is compiled once per storage type for all of them.
// Caches (cache/) adapt themselves to it, and an engine that owns its memory fills one directly.
// Pointers, strides and group offsets count elements of S: for the plain types one value each,
// for a format with scales the codec's units (storage/codec.hpp).
#pragma once

#include <algorithm>
#include <cstdint>

#include "../core/tensor_view.hpp"

namespace multihead {
inline namespace MULTIHEAD_ISA_NAMESPACE {
namespace detail {

// `keys` consecutive cached tokens of one sequence: group 0's K row (V row) of the first token
// at k (v), tokens k_stride (v_stride) elements apart, groups k_group (v_group) apart.
template <class S>
struct KvRun {
  const S* k = nullptr;
  const S* v = nullptr;
  std::int64_t k_stride = 0, v_stride = 0, k_group = 0, v_group = 0;
  int keys = 0;
};

// Where every batch entry's cached rows are: the one source the decode kernel reads, so that
// the kernel is compiled once per storage type whatever holds the rows, and never names a
// cache: each cache builds its KvRows itself (cache/). Token t of entry b is
//  - paged caches (tables): row t % block_size of block tables[b][t / block_size];
//  - packed varlen buffers (first = cu_seqlens): row first[b] + t of block 0;
//  - views [batch, tokens, groups, dim] (a contiguous cache is one): row t of block b.
// Blocks lie k_block (v_block) elements apart; in a block, tokens k_stride (v_stride) apart and a
// token's groups k_group (v_group) apart. A run ends at a block's end (paged) and at the entry's.
template <class S>
struct KvRows {
  using storage_type = S;
  const S* k = nullptr;
  const S* v = nullptr;
  std::int64_t k_block = 0, v_block = 0, k_stride = 0, v_stride = 0, k_group = 0, v_group = 0;
  // paged: per entry, its block ids, int64 or int32 (the caller's arrays, read in place)
  const std::int64_t* const* tables = nullptr;
  const std::int32_t* const* tables32 = nullptr;
  std::int64_t block_size = 0;                  // paged: tokens per block
  const std::int64_t* first = nullptr;          // packed: entry b is tokens [first[b], first[b + 1])
  const std::int64_t* lengths = nullptr;        // paged: per entry, its length
  std::int64_t tokens = 0;                      // views: every entry's length

  void set_tables(const std::int64_t* const* ids) { tables = ids; }
  void set_tables(const std::int32_t* const* ids) { tables32 = ids; }

  std::int64_t length(std::int64_t b) const {
    return lengths != nullptr ? lengths[b] : first != nullptr ? first[b + 1] - first[b] : tokens;
  }
  KvRun<S> run(std::int64_t b, std::int64_t j, std::int64_t most) const {
    std::int64_t block = b, row = j, keys = std::min(most, length(b) - j);
    if (tables != nullptr || tables32 != nullptr) {
      block = tables != nullptr ? tables[b][j / block_size] : tables32[b][j / block_size];
      row = j % block_size;
      keys = std::min(keys, block_size - row);
    } else if (first != nullptr) {
      block = 0;
      row = first[b] + j;
    }
    return {k + block * k_block + row * k_stride, v + block * v_block + row * v_stride,
            k_stride, v_stride, k_group, v_group, int(keys)};
  }
};

// K/V views [batch, kv_len, kv_groups, dim]: one run per tile.
template <class S>
KvRows<S> view_rows(const TensorView<const S>& k, const TensorView<const S>& v) {
  KvRows<S> rows;
  rows.k = k.data();
  rows.v = v.data();
  rows.k_block = k.batch_stride();
  rows.v_block = v.batch_stride();
  rows.k_stride = k.token_stride();
  rows.v_stride = v.token_stride();
  rows.k_group = k.head_stride();
  rows.v_group = v.head_stride();
  rows.tokens = k.tokens();
  return rows;
}

// Packed K/V views [1, total, kv_groups, dim], sequence b owning tokens [cu[b], cu[b + 1]).
template <class S>
KvRows<S> packed_rows(const TensorView<const S>& k, const TensorView<const S>& v,
                      const std::int64_t* cu) {
  KvRows<S> rows = view_rows(k, v);
  rows.first = cu;
  return rows;
}

}  // namespace detail
}  // namespace MULTIHEAD_ISA_NAMESPACE
}  // namespace multihead
