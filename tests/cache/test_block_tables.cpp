// The bookkeeping both paged caches share (block_tables.hpp), tested once and directly: which
// blocks each sequence owns, in what order blocks are handed out and reused, how appends are cut
// into runs at block boundaries, and that a failing append changes nothing. What each cache
// does with its blocks (row layout, conversion, views) is tested in its own file.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <map>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include <multihead/multihead.hpp>

#include "support/testing.hpp"

namespace {

using multihead::detail::BlockTables;
using test_support::error_of;
using Id = BlockTables::SequenceId;

// One write call of an append: tokens [t, t + run) of the input go to rows [row, row + run).
struct Write {
  std::int64_t block, row, t, run;
};

// Appends n tokens to `seq`, returning the write calls; the check returns n.
std::vector<Write> append(BlockTables& tables, Id seq, std::int64_t n) {
  std::vector<Write> writes;
  tables.append(
      seq, [&] { return n; },
      [&](std::int64_t block, std::int64_t row, std::int64_t t, std::int64_t run) {
        writes.push_back({block, row, t, run});
      });
  return writes;
}

// The tables against a model of the lengths: each table sized to its length, the tables
// disjoint, and the free count accounting for every other block.
void expect_consistent(const BlockTables& tables, const std::map<Id, std::int64_t>& lengths) {
  const std::int64_t bs = tables.block_size();
  ASSERT_EQ(tables.sequences(), static_cast<std::int64_t>(lengths.size()));
  std::set<std::int64_t> used;
  for (const auto& [id, length] : lengths) {
    EXPECT_EQ(tables.length(id), length) << "sequence " << id;
    const std::vector<std::int64_t>& table = tables.block_table(id);
    EXPECT_EQ(static_cast<std::int64_t>(table.size()), (length + bs - 1) / bs) << "sequence " << id;
    for (std::int64_t block : table) {
      EXPECT_TRUE(block >= 0 && block < tables.num_blocks()) << block;
      EXPECT_TRUE(used.insert(block).second) << "block " << block << " is used twice";
    }
  }
  EXPECT_EQ(tables.free_blocks(), tables.num_blocks() - static_cast<std::int64_t>(used.size()));
}

TEST(BlockTables, InterleavedAppendsAreCutIntoRunsAtBlockBoundaries) {
  for (std::int64_t bs : {1, 3, 16}) {
    SCOPED_TRACE("block_size " + std::to_string(bs));
    BlockTables tables(400 / bs + 20, bs);
    EXPECT_EQ(tables.block_size(), bs);
    EXPECT_EQ(tables.free_blocks(), tables.num_blocks());
    std::map<Id, std::int64_t> lengths;
    for (int i = 0; i < 5; ++i) lengths[tables.add_sequence()] = 0;
    EXPECT_EQ(lengths.rbegin()->first, 4) << "ids count from 0";
    // Appends that cross several blocks, single tokens, and exact fills.
    const std::int64_t counts[] = {1, 2 * bs + 1, bs, 1, 3 * bs - 1, 7, 1, bs + 2, 0};
    for (std::int64_t n : counts)
      for (auto& [id, length] : lengths) {
        const std::int64_t add = n + (n > 0 ? id % 3 : 0);
        const std::vector<Write> writes = append(tables, id, add);
        // The runs cover the input in order, each within one block, at the rows of its tokens.
        std::int64_t t = 0;
        for (const Write& w : writes) {
          EXPECT_EQ(w.t, t);
          EXPECT_GT(w.run, 0);
          EXPECT_EQ(w.row, (length + t) % bs);
          EXPECT_LE(w.row + w.run, bs);
          const std::vector<std::int64_t>& table = tables.block_table(id);
          EXPECT_EQ(w.block, table[static_cast<std::size_t>((length + t) / bs)]);
          t += w.run;
        }
        EXPECT_EQ(t, add);
        // A run ends at a block boundary or at the end of the input: no needless splits.
        EXPECT_EQ(static_cast<std::int64_t>(writes.size()),
                  add == 0 ? 0 : (length + add - 1) / bs - length / bs + 1);
        length += add;
      }
    expect_consistent(tables, lengths);
  }
}

TEST(BlockTables, FreshPoolFillsInIdOrder) {
  BlockTables tables(8, 2);
  const Id a = tables.add_sequence(), b = tables.add_sequence();
  append(tables, a, 3);  // blocks 0, 1
  append(tables, b, 2);  // block 2
  append(tables, a, 2);  // fills block 1, then block 3
  EXPECT_EQ(tables.block_table(a), (std::vector<std::int64_t>{0, 1, 3}));
  EXPECT_EQ(tables.block_table(b), (std::vector<std::int64_t>{2}));
}

TEST(BlockTables, ReleasedBlocksAreReusedFirstInTheirOrder) {
  BlockTables tables(10, 4);
  std::map<Id, std::int64_t> lengths;
  const Id a = tables.add_sequence(), b = tables.add_sequence(), c = tables.add_sequence();
  append(tables, a, 9);   // 3 blocks
  append(tables, b, 4);   // 1 block
  append(tables, c, 13);  // 4 blocks
  lengths = {{a, 9}, {b, 4}, {c, 13}};
  expect_consistent(tables, lengths);
  EXPECT_EQ(tables.free_blocks(), 2);
  const std::vector<std::int64_t> freed = tables.block_table(a);
  tables.release(a);
  lengths.erase(a);
  EXPECT_EQ(tables.free_blocks(), 5);
  expect_consistent(tables, lengths);

  // The released id is gone for good, and named so; ids never handed out are named apart.
  EXPECT_EQ(error_of([&] { tables.length(a); }), "multihead: length: sequence 0 was released");
  EXPECT_NE(error_of([&] { tables.block_table(a); }).find("block_table: sequence 0 was released"),
            std::string::npos);
  EXPECT_NE(error_of([&] { tables.release(a); }).find("release: sequence 0 was released"),
            std::string::npos);
  EXPECT_NE(error_of([&] { append(tables, a, 1); }).find("append: sequence 0 was released"),
            std::string::npos);
  EXPECT_EQ(error_of([&] { tables.length(99); }),
            "multihead: length: sequence 99 does not exist (ids so far: 0 to 2)");
  EXPECT_NE(error_of([&] { tables.length(-1); }).find("sequence -1 does not exist"),
            std::string::npos);

  // A new sequence gets a fresh id, the freed blocks in their order, then the never used ones.
  const Id d = tables.add_sequence();
  EXPECT_EQ(d, 3);
  append(tables, d, 20);  // 5 blocks: everything free
  lengths[d] = 20;
  EXPECT_EQ(tables.free_blocks(), 0);
  const std::vector<std::int64_t>& table = tables.block_table(d);
  EXPECT_TRUE(std::equal(freed.begin(), freed.end(), table.begin()))
      << "the freed blocks are reused first, in their order";
  expect_consistent(tables, lengths);
  for (const auto& [id, length] : lengths) tables.release(id);
  EXPECT_EQ(tables.free_blocks(), 10);
  EXPECT_EQ(tables.sequences(), 0);
}

// All or nothing: an append that needs more blocks than are free, or whose check throws, takes
// no block and writes nothing.
TEST(BlockTables, FailedAppendsChangeNothing) {
  BlockTables tables(6, 3);
  const Id a = tables.add_sequence(), b = tables.add_sequence();
  append(tables, a, 7);  // 3 blocks, the last holding 1 token
  append(tables, b, 4);  // 2 blocks
  EXPECT_EQ(tables.free_blocks(), 1);
  const std::vector<std::int64_t> table_a = tables.block_table(a);
  const std::map<Id, std::int64_t> lengths = {{a, 7}, {b, 4}};

  // Sequence a has room for 2 more tokens in its last block and 3 in the free one: 6 need 2.
  std::vector<Write> writes;
  const auto record = [&](std::int64_t block, std::int64_t row, std::int64_t t, std::int64_t run) {
    writes.push_back({block, row, t, run});
  };
  EXPECT_EQ(error_of([&] { tables.append(a, [] { return std::int64_t{6}; }, record); }),
            "multihead: append of 6 tokens to sequence 0 (holding 7 tokens in 3 blocks of 3) "
            "needs 2 more blocks but only 1 of 6 are free");
  // The caller's check runs after the id is found and before any block is taken.
  EXPECT_EQ(error_of([&] {
              tables.append(
                  b, []() -> std::int64_t { throw std::invalid_argument("bad input"); }, record);
            }),
            "bad input");
  bool checked = false;
  EXPECT_NE(error_of([&] {
              tables.append(
                  7, [&] { return checked = true, std::int64_t{1}; }, record);
            }).find("append: sequence 7 does not exist"),
            std::string::npos);
  EXPECT_FALSE(checked) << "the check ran for an unknown sequence";
  const Id empty = tables.add_sequence();
  EXPECT_NE(error_of([&] { append(tables, empty, 4); }).find("needs 2 more blocks but only 1"),
            std::string::npos);
  EXPECT_TRUE(writes.empty()) << "a failed append wrote";
  EXPECT_EQ(tables.block_table(a), table_a);
  std::map<Id, std::int64_t> with_empty = lengths;
  with_empty[empty] = 0;
  expect_consistent(tables, with_empty);

  // What fits exactly still goes in: 5 tokens fill a's last block and the free one.
  append(tables, a, 5);
  EXPECT_EQ(tables.free_blocks(), 0);
}

TEST(BlockTables, RejectsBadSizesBlockIdsAndIndices) {
  EXPECT_EQ(error_of([] { BlockTables(0, 16); }), "multihead: num_blocks (0) must be positive");
  EXPECT_EQ(error_of([] { BlockTables(4, -2); }), "multihead: block_size (-2) must be positive");
  BlockTables tables(4, 2);
  EXPECT_NO_THROW(tables.check_block(3, "key_block"));
  EXPECT_EQ(error_of([&] { tables.check_block(4, "key_block"); }),
            "multihead: key_block: block id (4) must be in [0, 4)");
  EXPECT_NE(error_of([&] { tables.check_block(-1, "value_block"); })
                .find("value_block: block id (-1)"),
            std::string::npos);

  // filled_block: the i-th block and its filled rows, block_size for all but the last.
  const Id id = tables.add_sequence();
  EXPECT_EQ(error_of([&] { tables.filled_block(id, 0, "block_keys"); }),
            "multihead: block_keys: block index (0) must be in [0, 0) for sequence 0");
  append(tables, id, 3);
  const BlockTables::FilledBlock first = tables.filled_block(id, 0, "block_keys");
  const BlockTables::FilledBlock last = tables.filled_block(id, 1, "block_keys");
  EXPECT_EQ(first.block, tables.block_table(id)[0]);
  EXPECT_EQ(first.rows, 2);
  EXPECT_EQ(last.block, tables.block_table(id)[1]);
  EXPECT_EQ(last.rows, 1);
  EXPECT_NE(error_of([&] { tables.filled_block(id, 2, "block_values"); })
                .find("block_values: block index (2) must be in [0, 2)"),
            std::string::npos);
  EXPECT_NE(error_of([&] { tables.filled_block(5, 0, "block_values"); })
                .find("block_values: sequence 5 does not exist"),
            std::string::npos);
}

}  // namespace
