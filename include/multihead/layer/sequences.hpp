// A layer's step over some of a cache's sequences (a server's continuous batch): what both
// layer kinds check before anything is written, and how they find each sequence's rows.
#pragma once

#include "../core/eigen.hpp"
#include <algorithm>
#include <cstdint>
#include <vector>

#include "../attention/varlen.hpp"
#include "../cache/batch.hpp"
#include "../core/error.hpp"
#include "projection.hpp"

namespace multihead {
inline namespace MULTIHEAD_ISA_NAMESPACE {
namespace detail {

// Checks a step of x [total, model_dim] over the cache's sequences ids, sequence i's new tokens
// being rows [cu[i], cu[i + 1]) of x: the offsets, every id known and named once, and room for
// every sequence's tokens (in its slot, or among the pool's free blocks). Fills `starts` with
// each sequence's length (its new tokens' first position); returns the longest length after
// the step.
template <class Cache>
std::int64_t check_sequences_step(const Eigen::Ref<const RowMatrix>& x, std::int64_t model_dim,
                                  std::int64_t options_batch, int threads,
                                  Span<const std::int64_t> cu, const Cache& cache,
                                  Span<const std::int64_t> ids, std::vector<std::int64_t>& starts) {
  require(options_batch == 1, "batch (", options_batch,
          ") must be 1 in a call over sequences (cu_seqlens gives them)");
  check_layer_input(x, model_dim, 1, threads);
  require(ids.data != nullptr && ids.size > 0, "sequences: need at least one id (size ", ids.size,
          ")");
  check_offsets(cu, x.rows(), "cu_seqlens", ids.size);
  starts.clear();
  std::int64_t longest = 0, blocks = 0;
  for (std::int64_t i = 0; i < ids.size; ++i) {
    const std::int64_t id = ids.data[i], n = cu.data[i + 1] - cu.data[i];
    for (std::int64_t j = 0; j < i; ++j)
      require(ids.data[j] != id, "sequences: id ", id, " is named twice (at ", j, " and ", i, ")");
    const std::int64_t start = cache.length(id);  // throws on an unknown id
    starts.push_back(start);
    longest = std::max(longest, checked_add(start, n, "sequence length"));
    if constexpr (is_contiguous_cache_v<Cache>) {
      require_room(n, start, cache.capacity());
    } else {
      const std::int64_t size = cache.block_size();
      blocks += (start + n + size - 1) / size - (start + size - 1) / size;
    }
  }
  if constexpr (!is_contiguous_cache_v<Cache>)
    require(blocks <= cache.free_blocks(), "the step needs ", blocks, " more blocks but only ",
            cache.free_blocks(), " of ", cache.num_blocks(), " are free");
  return longest;
}

// A step's context length as RoPE reads it (dynamic scaling, rope.hpp): the last position of any
// new token, plus one. Sequences sitting the step out have no token to rotate and do not count.
inline std::int64_t step_context(Span<const std::int64_t> cu,
                                 const std::vector<std::int64_t>& starts) {
  std::int64_t context = 0;
  for (std::size_t i = 0; i < starts.size(); ++i) {
    const std::int64_t n = cu.data[i + 1] - cu.data[i];
    if (n > 0) context = std::max(context, starts[i] + n);  // checked by check_sequences_step
  }
  return context;
}

}  // namespace detail
}  // namespace MULTIHEAD_ISA_NAMESPACE
}  // namespace multihead
