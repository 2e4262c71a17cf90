// A pool of paged K/V that a test owns, as an engine owns its memory (cache/paged_view.hpp):
// blocks handed to the sequences in a shuffled order, every sequence's ids in a FlashAttention
// block table and a FlashInfer indptr / indices pair, int32 or int64, in either block layout.
#pragma once

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <random>
#include <type_traits>
#include <vector>

#include <multihead/multihead.hpp>

#include "kernel_testing.hpp"
#include "testing.hpp"

namespace kernel_testing {

using multihead::Codec;
using multihead::PagedKvView;
using multihead::PagedSequences;

// n floats into a row of Storage.
template <class S>
void put_row(const float* x, std::int64_t n, S* row) {
  if constexpr (std::is_same_v<S, float>) {
    std::copy(x, x + n, row);
  } else if constexpr (std::is_same_v<S, multihead::bf16>) {
    for (std::int64_t i = 0; i < n; ++i) row[i] = multihead::to_bf16(x[i]);
  } else if constexpr (std::is_same_v<S, multihead::fp16>) {
    for (std::int64_t i = 0; i < n; ++i) row[i] = multihead::to_fp16(x[i]);
  } else {
    Codec<S>::encode(x, n, row);
  }
}

// Rows of dim values as they read back once stored as S (quantized per row, as a cache does).
template <class S>
std::vector<float> stored_rows(const std::vector<float>& x, std::int64_t dim) {
  if constexpr (!multihead::is_quantized_v<S>) {
    return test_support::stored<S>(x);
  } else {
    std::vector<float> out(x.size());
    std::vector<S> row(static_cast<std::size_t>(Codec<S>::units(dim)));
    for (std::size_t r = 0; r + std::size_t(dim) <= x.size(); r += std::size_t(dim)) {
      put_row(x.data() + r, dim, row.data());
      for (std::int64_t i = 0; i < dim; ++i)
        out[r + std::size_t(i)] = multihead::detail::decode_value(row[std::size_t(i / 32)], int(i % 32));
    }
    return out;
  }
}

// A pool the test owns, its blocks handed to the sequences in a shuffled order, with every
// block id of every sequence in a FlashAttention table and a FlashInfer indptr / indices pair.
template <class S, class Index>
struct OwnedPool {
  static constexpr std::int64_t kGroups = 2, kHeads = 8, kDim = 64;
  std::int64_t block_size, max_blocks = 0;
  std::vector<std::int64_t> lengths;
  std::vector<Inputs> inputs;  // per sequence: [1, length, groups, dim] K and V, and its q
  std::vector<int> q_lens;     // per sequence: its queries (inputs' q holds at least one)
  std::vector<S> k_pool, v_pool;
  PagedKvView<S> view;
  std::vector<Index> table, table_lengths, indptr{0}, indices, last_page_len;

  OwnedPool(std::int64_t bs, std::vector<std::int64_t> lens, int q_len, bool group_major)
      : OwnedPool(bs, lens, std::vector<int>(lens.size(), q_len), group_major) {}

  OwnedPool(std::int64_t bs, std::vector<std::int64_t> lens, std::vector<int> queries,
            bool group_major)
      : block_size(bs), lengths(std::move(lens)), q_lens(std::move(queries)) {
    std::int64_t blocks = 0;
    for (std::int64_t n : lengths) {
      blocks += (n + bs - 1) / bs;
      max_blocks = std::max(max_blocks, (n + bs - 1) / bs);
    }
    const std::int64_t num_blocks = blocks + 3;  // some never used
    const std::int64_t units = Codec<S>::units(kDim);
    k_pool.assign(std::size_t(num_blocks * bs * kGroups * units), S{});
    v_pool = k_pool;
    view = group_major ? PagedKvView<S>::group_major(k_pool.data(), v_pool.data(), num_blocks,
                                                     bs, kGroups, kDim, kDim)
                       : PagedKvView<S>::token_major(k_pool.data(), v_pool.data(), num_blocks,
                                                     bs, kGroups, kDim, kDim);
    std::vector<Index> order(static_cast<std::size_t>(num_blocks));
    std::iota(order.begin(), order.end(), Index{0});
    std::shuffle(order.begin(), order.end(), std::mt19937(7));
    std::size_t next = 0;
    const std::size_t row = std::size_t(row_stride());
    table.assign(row * lengths.size(), Index(-1));
    for (std::size_t b = 0; b < lengths.size(); ++b) {
      const std::int64_t n = lengths[b], held = (n + bs - 1) / bs;
      inputs.push_back(make_inputs(
          make_shape(1, std::max(q_lens[b], 1), std::max<std::int64_t>(n, 1), kHeads, kGroups,
                     kDim, kDim),
          std::uint64_t(17 * b + 3)));
      for (std::int64_t i = 0; i < held; ++i) {
        const Index id = order[next++];
        table[b * row + std::size_t(i)] = id;
        indices.push_back(id);
      }
      for (std::int64_t t = 0; t < n; ++t)
        for (std::int64_t g = 0; g < kGroups; ++g) {
          const std::int64_t block = table[b * row + std::size_t(t / bs)], at = t % bs;
          const float* x = inputs.back().k.data() + (t * kGroups + g) * kDim;
          const float* y = inputs.back().v.data() + (t * kGroups + g) * kDim;
          put_row(x, kDim, k_pool.data() + block * view.k_block_stride +
                               at * view.k_token_stride + g * view.k_group_stride);
          put_row(y, kDim, v_pool.data() + block * view.v_block_stride +
                               at * view.v_token_stride + g * view.v_group_stride);
        }
      table_lengths.push_back(Index(n));
      indptr.push_back(Index(indices.size()));
      last_page_len.push_back(Index(n == 0 ? 0 : (n - 1) % bs + 1));
    }
  }

  std::int64_t count() const { return std::int64_t(lengths.size()); }
  std::int64_t row_stride() const { return std::max<std::int64_t>(max_blocks, 1); }
  PagedSequences<Index> as_block_table() const {
    return PagedSequences<Index>::from_block_table({table.data(), std::int64_t(table.size())},
                                                   row_stride(),
                                                   {table_lengths.data(), count()});
  }
  PagedSequences<Index> as_indptr() const {
    return PagedSequences<Index>::from_page_indptr(
        {indptr.data(), std::int64_t(indptr.size())},
        {indices.data(), std::int64_t(indices.size())}, {last_page_len.data(), count()});
  }
};

}  // namespace kernel_testing
