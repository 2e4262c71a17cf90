// The bookkeeping of a paged cache, apart from what its blocks hold: which sequences live, which
// blocks each one owns in token order (its block table), and which blocks are free. The paged
// caches (paged_kv_cache.hpp, paged_latent_cache.hpp) own one and lay out their rows themselves.
//
// Token t of a sequence lives in block block_table[t / block_size] at row t % block_size. Blocks
// are taken as appends need them, released ones first (most recently released first), then
// fresh ones in id order; a fresh pool thus fills in order, and no list of num_blocks ids is
// kept. Ids are never reused, so a stale id cannot reach another sequence. Not thread-safe for
// writes.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <unordered_map>
#include <vector>

#include "../core/error.hpp"

namespace multihead {
inline namespace MULTIHEAD_ISA_NAMESPACE {
namespace detail {

class BlockTables {
 public:
  using SequenceId = std::int64_t;

  // Throws std::invalid_argument unless both sizes are positive.
  BlockTables(std::int64_t num_blocks, std::int64_t block_size)
      : num_blocks_(num_blocks), block_size_(block_size) {
    require_positive(num_blocks, "num_blocks");
    require_positive(block_size, "block_size");
  }

  std::int64_t num_blocks() const noexcept { return num_blocks_; }
  std::int64_t block_size() const noexcept { return block_size_; }
  std::int64_t free_blocks() const noexcept {
    return static_cast<std::int64_t>(released_.size()) + num_blocks_ - next_fresh_;
  }
  std::int64_t sequences() const noexcept { return static_cast<std::int64_t>(sequences_.size()); }

  SequenceId add_sequence() {
    const SequenceId id = next_id_;
    sequences_.emplace(id, Sequence{});
    ++next_id_;
    return id;
  }

  // Appends tokens to sequence `seq`, all or nothing. In this order, each throwing
  // std::invalid_argument before anything changes: the id is looked up; check() — the cache's
  // checks of its inputs — returns the token count n; the pool must have the blocks n more
  // tokens need. Then the blocks are taken and write(block, row, t, run) is called for runs of
  // the input's tokens [t, t + run) that go to rows [row, row + run) of `block`, in order.
  template <class Check, class Write>
  void append(SequenceId seq, Check&& check, Write&& write) {
    Sequence& s = find(seq, "append");
    const std::int64_t n = check();
    const std::int64_t new_length = checked_add(s.length, n, "sequence length");
    const std::int64_t held = static_cast<std::int64_t>(s.blocks.size());
    const std::int64_t needed = (new_length - 1) / block_size_ + 1 - held;
    require(needed <= free_blocks(), "append of ", n, " tokens to sequence ", seq, " (holding ",
            s.length, " tokens in ", held, " blocks of ", block_size_, ") needs ", needed,
            " more blocks but only ", free_blocks(), " of ", num_blocks_, " are free");
    // Reserve first: if that throws (bad_alloc), no block has been taken yet.
    s.blocks.reserve(static_cast<std::size_t>(held + needed));
    for (std::int64_t i = 0; i < needed; ++i) {
      if (released_.empty()) {
        s.blocks.push_back(next_fresh_++);
      } else {
        s.blocks.push_back(released_.back());
        released_.pop_back();
      }
    }
    for (std::int64_t t = 0; t < n;) {  // runs end at block boundaries
      const std::int64_t position = s.length + t;
      const std::int64_t row = position % block_size_;
      const std::int64_t run = std::min(block_size_ - row, n - t);
      write(s.blocks[static_cast<std::size_t>(position / block_size_)], row, t, run);
      t += run;
    }
    s.length = new_length;
  }

  // Returns the sequence's blocks to the pool and forgets the id.
  void release(SequenceId seq) {
    Sequence& s = find(seq, "release");
    // Reverse order, so that the next sequence takes them in the order this one had them. If the
    // insert throws (bad_alloc), it has changed nothing.
    released_.insert(released_.end(), s.blocks.rbegin(), s.blocks.rend());
    sequences_.erase(seq);
  }

  std::int64_t length(SequenceId seq) const { return find(seq, "length").length; }

  const std::vector<std::int64_t>& block_table(SequenceId seq) const {
    return find(seq, "block_table").blocks;
  }

  void check_block(std::int64_t block, const char* operation) const {
    require(block >= 0 && block < num_blocks_, operation, ": block id (", block,
            ") must be in [0, ", num_blocks_, ")");
  }

  // The id of the sequence's i-th block and the rows of it that are filled: block_size for
  // every block but the last.
  struct FilledBlock {
    std::int64_t block, rows;
  };
  FilledBlock filled_block(SequenceId seq, std::int64_t i, const char* operation) const {
    const Sequence& s = find(seq, operation);
    const std::int64_t held = static_cast<std::int64_t>(s.blocks.size());
    require(i >= 0 && i < held, operation, ": block index (", i, ") must be in [0, ", held,
            ") for sequence ", seq);
    return {s.blocks[static_cast<std::size_t>(i)],
            std::min(block_size_, s.length - i * block_size_)};
  }

 private:
  struct Sequence {
    std::int64_t length = 0;
    std::vector<std::int64_t> blocks;
  };

  const Sequence& find(SequenceId seq, const char* operation) const {
    const auto it = sequences_.find(seq);
    if (it == sequences_.end()) {
      require(seq < 0 || seq >= next_id_, operation, ": sequence ", seq, " was released");
      fail(operation, ": sequence ", seq, " does not exist (ids so far: 0 to ", next_id_ - 1, ")");
    }
    return it->second;
  }
  Sequence& find(SequenceId seq, const char* operation) {
    return const_cast<Sequence&>(static_cast<const BlockTables&>(*this).find(seq, operation));
  }

  std::int64_t num_blocks_, block_size_;
  std::int64_t next_fresh_ = 0;         // blocks [next_fresh_, num_blocks_) were never taken
  std::vector<std::int64_t> released_;  // a stack of released block ids
  std::unordered_map<SequenceId, Sequence> sequences_;
  SequenceId next_id_ = 0;
};

}  // namespace detail
}  // namespace MULTIHEAD_ISA_NAMESPACE
}  // namespace multihead
