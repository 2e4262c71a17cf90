// The contiguous and paged KV caches (kv_cache.hpp, paged_kv_cache.hpp), for float, bf16 and fp16
// storage: what is appended is what is read back (after one rounding to the storage type, by
// half.hpp's scalar conversion, which test_half.cpp checks against its own reference), through
// the views and through the block tables; errors name the values and leave the cache untouched.
// The expected contents are kept here in plain per-sequence vectors of floats, a model that
// shares nothing with the caches' layout. Which blocks a paged sequence gets, and the errors for
// unknown or released ids, are the block tables' and tested once, in test_block_tables.cpp.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <limits>
#include <multihead/multihead.hpp>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "support/testing.hpp"

namespace {

using namespace test_support;

using multihead::bf16;
using multihead::fp16;
using multihead::KvCache;
using multihead::PagedKvCache;
using multihead::TensorView;





// Token rows [tokens, groups, dim] of one sequence, as plain vectors per token.
struct Rows {
  std::int64_t groups = 0, dim = 0;
  std::vector<float> data;  // [tokens, groups, dim]
  std::int64_t tokens() const { return static_cast<std::int64_t>(data.size()) / (groups * dim); }
  float at(std::int64_t t, std::int64_t g, std::int64_t c) const {
    return data[static_cast<std::size_t>((t * groups + g) * dim + c)];
  }
};

// A [batch, tokens, groups, dim] input built from per-sequence rows, in one of three layouts:
// the dense token-major one appends take most often, head-major [batch, groups, tokens, dim],
// and token-major with padding after each token's rows; the last two are strided views, which
// exercise the row-by-row copy.
enum class Layout { dense, head_major, padded };

struct Input {
  std::vector<float> buffer;
  TensorView<const float> view;
};

Input make_input(const std::vector<Rows>& sequences, Layout layout) {
  const auto batch = static_cast<std::int64_t>(sequences.size());
  const std::int64_t tokens = sequences[0].tokens(), groups = sequences[0].groups,
                     dim = sequences[0].dim;
  // Element strides of the batch, token and head axes.
  const std::int64_t padded_token = groups * dim + 3;
  std::int64_t strides[3] = {tokens * groups * dim, groups * dim, dim};
  if (layout == Layout::head_major) strides[1] = dim, strides[2] = tokens * dim;
  if (layout == Layout::padded) strides[0] = tokens * padded_token, strides[1] = padded_token;
  Input in;
  in.buffer.assign(static_cast<std::size_t>(batch * strides[0]), -99.0f);
  for (std::int64_t b = 0; b < batch; ++b)
    for (std::int64_t t = 0; t < tokens; ++t)
      for (std::int64_t g = 0; g < groups; ++g)
        for (std::int64_t c = 0; c < dim; ++c)
          in.buffer[static_cast<std::size_t>(b * strides[0] + t * strides[1] + g * strides[2] +
                                             c)] =
              sequences[static_cast<std::size_t>(b)].at(t, g, c);
  const auto size = static_cast<std::int64_t>(in.buffer.size());
  if (layout == Layout::dense)
    in.view = TensorView<const float>(in.buffer.data(), size, batch, tokens, groups, dim);
  else
    in.view = TensorView<const float>::strided(in.buffer.data(), size, batch, tokens, groups, dim,
                                               strides[0], strides[1], strides[2]);
  return in;
}

Rows random_rows(std::int64_t tokens, std::int64_t groups, std::int64_t dim, std::mt19937& rng) {
  return Rows{groups, dim, random_cache_values(tokens * groups * dim, rng)};
}




template <class Storage>
class KvCacheTest : public ::testing::Test {};
TYPED_TEST_SUITE(KvCacheTest, StorageTypes);

// ---- the contiguous cache -----------------------------------------------------------------------

// Every filled element of the cache equals the model's value after one rounding, bit for bit.
template <class Storage>
void expect_contents(const KvCache<Storage>& cache, const std::vector<Rows>& keys,
                     const std::vector<Rows>& values) {
  ASSERT_EQ(cache.length(), keys[0].tokens());
  const TensorView<const Storage> k = cache.keys(), v = cache.values();
  ASSERT_EQ(k.batch(), cache.batch());
  ASSERT_EQ(k.tokens(), cache.length());
  ASSERT_EQ(k.heads(), cache.kv_groups());
  ASSERT_EQ(k.dim(), cache.head_dim());
  ASSERT_EQ(v.dim(), cache.value_dim());
  if (cache.length() > 0) {
    k.validate("keys");
    v.validate("values");
  }
  std::int64_t wrong = 0;
  for (std::int64_t b = 0; b < cache.batch(); ++b)
    for (std::int64_t t = 0; t < cache.length(); ++t)
      for (std::int64_t g = 0; g < cache.kv_groups(); ++g) {
        for (std::int64_t c = 0; c < cache.head_dim(); ++c)
          wrong += !same_bits(read(k.row(b, t, g)[c]), stored<Storage>(keys[b].at(t, g, c)));
        for (std::int64_t c = 0; c < cache.value_dim(); ++c)
          wrong += !same_bits(read(v.row(b, t, g)[c]), stored<Storage>(values[b].at(t, g, c)));
      }
  EXPECT_EQ(wrong, 0) << "elements that differ from what was appended";
}

TYPED_TEST(KvCacheTest, AppendsOneAndManyTokensAndReadsThemBack) {
  using S = TypeParam;
  std::mt19937 rng(7);
  const std::int64_t batch = 3, capacity = 40, groups = 2, head_dim = 24, value_dim = 17;
  KvCache<S> cache(batch, capacity, groups, head_dim, value_dim);
  EXPECT_EQ(cache.length(), 0);
  EXPECT_EQ(cache.capacity(), capacity);
  EXPECT_EQ(cache.batch(), batch);
  EXPECT_EQ(cache.kv_groups(), groups);
  EXPECT_EQ(cache.head_dim(), head_dim);
  EXPECT_EQ(cache.value_dim(), value_dim);
  EXPECT_EQ(cache.bytes_per_token(),
            groups * (head_dim + value_dim) * static_cast<std::int64_t>(sizeof(S)));
  EXPECT_TRUE(aligned64(cache.keys().data()));
  EXPECT_TRUE(aligned64(cache.values().data()));
  // The views span the whole buffer with its strides, whatever the length.
  EXPECT_EQ(cache.keys().batch_stride(), capacity * groups * head_dim);
  EXPECT_EQ(cache.keys().token_stride(), groups * head_dim);
  EXPECT_EQ(cache.values().batch_stride(), capacity * groups * value_dim);
  EXPECT_EQ(cache.values().head_stride(), value_dim);
  EXPECT_GE(cache.keys().size(), batch * capacity * groups * head_dim);

  std::vector<Rows> keys(batch, Rows{groups, head_dim, {}}),
      values(batch, Rows{groups, value_dim, {}});
  int step = 0;
  for (std::int64_t n : {1, 5, 1, 16, 3, 14}) {  // 40 in all: ends exactly full
    std::vector<Rows> k, v;
    for (std::int64_t b = 0; b < batch; ++b) {
      k.push_back(random_rows(n, groups, head_dim, rng));
      v.push_back(random_rows(n, groups, value_dim, rng));
      keys[b].data.insert(keys[b].data.end(), k[b].data.begin(), k[b].data.end());
      values[b].data.insert(values[b].data.end(), v[b].data.begin(), v[b].data.end());
    }
    const Layout layouts[] = {Layout::dense, Layout::head_major, Layout::padded};
    const Input ki = make_input(k, layouts[step % 3]), vi = make_input(v, layouts[(step + 1) % 3]);
    ++step;
    cache.append(ki.view, vi.view);
    expect_contents(cache, keys, values);
  }
  EXPECT_EQ(cache.length(), capacity);

  cache.clear();
  EXPECT_EQ(cache.length(), 0);
  EXPECT_EQ(cache.keys().tokens(), 0);
  std::vector<Rows> k, v;
  for (std::int64_t b = 0; b < batch; ++b) {
    k.push_back(random_rows(2, groups, head_dim, rng));
    v.push_back(random_rows(2, groups, value_dim, rng));
  }
  cache.append(make_input(k, Layout::dense).view, make_input(v, Layout::dense).view);
  expect_contents(cache, k, v);
}

TYPED_TEST(KvCacheTest, AppendPastCapacityThrowsAndChangesNothing) {
  using S = TypeParam;
  std::mt19937 rng(11);
  const std::int64_t batch = 2, groups = 3, head_dim = 8, value_dim = 5;
  KvCache<S> cache(batch, 12, groups, head_dim, value_dim);
  std::vector<Rows> k, v;
  for (std::int64_t b = 0; b < batch; ++b) {
    k.push_back(random_rows(10, groups, head_dim, rng));
    v.push_back(random_rows(10, groups, value_dim, rng));
  }
  cache.append(make_input(k, Layout::dense).view, make_input(v, Layout::dense).view);

  // The whole buffer, filled or not, byte for byte.
  const auto k_bytes = cache.keys().size() * static_cast<std::int64_t>(sizeof(S));
  const auto v_bytes = cache.values().size() * static_cast<std::int64_t>(sizeof(S));
  const std::vector<unsigned char> k_before = bytes_of(cache.keys().data(), k_bytes);
  const std::vector<unsigned char> v_before = bytes_of(cache.values().data(), v_bytes);

  std::vector<Rows> k5, v5;
  for (std::int64_t b = 0; b < batch; ++b) {
    k5.push_back(random_rows(5, groups, head_dim, rng));
    v5.push_back(random_rows(5, groups, value_dim, rng));
  }
  const Input ki = make_input(k5, Layout::dense), vi = make_input(v5, Layout::dense);
  EXPECT_NE(error_of([&] {
              cache.append(ki.view, vi.view);
            }).find("append of 5 tokens to a cache holding 10 of capacity 12"),
            std::string::npos)
      << error_of([&] { cache.append(ki.view, vi.view); });
  EXPECT_EQ(cache.length(), 10);
  EXPECT_EQ(bytes_of(cache.keys().data(), k_bytes), k_before);
  EXPECT_EQ(bytes_of(cache.values().data(), v_bytes), v_before);
  expect_contents(cache, k, v);

  // Exactly full still fits; one more does not.
  std::vector<Rows> k2, v2;
  for (std::int64_t b = 0; b < batch; ++b) {
    k2.push_back(random_rows(2, groups, head_dim, rng));
    v2.push_back(random_rows(2, groups, value_dim, rng));
    k[b].data.insert(k[b].data.end(), k2[b].data.begin(), k2[b].data.end());
    v[b].data.insert(v[b].data.end(), v2[b].data.begin(), v2[b].data.end());
  }
  cache.append(make_input(k2, Layout::dense).view, make_input(v2, Layout::dense).view);
  expect_contents(cache, k, v);
  std::vector<Rows> k1 = {random_rows(1, groups, head_dim, rng),
                          random_rows(1, groups, head_dim, rng)};
  std::vector<Rows> v1 = {random_rows(1, groups, value_dim, rng),
                          random_rows(1, groups, value_dim, rng)};
  const Input k1i = make_input(k1, Layout::dense), v1i = make_input(v1, Layout::dense);
  EXPECT_NE(error_of([&] {
              cache.append(k1i.view, v1i.view);
            }).find("append of 1 tokens to a cache holding 12 of capacity 12"),
            std::string::npos);
  expect_contents(cache, k, v);
}

TYPED_TEST(KvCacheTest, RejectsShapesThatDifferFromTheCache) {
  using S = TypeParam;
  KvCache<S> cache(2, 8, 2, 4, 3);
  std::vector<float> buffer(256, 1.0f);
  const auto view = [&](std::int64_t batch, std::int64_t tokens, std::int64_t heads,
                        std::int64_t dim) {
    return TensorView<const float>(buffer.data(), batch * tokens * heads * dim, batch, tokens,
                                   heads, dim);
  };
  const auto message = [&](TensorView<const float> k, TensorView<const float> v) {
    return error_of([&] { cache.append(k, v); });
  };
  EXPECT_NE(message(view(1, 1, 2, 4), view(2, 1, 2, 3))
                .find("k.batch (1) must equal the cache's batch (2)"),
            std::string::npos);
  EXPECT_NE(message(view(2, 1, 3, 4), view(2, 1, 2, 3))
                .find("k.heads (3) must equal the cache's kv_groups (2)"),
            std::string::npos);
  EXPECT_NE(message(view(2, 1, 2, 5), view(2, 1, 2, 3))
                .find("k.dim (5) must equal the cache's head_dim (4)"),
            std::string::npos);
  EXPECT_NE(message(view(2, 1, 2, 4), view(2, 1, 2, 4))
                .find("v.dim (4) must equal the cache's value_dim (3)"),
            std::string::npos);
  EXPECT_NE(
      message(view(2, 2, 2, 4), view(2, 1, 2, 3)).find("k.tokens (2) and v.tokens (1) differ"),
      std::string::npos);
  const TensorView<const float> short_buffer(buffer.data(), 10, 2, 1, 2, 4);
  EXPECT_NE(message(short_buffer, view(2, 1, 2, 3)).find("append: k: buffer size (10)"),
            std::string::npos);
  EXPECT_EQ(cache.length(), 0);
}

TYPED_TEST(KvCacheTest, RejectsBadSizes) {
  using S = TypeParam;
  EXPECT_NE(error_of([] { KvCache<S>(0, 8, 2, 4, 4); }).find("batch (0) must be positive"),
            std::string::npos);
  EXPECT_NE(error_of([] { KvCache<S>(1, -3, 2, 4, 4); }).find("capacity (-3) must be positive"),
            std::string::npos);
  EXPECT_NE(error_of([] { KvCache<S>(1, 8, 0, 4, 4); }).find("kv_groups (0) must be positive"),
            std::string::npos);
  EXPECT_NE(error_of([] { KvCache<S>(1, 8, 2, 0, 4); }).find("head_dim (0) must be positive"),
            std::string::npos);
  EXPECT_NE(error_of([] { KvCache<S>(1, 8, 2, 4, 0); }).find("value_dim (0) must be positive"),
            std::string::npos);
  const std::int64_t huge = std::int64_t{1} << 40;
  EXPECT_NE(error_of([&] { KvCache<S>(huge, huge, 2, 4, 4); }).find("overflows"),
            std::string::npos);
  const KvCache<S> same_dims(1, 4, 2, 6);  // value_dim defaults to head_dim
  EXPECT_EQ(same_dims.value_dim(), 6);
}

// ---- the paged cache ----------------------------------------------------------------------------

// The expected state of one sequence: its rows, in the order appended.
struct Model {
  std::int64_t id = 0;
  Rows keys, values;
};

// Checks every live sequence against the model through both ways a kernel may read it: the raw
// block pointers with the documented row layout, and the per-block views. Also checks that the
// block tables are disjoint, sized to the lengths, and account for every block with the free list.
template <class Storage>
void expect_paged_contents(const PagedKvCache<Storage>& cache, const std::vector<Model>& models) {
  const std::int64_t bs = cache.block_size(), groups = cache.kv_groups();
  const std::int64_t hd = cache.head_dim(), vd = cache.value_dim();
  std::set<std::int64_t> used;
  std::int64_t held = 0, wrong = 0;
  ASSERT_EQ(cache.sequences(), static_cast<std::int64_t>(models.size()));
  for (const Model& m : models) {
    const std::int64_t length = m.keys.tokens();
    ASSERT_EQ(cache.length(m.id), length) << "sequence " << m.id;
    const std::vector<std::int64_t>& table = cache.block_table(m.id);
    ASSERT_EQ(static_cast<std::int64_t>(table.size()), (length + bs - 1) / bs)
        << "sequence " << m.id;
    for (std::int64_t block : table) {
      ASSERT_TRUE(block >= 0 && block < cache.num_blocks()) << block;
      EXPECT_TRUE(used.insert(block).second) << "block " << block << " is used twice";
    }
    held += static_cast<std::int64_t>(table.size());
    for (std::int64_t t = 0; t < length; ++t) {
      const std::int64_t block = table[static_cast<std::size_t>(t / bs)], r = t % bs;
      const Storage* k = cache.key_block(block);
      const Storage* v = cache.value_block(block);
      for (std::int64_t g = 0; g < groups; ++g) {
        for (std::int64_t c = 0; c < hd; ++c)
          wrong +=
              !same_bits(read(k[(r * groups + g) * hd + c]), stored<Storage>(m.keys.at(t, g, c)));
        for (std::int64_t c = 0; c < vd; ++c)
          wrong +=
              !same_bits(read(v[(r * groups + g) * vd + c]), stored<Storage>(m.values.at(t, g, c)));
      }
    }
    for (std::int64_t i = 0; i < static_cast<std::int64_t>(table.size()); ++i) {
      const TensorView<const Storage> kb = cache.block_keys(m.id, i),
                                      vb = cache.block_values(m.id, i);
      kb.validate("block_keys");
      vb.validate("block_values");
      EXPECT_EQ(kb.tokens(), std::min(bs, length - i * bs));
      EXPECT_EQ(kb.data(), cache.key_block(table[static_cast<std::size_t>(i)]));
      for (std::int64_t r = 0; r < kb.tokens(); ++r)
        for (std::int64_t g = 0; g < groups; ++g) {
          wrong += !same_bits(read(kb.row(0, r, g)[hd - 1]),
                              stored<Storage>(m.keys.at(i * bs + r, g, hd - 1)));
          wrong +=
              !same_bits(read(vb.row(0, r, g)[0]), stored<Storage>(m.values.at(i * bs + r, g, 0)));
        }
    }
  }
  EXPECT_EQ(wrong, 0) << "elements that differ from what was appended";
  EXPECT_EQ(cache.free_blocks(), cache.num_blocks() - held);
}

// Appends n random tokens to a sequence of the cache and of the model.
template <class Storage>
void append_random(PagedKvCache<Storage>& cache, Model& m, std::int64_t n, std::mt19937& rng,
                   Layout layout = Layout::dense) {
  const Rows k = random_rows(n, cache.kv_groups(), cache.head_dim(), rng);
  const Rows v = random_rows(n, cache.kv_groups(), cache.value_dim(), rng);
  const Input ki = make_input({k}, layout);
  const Input vi = make_input({v}, layout == Layout::dense ? Layout::padded : Layout::dense);
  cache.append(m.id, ki.view, vi.view);
  m.keys.data.insert(m.keys.data.end(), k.data.begin(), k.data.end());
  m.values.data.insert(m.values.data.end(), v.data.begin(), v.data.end());
}

template <class Storage>
Model add(PagedKvCache<Storage>& cache) {
  return Model{cache.add_sequence(), Rows{cache.kv_groups(), cache.head_dim(), {}},
               Rows{cache.kv_groups(), cache.value_dim(), {}}};
}

TYPED_TEST(KvCacheTest, PagedInterleavedSequencesAcrossBlockBoundaries) {
  using S = TypeParam;
  for (std::int64_t bs : {1, 3, 16}) {
    SCOPED_TRACE("block_size " + std::to_string(bs));
    std::mt19937 rng(static_cast<unsigned>(100 + bs));
    const std::int64_t groups = 2, head_dim = 12, value_dim = 7;
    PagedKvCache<S> cache(400 / bs + 20, bs, groups, head_dim, value_dim);
    EXPECT_EQ(cache.block_size(), bs);
    EXPECT_EQ(cache.free_blocks(), cache.num_blocks());
    EXPECT_EQ(cache.bytes_per_token(),
              groups * (head_dim + value_dim) * static_cast<std::int64_t>(sizeof(S)));
    std::vector<Model> models;
    for (int i = 0; i < 5; ++i) models.push_back(add(cache));
    // Token counts that cross several blocks in one append, single tokens, and exact fills.
    const std::int64_t counts[] = {1, 2 * bs + 1, bs, 1, 3 * bs - 1, 7, 1, bs + 2};
    int round = 0;
    for (std::int64_t n : counts)
      for (Model& m : models) {
        const Layout layouts[] = {Layout::dense, Layout::head_major, Layout::padded};
        append_random(cache, m, n + (m.id % 3), rng, layouts[round++ % 3]);
        if (round % 4 == 0) expect_paged_contents(cache, models);
      }
    expect_paged_contents(cache, models);
    for (const Model& m : models)
      for (std::int64_t block : cache.block_table(m.id)) {
        EXPECT_TRUE(aligned64(cache.key_block(block)));
        EXPECT_TRUE(aligned64(cache.value_block(block)));
      }
  }
}

// Which blocks are reused, and the errors for released ids, are the block tables' own
// (test_block_tables.cpp); here: a reused block holds its new sequence's rows, not the old ones,
// and the other sequences are untouched.
TYPED_TEST(KvCacheTest, PagedReleasedBlocksHoldTheirNewRows) {
  using S = TypeParam;
  std::mt19937 rng(5);
  PagedKvCache<S> cache(10, 4, 1, 8, 8);
  std::vector<Model> models = {add(cache), add(cache), add(cache)};
  append_random(cache, models[0], 9, rng);   // 3 blocks
  append_random(cache, models[1], 4, rng);   // 1 block
  append_random(cache, models[2], 13, rng);  // 4 blocks
  expect_paged_contents(cache, models);
  const std::int64_t released = models[0].id;
  cache.release(released);
  models.erase(models.begin());
  EXPECT_EQ(cache.free_blocks(), 5);
  expect_paged_contents(cache, models);
  EXPECT_NE(error_of([&] { cache.length(released); }).find("sequence 0 was released"),
            std::string::npos);

  models.push_back(add(cache));
  append_random(cache, models.back(), 18, rng);  // the 3 freed blocks and 2 fresh ones
  EXPECT_EQ(cache.free_blocks(), 0);
  expect_paged_contents(cache, models);
  for (Model& m : models) cache.release(m.id);
  EXPECT_EQ(cache.free_blocks(), 10);
  EXPECT_EQ(cache.sequences(), 0);
}

TYPED_TEST(KvCacheTest, PagedExhaustionThrowsAndChangesNothing) {
  using S = TypeParam;
  std::mt19937 rng(3);
  const std::int64_t num_blocks = 6, bs = 3, groups = 2, head_dim = 5, value_dim = 4;
  PagedKvCache<S> cache(num_blocks, bs, groups, head_dim, value_dim);
  std::vector<Model> models = {add(cache), add(cache)};
  append_random(cache, models[0], 7, rng);  // 3 blocks, the last holding 1 token
  append_random(cache, models[1], 4, rng);  // 2 blocks
  EXPECT_EQ(cache.free_blocks(), 1);

  // Every block of the pool, byte for byte, filled or not.
  const auto snapshot = [&] {
    std::vector<unsigned char> all;
    for (std::int64_t b = 0; b < num_blocks; ++b) {
      const auto k = bytes_of(cache.key_block(b),
                              bs * groups * head_dim * static_cast<std::int64_t>(sizeof(S)));
      const auto v = bytes_of(cache.value_block(b),
                              bs * groups * value_dim * static_cast<std::int64_t>(sizeof(S)));
      all.insert(all.end(), k.begin(), k.end());
      all.insert(all.end(), v.begin(), v.end());
    }
    return all;
  };
  const std::vector<unsigned char> before = snapshot();
  const std::vector<std::int64_t> table0 = cache.block_table(models[0].id);

  // Sequence 0 has room for 2 more tokens in its last block and 3 in the free block: 6 need 2
  // blocks.
  Model attempt = models[0];
  const std::string message = error_of([&] { append_random(cache, attempt, 6, rng); });
  EXPECT_NE(message.find("append of 6 tokens to sequence 0 (holding 7 tokens in 3 blocks of 3) "
                         "needs 2 more blocks but only 1 of 6 are free"),
            std::string::npos)
      << message;
  EXPECT_EQ(cache.free_blocks(), 1);
  EXPECT_EQ(cache.block_table(models[0].id), table0);
  EXPECT_EQ(snapshot(), before);
  expect_paged_contents(cache, models);

  // A new sequence cannot take more than what is free either, and stays empty.
  models.push_back(add(cache));
  Model empty = models.back();
  EXPECT_NE(
      error_of([&] { append_random(cache, empty, 4, rng); }).find("needs 2 more blocks but only 1"),
      std::string::npos);
  EXPECT_EQ(snapshot(), before);
  expect_paged_contents(cache, models);

  // What fits exactly still goes in: 5 tokens fill sequence 0's last block and the free one.
  append_random(cache, models[0], 5, rng);
  EXPECT_EQ(cache.free_blocks(), 0);
  expect_paged_contents(cache, models);
}

TYPED_TEST(KvCacheTest, PagedRejectsBadInput) {
  using S = TypeParam;
  EXPECT_NE(
      error_of([] { PagedKvCache<S>(0, 16, 2, 4, 4); }).find("num_blocks (0) must be positive"),
      std::string::npos);
  EXPECT_NE(
      error_of([] { PagedKvCache<S>(4, 0, 2, 4, 4); }).find("block_size (0) must be positive"),
      std::string::npos);
  EXPECT_NE(
      error_of([] { PagedKvCache<S>(4, 16, -1, 4, 4); }).find("kv_groups (-1) must be positive"),
      std::string::npos);
  const std::int64_t huge = std::int64_t{1} << 40;
  EXPECT_NE(error_of([&] { PagedKvCache<S>(huge, huge, 2, 4, 4); }).find("overflows"),
            std::string::npos);

  PagedKvCache<S> cache(4, 2, 2, 4);  // value_dim defaults to head_dim
  EXPECT_EQ(cache.value_dim(), 4);
  const auto id = cache.add_sequence();
  std::vector<float> buffer(64, 0.5f);
  const TensorView<const float> two_sequences(buffer.data(), 16, 2, 1, 2, 4);
  const TensorView<const float> one(buffer.data(), 8, 1, 1, 2, 4);
  const TensorView<const float> wrong_groups(buffer.data(), 4, 1, 1, 1, 4);
  EXPECT_NE(error_of([&] {
              cache.append(id, two_sequences, one);
            }).find("k.batch (2) must equal the cache's batch (1)"),
            std::string::npos);
  EXPECT_NE(error_of([&] {
              cache.append(id, one, wrong_groups);
            }).find("v.heads (1) must equal the cache's kv_groups (2)"),
            std::string::npos);
  EXPECT_NE(error_of([&] { cache.key_block(4); }).find("block id (4) must be in [0, 4)"),
            std::string::npos);
  EXPECT_NE(error_of([&] { cache.value_block(-1); }).find("block id (-1)"), std::string::npos);
  EXPECT_NE(error_of([&] { cache.block_keys(id, 0); }).find("block index (0) must be in [0, 0)"),
            std::string::npos);
  EXPECT_EQ(cache.length(id), 0);
  EXPECT_EQ(cache.free_blocks(), 4);
}

// ---- the caches' memory (aligned_buffer.hpp) ----------------------------------------------------

// The flags of the mapping that holds p, from /proc/self/smaps ("" if not found).
std::string mapping_flags(const void* p) {
  std::ifstream smaps("/proc/self/smaps");
  const auto address = reinterpret_cast<std::uintptr_t>(p);
  std::string line;
  bool inside = false;
  while (std::getline(smaps, line)) {
    std::uintptr_t first = 0, last = 0;
    char dash = 0;
    std::istringstream range(line);
    if (range >> std::hex >> first >> dash >> last && dash == '-' &&
        line.find(':') > line.find(' ')) {  // a mapping's header, "first-last perms ..."
      inside = first <= address && address < last;
    } else if (inside && line.rfind("VmFlags:", 0) == 0) {
      return line;
    }
  }
  return "";
}

// Small buffers are 64-byte aligned; from one huge page (2 MiB) up, buffers are aligned to it
// and, on Linux, advised as transparent huge pages ("hg" in the mapping's flags), so that a
// cache read in full per decode step costs few TLB misses.
TEST(AlignedBufferTest, LargeBuffersAreHugePageAlignedAndAdvised) {
  using multihead::detail::AlignedBuffer;
  const AlignedBuffer<float> small(1000);
  EXPECT_EQ(small.size(), 1000);
  EXPECT_TRUE(aligned64(small.data()));
  const std::int64_t huge_page = std::int64_t{2} << 20;
  const AlignedBuffer<bf16> large(3 * huge_page / 2);  // 3 MiB of bf16
  EXPECT_EQ(large.size(), 3 * huge_page / 2);
  EXPECT_EQ(reinterpret_cast<std::uintptr_t>(large.data()) % huge_page, 0u);
  large.data()[large.size() - 1] = bf16{};  // the whole buffer is usable
  // A cache of 4 MiB (K 2 MiB, V 2 MiB) gets such a buffer.
  KvCache<float> cache(1, 4096, 1, 128);
  EXPECT_EQ(reinterpret_cast<std::uintptr_t>(cache.keys().data()) % huge_page, 0u);
#ifdef __linux__
  const std::string flags = mapping_flags(large.data());
  ASSERT_FALSE(flags.empty()) << "no mapping in /proc/self/smaps holds the buffer";
  EXPECT_NE((flags + " ").find(" hg "), std::string::npos) << flags;
  EXPECT_EQ((mapping_flags(small.data()) + " ").find(" hg "), std::string::npos);
#endif
}

}  // namespace
