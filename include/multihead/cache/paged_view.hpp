// Paged K/V in memory the caller owns: an engine that keeps its own pool of blocks and its own
// block tables (vLLM, or anything built on FlashAttention's block_table + cache_seqlens or
// FlashInfer's paged_kv_indptr / indices / last_page_len) hands them to the kernels as they
// are, int32 or int64 ids, without a copy.
//
//   PagedKvView<S>      the pool: where block 0's rows are, how many blocks, and the strides
//                       of the block layout ([blocks, block_size, groups, dim] or
//                       [blocks, groups, block_size, dim], or anything else with rows of a
//                       contiguous dim);
//   PagedSequences<I>   which blocks each sequence of a call owns, in token order, and its
//                       length, in one of the two vocabularies above.
//
// Token t of sequence b lives at row t % block_size of block blocks(b)[t / block_size]. Every
// id a call will read is checked against the pool, and every length against its table, before
// anything is read (check_paged). PagedKvCache and PagedLatentCache own a pool and hand out its
// view (view()), so the caches and the caller's memory run the same kernel path.
#pragma once

#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "../attention/kv_source.hpp"
#include "../attention/shape.hpp"
#include "../core/error.hpp"
#include "../core/tensor_view.hpp"
#include "../storage/codec.hpp"

namespace multihead {
inline namespace MULTIHEAD_ISA_NAMESPACE {

// A pool of K/V blocks. Pointers and strides count elements of Storage (codec units for q8 and
// q4: Codec<S>::units(dim) of them hold a row of dim values). v may equal k with the same
// strides: a latent pool, each token's value the first value_dim values of its key row.
template <class Storage>
struct PagedKvView {
  const Storage* k = nullptr;  // block 0, token 0, group 0's key row
  const Storage* v = nullptr;  // and its value row
  std::int64_t num_blocks = 0, block_size = 0, kv_groups = 0, head_dim = 0, value_dim = 0;
  std::int64_t k_block_stride = 0, k_token_stride = 0, k_group_stride = 0;
  std::int64_t v_block_stride = 0, v_token_stride = 0, v_group_stride = 0;

  // Dense pools of layout [num_blocks, block_size, kv_groups, dim] (vLLM's and FlashAttention's
  // paged layout: a token's groups side by side).
  static PagedKvView token_major(const Storage* k, const Storage* v, std::int64_t num_blocks,
                                 std::int64_t block_size, std::int64_t kv_groups,
                                 std::int64_t head_dim, std::int64_t value_dim) {
    const std::int64_t kr = Codec<Storage>::units(head_dim), vr = Codec<Storage>::units(value_dim);
    return {k, v, num_blocks, block_size, kv_groups, head_dim, value_dim,
            block_size * kv_groups * kr, kv_groups * kr, kr,
            block_size * kv_groups * vr, kv_groups * vr, vr};
  }
  // Dense pools of layout [num_blocks, kv_groups, block_size, dim] (FlashInfer's HND: a group's
  // tokens side by side).
  static PagedKvView group_major(const Storage* k, const Storage* v, std::int64_t num_blocks,
                                 std::int64_t block_size, std::int64_t kv_groups,
                                 std::int64_t head_dim, std::int64_t value_dim) {
    const std::int64_t kr = Codec<Storage>::units(head_dim), vr = Codec<Storage>::units(value_dim);
    return {k, v, num_blocks, block_size, kv_groups, head_dim, value_dim,
            block_size * kv_groups * kr, kr, block_size * kr,
            block_size * kv_groups * vr, vr, block_size * vr};
  }
};

// The sequences of a call over a pool: for sequence b, its block ids in token order and its
// length. Index: std::int32_t or std::int64_t, the caller's arrays read in place (kept alive and
// unchanged for the call's duration).
template <class Index>
class PagedSequences {
  static_assert(std::is_same_v<Index, std::int32_t> || std::is_same_v<Index, std::int64_t>,
                "PagedSequences<Index>: ids must be std::int32_t or std::int64_t");

 public:
  // FlashAttention's vocabulary: block_table [count, blocks_per_sequence] row-major, sequence b's
  // ids in row b, and lengths [count] (its cache_seqlens): count = lengths.size.
  static PagedSequences from_block_table(Span<const Index> block_table,
                                         std::int64_t blocks_per_sequence,
                                         Span<const Index> lengths) {
    return PagedSequences(block_table, {}, lengths, blocks_per_sequence);
  }

  // FlashInfer's vocabulary: sequence b owns pages indices[indptr[b] .. indptr[b + 1]), its last
  // page holding last_page_len[b] tokens (from 1 to block_size; 0 for a sequence of no pages):
  // count = last_page_len.size, indptr [count + 1].
  static PagedSequences from_page_indptr(Span<const Index> indptr, Span<const Index> indices,
                                         Span<const Index> last_page_len) {
    return PagedSequences(indices, indptr, last_page_len, 0);
  }

  std::int64_t count() const noexcept { return count_; }
  bool uses_indptr() const noexcept { return indptr_.data != nullptr; }

  // Sequence b's ids (unchecked: check_paged checks them).
  const Index* blocks(std::int64_t b) const noexcept {
    return ids_.data + (uses_indptr() ? std::int64_t(indptr_.data[b]) : b * row_);
  }
  // Its length in a pool of blocks of block_size tokens (unchecked).
  std::int64_t length(std::int64_t b, std::int64_t block_size) const noexcept {
    if (!uses_indptr()) return lengths_.data[b];
    const std::int64_t pages = std::int64_t(indptr_.data[b + 1]) - indptr_.data[b];
    return pages == 0 ? 0 : (pages - 1) * block_size + lengths_.data[b];
  }

  Span<const Index> ids() const noexcept { return ids_; }
  Span<const Index> indptr() const noexcept { return indptr_; }
  Span<const Index> lengths() const noexcept { return lengths_; }
  std::int64_t blocks_per_sequence() const noexcept { return row_; }

 private:
  PagedSequences(Span<const Index> ids, Span<const Index> indptr, Span<const Index> lengths,
                 std::int64_t row)
      : ids_(ids), indptr_(indptr), lengths_(lengths), row_(row), count_(lengths.size) {}

  Span<const Index> ids_, indptr_, lengths_;
  std::int64_t row_ = 0, count_ = 0;
};

namespace detail {

// Throws unless the pool's sizes are positive, its rows fit their strides without overlapping
// (within a token, within a block and between blocks), and its size fits in 64 bits.
template <class S>
void check_pool(const PagedKvView<S>& pool) {
  require(pool.k != nullptr && pool.v != nullptr, "pool: k (", static_cast<const void*>(pool.k),
          ") and v (", static_cast<const void*>(pool.v), ") must not be null");
  require_positive(pool.num_blocks, "pool.num_blocks");
  require_positive(pool.block_size, "pool.block_size");
  require_positive(pool.kv_groups, "pool.kv_groups");
  require_positive(pool.head_dim, "pool.head_dim");
  require_positive(pool.value_dim, "pool.value_dim");
  const auto rows_fit = [&](const char* name, std::int64_t units, std::int64_t block,
                            std::int64_t token, std::int64_t group) {
    require(token > 0 && group > 0 && block > 0, "pool.", name, " strides (block ", block,
            ", token ", token, ", group ", group, ") must be positive");
    // The finer of the two strides holds a row; the coarser all rows of the finer.
    const bool groups_inner = group <= token;
    const std::int64_t inner = groups_inner ? group : token, outer = groups_inner ? token : group;
    const std::int64_t inner_count = groups_inner ? pool.kv_groups : pool.block_size;
    const std::int64_t outer_count = groups_inner ? pool.block_size : pool.kv_groups;
    const std::int64_t inner_span =
        checked_add(checked_mul(inner_count - 1, inner, "pool row span"), units, "pool row span");
    require(inner >= units && outer >= inner_span, "pool.", name, ": rows of ", units,
            " units overlap with token stride ", token, " and group stride ", group, " (",
            pool.block_size, " tokens × ", pool.kv_groups, " groups)");
    const std::int64_t block_span = checked_add(
        checked_mul(outer_count - 1, outer, "pool block span"), inner_span, "pool block span");
    require(block >= block_span, "pool.", name, "_block_stride (", block,
            ") is smaller than a block's rows (", block_span, " units)");
    checked_mul(checked_mul(pool.num_blocks, block, "pool size"), std::int64_t(sizeof(S)),
                "pool size in bytes");
  };
  rows_fit("k", Codec<S>::units(pool.head_dim), pool.k_block_stride, pool.k_token_stride,
           pool.k_group_stride);
  rows_fit("v", Codec<S>::units(pool.value_dim), pool.v_block_stride, pool.v_token_stride,
           pool.v_group_stride);
}

// The bytes from the pool's first K (V) row to the end of its last block's last one (for
// overlap checks against a call's outputs). After check_pool: nothing overflows.
template <class S>
ByteRange pool_bytes(const PagedKvView<S>& pool, bool values) {
  const std::int64_t units = Codec<S>::units(values ? pool.value_dim : pool.head_dim);
  const std::int64_t block = values ? pool.v_block_stride : pool.k_block_stride;
  const std::int64_t token = values ? pool.v_token_stride : pool.k_token_stride;
  const std::int64_t group = values ? pool.v_group_stride : pool.k_group_stride;
  const std::int64_t elements = (pool.num_blocks - 1) * block + (pool.block_size - 1) * token +
                                (pool.kv_groups - 1) * group + units;
  return {values ? pool.v : pool.k, elements * std::int64_t(sizeof(S)),
          values ? "pool.v" : "pool.k"};
}

// Checks a call's sequences against the pool and fills `tables` with each one's first id and
// `lengths` with its length (per-call lists of `count` entries, no copy of the ids); returns
// the longest length. Every id a sequence's length reaches must lie in [0, num_blocks).
template <class Index>
std::int64_t check_paged_sequences(const PagedSequences<Index>& seqs, std::int64_t num_blocks,
                                   std::int64_t block_size, std::vector<const Index*>& tables,
                                   std::vector<std::int64_t>& lengths) {
  const std::int64_t n = seqs.count();
  require(n > 0, "sequences: need at least one sequence (count ", n, ")");
  const Span<const Index> ids = seqs.ids(), lens = seqs.lengths(), indptr = seqs.indptr();
  require(lens.data != nullptr, seqs.uses_indptr() ? "last_page_len" : "lengths",
          ": data is null (size ", lens.size, ")");
  std::int64_t available = ids.size;  // ids a sequence may reach: checked per sequence below
  if (seqs.uses_indptr()) {
    require(indptr.size == n + 1, "indptr: ", indptr.size, " offsets for ", n,
            " sequences (need sequences + 1)");
    require(indptr.data[0] >= 0, "indptr[0] (", indptr.data[0], ") must not be negative");
    for (std::int64_t b = 0; b < n; ++b)
      require(indptr.data[b + 1] >= indptr.data[b], "indptr[", b + 1, "] (", indptr.data[b + 1],
              ") is below indptr[", b, "] (", indptr.data[b], ")");
    require(indptr.data[n] <= ids.size, "indptr[", n, "] (", indptr.data[n],
            ") is beyond the indices (size ", ids.size, ")");
  } else {
    require(seqs.blocks_per_sequence() > 0, "blocks_per_sequence (", seqs.blocks_per_sequence(),
            ") must be positive");
    require(ids.size >= checked_mul(n, seqs.blocks_per_sequence(), "block_table size"),
            "block_table: size ", ids.size, " is less than ", n, " sequences × ",
            seqs.blocks_per_sequence(), " blocks");
    available = seqs.blocks_per_sequence();
  }
  require(ids.data != nullptr || ids.size == 0, "block ids: data is null (size ", ids.size, ")");
  tables.clear();
  lengths.clear();
  std::int64_t longest = 0;
  for (std::int64_t b = 0; b < n; ++b) {
    std::int64_t held = available, length;
    if (seqs.uses_indptr()) {
      held = std::int64_t(indptr.data[b + 1]) - indptr.data[b];
      const std::int64_t last = lens.data[b];
      require(held == 0 ? last == 0 : last >= 1 && last <= block_size, "last_page_len[", b,
              "] (", last, ") must be in [1, ", block_size, "] for a sequence of ", held,
              " pages (0 for none)");
    } else {
      require(lens.data[b] >= 0, "lengths[", b, "] (", lens.data[b], ") must not be negative");
    }
    if (seqs.uses_indptr() && held > 0)  // (held - 1) · block_size + last must fit
      checked_add(checked_mul(held - 1, block_size, "sequence length"), 1, "sequence length");
    length = seqs.length(b, block_size);
    const std::int64_t used = length / block_size + (length % block_size != 0);
    require(used <= held, "sequence ", b, ": length ", length, " needs ", used, " blocks of ",
            block_size, " tokens but its table holds ", held);
    const Index* table = seqs.blocks(b);
    for (std::int64_t i = 0; i < used; ++i)
      require(table[i] >= 0 && table[i] < num_blocks, "sequence ", b, ": block ", i, " is id ",
              table[i], ", outside the pool's [0, ", num_blocks, ")");
    tables.push_back(table);
    lengths.push_back(length);
    longest = std::max(longest, length);
  }
  return longest;
}

// The KV-source contract over a pool: sequence b of a call has block ids tables[b] and length
// lengths[b] (kept by the caller for the call's duration).
template <class S, class Index>
KvRows<S> pool_rows(const PagedKvView<S>& pool, const Index* const* tables,
                    const std::int64_t* lengths) {
  KvRows<S> rows;
  rows.k = pool.k;
  rows.v = pool.v;
  rows.k_block = pool.k_block_stride;
  rows.v_block = pool.v_block_stride;
  rows.k_stride = pool.k_token_stride;
  rows.v_stride = pool.v_token_stride;
  rows.k_group = pool.k_group_stride;
  rows.v_group = pool.v_group_stride;
  rows.set_tables(tables);
  rows.block_size = pool.block_size;
  rows.lengths = lengths;
  return rows;
}

}  // namespace detail
}  // namespace MULTIHEAD_ISA_NAMESPACE
}  // namespace multihead
