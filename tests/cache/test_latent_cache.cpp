// The latent caches of MLA (latent_cache.hpp, paged_latent_cache.hpp) for float, bf16 and fp16
// storage, and decode_attention over them (decode.hpp).
//
// The caches: what is appended (a latent and a RoPE key per token) is what is read back, after
// one rounding to the storage type, through the key view (whole rows) and the value view (the
// same rows' first latent_dim elements, at the same addresses), through the block tables too;
// errors name the values and leave every byte of the cache as it was. The expected contents are
// kept in plain per-sequence vectors, a model that shares nothing with the caches' layout. The
// bookkeeping of the paged cache's blocks is the block tables' (test_block_tables.cpp).
//
// Decoding: MLA's absorbed attention is MQA with keys [c_KV; k_R] and values c_KV, so the
// naive double-precision oracle (naive_reference.hpp) runs on K = the stored rows and V = their
// stored first latent_dim elements, as two separate arrays, under the accuracy standard of
// kernel_testing.hpp. Shapes: DeepSeek's 512 + 64 with 16 heads, 256 + 32, 64 without RoPE;
// lengths inside one tile, across tiles and (with two threads) across split points.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "support/kernel_testing.hpp"
#include "support/testing.hpp"

namespace {

using namespace test_support;

using namespace kernel_testing;
using multihead::bf16;
using multihead::fp16;
using multihead::LatentCache;
using multihead::PagedLatentCache;
using multihead::Span;











// The latent rows of one sequence: per token latent_dim values of c_KV, then rope_dim of k_R.
struct Rows {
  std::int64_t latent_dim = 0, rope_dim = 0;
  std::vector<float> data;  // [tokens, latent_dim + rope_dim]

  std::int64_t width() const { return latent_dim + rope_dim; }
  std::int64_t tokens() const { return static_cast<std::int64_t>(data.size()) / width(); }
  float at(std::int64_t t, std::int64_t c) const {
    return data[static_cast<std::size_t>(t * width() + c)];
  }
  void add(const Rows& more) { data.insert(data.end(), more.data.begin(), more.data.end()); }
  Rows slice(std::int64_t t0, std::int64_t n) const {
    return {latent_dim, rope_dim,
            std::vector<float>(data.begin() + t0 * width(), data.begin() + (t0 + n) * width())};
  }
};

Rows random_rows(std::int64_t tokens, std::int64_t latent_dim, std::int64_t rope_dim,
                 std::mt19937& rng) {
  return {latent_dim, rope_dim, random_cache_values(tokens * (latent_dim + rope_dim), rng)};
}

// The c_kv and k_rope arguments of an append, from rows of every batch entry (equal token
// counts), in one of two layouts: column ranges of one [batch, n, latent_dim + rope_dim] buffer,
// as a projection writes them (strided views), or two dense buffers. With rope_dim 0, k_rope is
// the empty view.
enum class Layout { projection, separate };

struct AppendInput {
  std::vector<float> first, second;
  TensorView<const float> c_kv, k_rope;
};

AppendInput make_input(const std::vector<Rows>& sequences, Layout layout) {
  const auto batch = static_cast<std::int64_t>(sequences.size());
  const std::int64_t n = sequences[0].tokens(), dc = sequences[0].latent_dim,
                     dr = sequences[0].rope_dim, width = dc + dr;
  AppendInput in;
  if (layout == Layout::projection) {
    for (const Rows& r : sequences) in.first.insert(in.first.end(), r.data.begin(), r.data.end());
    const auto size = static_cast<std::int64_t>(in.first.size());
    in.c_kv = TensorView<const float>::strided(in.first.data(), size, batch, n, 1, dc, n * width,
                                               width, dc);
    if (dr > 0)
      in.k_rope = TensorView<const float>::strided(in.first.data() + dc, size - dc, batch, n, 1,
                                                   dr, n * width, width, dr);
    return in;
  }
  for (const Rows& r : sequences)
    for (std::int64_t t = 0; t < n; ++t) {
      in.first.insert(in.first.end(), r.data.begin() + t * width, r.data.begin() + t * width + dc);
      in.second.insert(in.second.end(), r.data.begin() + t * width + dc,
                       r.data.begin() + (t + 1) * width);
    }
  in.c_kv = TensorView<const float>(in.first.data(), batch * n * dc, batch, n, 1, dc);
  if (dr > 0)
    in.k_rope = TensorView<const float>(in.second.data(), batch * n * dr, batch, n, 1, dr);
  return in;
}

template <class Storage>
class LatentCacheTest : public ::testing::Test {};
TYPED_TEST_SUITE(LatentCacheTest, StorageTypes);

// ---- the contiguous cache -----------------------------------------------------------------------

// Every filled element equals the model's value after one rounding, bit for bit, through both
// views; each value row is the key row's address.
template <class Storage>
void expect_contents(const LatentCache<Storage>& cache, const std::vector<Rows>& model) {
  const std::int64_t dc = cache.latent_dim(), width = dc + cache.rope_dim();
  ASSERT_EQ(cache.length(), model[0].tokens());
  const TensorView<const Storage> k = cache.keys(), v = cache.values();
  ASSERT_EQ(k.batch(), cache.batch());
  ASSERT_EQ(v.batch(), cache.batch());
  ASSERT_EQ(k.tokens(), cache.length());
  ASSERT_EQ(v.tokens(), cache.length());
  ASSERT_EQ(k.heads(), 1);
  ASSERT_EQ(v.heads(), 1);
  ASSERT_EQ(k.dim(), width);
  ASSERT_EQ(v.dim(), dc);
  if (cache.length() > 0) {
    k.validate("keys");
    v.validate("values");
  }
  std::int64_t wrong = 0, elsewhere = 0;
  for (std::int64_t b = 0; b < cache.batch(); ++b)
    for (std::int64_t t = 0; t < cache.length(); ++t) {
      elsewhere += v.row(b, t, 0) != k.row(b, t, 0);
      for (std::int64_t c = 0; c < width; ++c)
        wrong += !same_bits(read(k.row(b, t, 0)[c]), stored<Storage>(model[b].at(t, c)));
      for (std::int64_t c = 0; c < dc; ++c)
        wrong += !same_bits(read(v.row(b, t, 0)[c]), stored<Storage>(model[b].at(t, c)));
    }
  EXPECT_EQ(wrong, 0) << "elements that differ from what was appended";
  EXPECT_EQ(elsewhere, 0) << "value rows that are not the key rows' first elements";
}

// Appends n random tokens to every sequence of the cache and of the model.
template <class Storage>
void append_random(LatentCache<Storage>& cache, std::vector<Rows>& model, std::int64_t n,
                   Layout layout, std::mt19937& rng) {
  std::vector<Rows> more;
  for (std::int64_t b = 0; b < cache.batch(); ++b)
    more.push_back(random_rows(n, cache.latent_dim(), cache.rope_dim(), rng));
  const AppendInput in = make_input(more, layout);
  if (cache.rope_dim() == 0)
    cache.append(in.c_kv);
  else
    cache.append(in.c_kv, in.k_rope);
  for (std::size_t b = 0; b < more.size(); ++b) model[b].add(more[b]);
}

TYPED_TEST(LatentCacheTest, AppendsOneAndManyTokensAndReadsThemBackThroughBothViews) {
  using S = TypeParam;
  std::mt19937 rng(17);
  const std::int64_t batch = 3, capacity = 40, dc = 24, dr = 8;
  LatentCache<S> cache(batch, capacity, dc, dr);
  EXPECT_EQ(cache.batch(), batch);
  EXPECT_EQ(cache.capacity(), capacity);
  EXPECT_EQ(cache.length(), 0);
  EXPECT_EQ(cache.latent_dim(), dc);
  EXPECT_EQ(cache.rope_dim(), dr);
  EXPECT_EQ(cache.bytes_per_token(), (dc + dr) * static_cast<std::int64_t>(sizeof(S)));
  EXPECT_TRUE(aligned64(cache.keys().data()));
  // Both views span the one buffer with its strides, whatever the length.
  EXPECT_EQ(cache.values().data(), cache.keys().data());
  EXPECT_EQ(cache.keys().batch_stride(), capacity * (dc + dr));
  EXPECT_EQ(cache.keys().token_stride(), dc + dr);
  EXPECT_EQ(cache.values().batch_stride(), capacity * (dc + dr));
  EXPECT_EQ(cache.values().token_stride(), dc + dr);
  EXPECT_EQ(cache.keys().size(), batch * capacity * (dc + dr));

  std::vector<Rows> model(batch, Rows{dc, dr, {}});
  int step = 0;
  for (std::int64_t n : {1, 5, 1, 16, 3, 14}) {  // 40 in all: ends exactly full
    append_random(cache, model, n, step++ % 2 ? Layout::separate : Layout::projection, rng);
    expect_contents(cache, model);
  }
  EXPECT_EQ(cache.length(), capacity);

  cache.clear();
  EXPECT_EQ(cache.length(), 0);
  EXPECT_EQ(cache.keys().tokens(), 0);
  EXPECT_EQ(cache.values().tokens(), 0);
  model.assign(batch, Rows{dc, dr, {}});
  append_random(cache, model, 2, Layout::projection, rng);
  expect_contents(cache, model);
}

TYPED_TEST(LatentCacheTest, WithoutRopeKeyRowsAreTheLatentsAlone) {
  using S = TypeParam;
  std::mt19937 rng(23);
  LatentCache<S> cache(2, 10, 16, 0);
  EXPECT_EQ(cache.bytes_per_token(), 16 * static_cast<std::int64_t>(sizeof(S)));
  std::vector<Rows> model(2, Rows{16, 0, {}});
  append_random(cache, model, 3, Layout::separate, rng);    // append(c_kv)
  append_random(cache, model, 4, Layout::projection, rng);  // append(c_kv)
  // append(c_kv, k_rope) with the empty view is the same call.
  std::vector<Rows> more = {random_rows(2, 16, 0, rng), random_rows(2, 16, 0, rng)};
  const AppendInput in = make_input(more, Layout::separate);
  cache.append(in.c_kv, TensorView<const float>{});
  model[0].add(more[0]);
  model[1].add(more[1]);
  expect_contents(cache, model);
  EXPECT_EQ(cache.keys().dim(), 16);
  EXPECT_EQ(cache.values().dim(), 16);

  // A RoPE key where there is none is an error, and so is a missing one.
  std::vector<float> rope(2 * 1 * 4, 1.0f);
  const TensorView<const float> some_rope(rope.data(), 8, 2, 1, 1, 4);
  const AppendInput one = make_input({random_rows(1, 16, 0, rng), random_rows(1, 16, 0, rng)},
                                     Layout::separate);
  EXPECT_INVALID("append: k_rope must be empty (the cache's rope_dim is 0) but has size 8",
                 cache.append(one.c_kv, some_rope));
  expect_contents(cache, model);

  LatentCache<S> with_rope(2, 10, 16, 4);
  EXPECT_INVALID("append: k_rope is missing: the cache's rope_dim is 4",
                 with_rope.append(one.c_kv));
  EXPECT_EQ(with_rope.length(), 0);
}

TYPED_TEST(LatentCacheTest, AppendPastCapacityThrowsAndChangesNothing) {
  using S = TypeParam;
  std::mt19937 rng(29);
  const std::int64_t batch = 2, dc = 12, dr = 6;
  LatentCache<S> cache(batch, 12, dc, dr);
  std::vector<Rows> model(batch, Rows{dc, dr, {}});
  append_random(cache, model, 10, Layout::projection, rng);

  // The whole buffer, filled or not, byte for byte.
  const std::int64_t bytes = cache.keys().size() * static_cast<std::int64_t>(sizeof(S));
  const std::vector<unsigned char> before = bytes_of(cache.keys().data(), bytes);
  const AppendInput five = make_input(
      {random_rows(5, dc, dr, rng), random_rows(5, dc, dr, rng)}, Layout::projection);
  EXPECT_INVALID("append of 5 tokens to a cache holding 10 of capacity 12",
                 cache.append(five.c_kv, five.k_rope));
  EXPECT_EQ(cache.length(), 10);
  EXPECT_EQ(bytes_of(cache.keys().data(), bytes), before);
  expect_contents(cache, model);

  // Exactly full still fits; one more does not.
  append_random(cache, model, 2, Layout::separate, rng);
  expect_contents(cache, model);
  const AppendInput one = make_input({random_rows(1, dc, dr, rng), random_rows(1, dc, dr, rng)},
                                     Layout::separate);
  const std::vector<unsigned char> full = bytes_of(cache.keys().data(), bytes);
  EXPECT_INVALID("append of 1 tokens to a cache holding 12 of capacity 12",
                 cache.append(one.c_kv, one.k_rope));
  EXPECT_EQ(bytes_of(cache.keys().data(), bytes), full);
  expect_contents(cache, model);
}

TYPED_TEST(LatentCacheTest, RejectsShapesThatDifferFromTheCacheAndChangesNothing) {
  using S = TypeParam;
  std::mt19937 rng(31);
  LatentCache<S> cache(2, 8, 4, 2);
  std::vector<Rows> model(2, Rows{4, 2, {}});
  append_random(cache, model, 3, Layout::projection, rng);
  const std::int64_t bytes = cache.keys().size() * static_cast<std::int64_t>(sizeof(S));
  const std::vector<unsigned char> before = bytes_of(cache.keys().data(), bytes);

  std::vector<float> buffer(256, 1.0f);
  const auto view = [&](std::int64_t batch, std::int64_t tokens, std::int64_t heads,
                        std::int64_t dim) {
    return TensorView<const float>(buffer.data(), batch * tokens * heads * dim, batch, tokens,
                                   heads, dim);
  };
  const auto message = [&](TensorView<const float> c_kv, TensorView<const float> k_rope) {
    return error_of([&] { cache.append(c_kv, k_rope); });
  };
  const std::pair<std::string, std::string> cases[] = {
      {message(view(1, 1, 1, 4), view(2, 1, 1, 2)),
       "append: c_kv.batch (1) must equal the cache's batch (2)"},
      {message(view(2, 1, 2, 4), view(2, 1, 1, 2)),
       "append: c_kv.heads (2) must equal the cache's kv_groups (1)"},
      {message(view(2, 1, 1, 6), view(2, 1, 1, 2)),
       "append: c_kv.dim (6) must equal the cache's latent_dim (4)"},
      {message(view(2, 1, 1, 4), view(2, 1, 1, 4)),
       "append: k_rope.dim (4) must equal the cache's rope_dim (2)"},
      {message(view(2, 1, 1, 4), view(2, 1, 3, 2)),
       "append: k_rope.heads (3) must equal the cache's kv_groups (1)"},
      {message(view(2, 2, 1, 4), view(2, 1, 1, 2)),
       "append: c_kv.tokens (2) and k_rope.tokens (1) differ"},
      {message(TensorView<const float>(buffer.data(), 5, 2, 1, 1, 4), view(2, 1, 1, 2)),
       "append: c_kv: buffer size (5)"},
      {message(view(2, 1, 1, 4), TensorView<const float>{}),
       "append: k_rope is missing: the cache's rope_dim is 2"},
  };
  for (const auto& [got, expected] : cases) EXPECT_NE(got.find(expected), std::string::npos) << got;
  EXPECT_EQ(cache.length(), 3);
  EXPECT_EQ(bytes_of(cache.keys().data(), bytes), before);
  expect_contents(cache, model);
}

TYPED_TEST(LatentCacheTest, RejectsBadSizes) {
  using S = TypeParam;
  EXPECT_INVALID("batch (0) must be positive", (LatentCache<S>(0, 8, 4, 2)));
  EXPECT_INVALID("capacity (-3) must be positive", (LatentCache<S>(1, -3, 4, 2)));
  EXPECT_INVALID("latent_dim (0) must be positive", (LatentCache<S>(1, 8, 0, 2)));
  EXPECT_INVALID("rope_dim (-1) must not be negative", (LatentCache<S>(1, 8, 4, -1)));
  const std::int64_t huge = std::int64_t{1} << 40;
  EXPECT_INVALID("overflows", (LatentCache<S>(huge, huge, 4, 2)));
}

// ---- the paged cache ----------------------------------------------------------------------------

struct Model {
  std::int64_t id = 0;
  Rows rows;
};

// Every live sequence against the model, through the raw blocks with the documented row layout
// and through the per-block views; the block tables disjoint, sized to the lengths, and with the
// free blocks accounting for the whole pool.
template <class Storage>
void expect_paged_contents(const PagedLatentCache<Storage>& cache,
                           const std::vector<Model>& models) {
  const std::int64_t bs = cache.block_size(), dc = cache.latent_dim();
  const std::int64_t width = dc + cache.rope_dim();
  ASSERT_EQ(cache.key_token_stride(), width);
  ASSERT_EQ(cache.value_token_stride(), width);
  ASSERT_EQ(cache.sequences(), static_cast<std::int64_t>(models.size()));
  std::set<std::int64_t> used;
  std::int64_t held = 0, wrong = 0;
  for (const Model& m : models) {
    const std::int64_t length = m.rows.tokens();
    ASSERT_EQ(cache.length(m.id), length) << "sequence " << m.id;
    const std::vector<std::int64_t>& table = cache.block_table(m.id);
    ASSERT_EQ(static_cast<std::int64_t>(table.size()), (length + bs - 1) / bs);
    for (std::int64_t block : table) {
      ASSERT_TRUE(block >= 0 && block < cache.num_blocks()) << block;
      EXPECT_TRUE(used.insert(block).second) << "block " << block << " is used twice";
      EXPECT_TRUE(aligned64(cache.key_block(block)));
      EXPECT_EQ(cache.value_block(block), cache.key_block(block));
    }
    held += static_cast<std::int64_t>(table.size());
    for (std::int64_t t = 0; t < length; ++t) {
      const Storage* row = cache.key_block(table[static_cast<std::size_t>(t / bs)]) +
                           (t % bs) * cache.key_token_stride();
      for (std::int64_t c = 0; c < width; ++c)
        wrong += !same_bits(read(row[c]), stored<Storage>(m.rows.at(t, c)));
    }
    for (std::int64_t i = 0; i < static_cast<std::int64_t>(table.size()); ++i) {
      const TensorView<const Storage> kb = cache.block_keys(m.id, i);
      const TensorView<const Storage> vb = cache.block_values(m.id, i);
      kb.validate("block_keys");
      vb.validate("block_values");
      EXPECT_EQ(kb.tokens(), std::min(bs, length - i * bs));
      EXPECT_EQ(vb.tokens(), kb.tokens());
      EXPECT_EQ(kb.dim(), width);
      EXPECT_EQ(vb.dim(), dc);
      EXPECT_EQ(kb.data(), cache.key_block(table[static_cast<std::size_t>(i)]));
      EXPECT_EQ(vb.data(), kb.data());
      for (std::int64_t r = 0; r < kb.tokens(); ++r) {
        wrong += !same_bits(read(kb.row(0, r, 0)[width - 1]),
                            stored<Storage>(m.rows.at(i * bs + r, width - 1)));
        wrong += !same_bits(read(vb.row(0, r, 0)[dc - 1]),
                            stored<Storage>(m.rows.at(i * bs + r, dc - 1)));
      }
    }
  }
  EXPECT_EQ(wrong, 0) << "elements that differ from what was appended";
  EXPECT_EQ(cache.free_blocks(), cache.num_blocks() - held);
}

template <class Storage>
Model add(PagedLatentCache<Storage>& cache) {
  return Model{cache.add_sequence(), Rows{cache.latent_dim(), cache.rope_dim(), {}}};
}

template <class Storage>
void append_rows(PagedLatentCache<Storage>& cache, Model& m, const Rows& rows, Layout layout) {
  const AppendInput in = make_input({rows}, layout);
  if (cache.rope_dim() == 0)
    cache.append(m.id, in.c_kv);
  else
    cache.append(m.id, in.c_kv, in.k_rope);
  m.rows.add(rows);
}

template <class Storage>
void append_random(PagedLatentCache<Storage>& cache, Model& m, std::int64_t n, std::mt19937& rng,
                   Layout layout = Layout::projection) {
  append_rows(cache, m, random_rows(n, cache.latent_dim(), cache.rope_dim(), rng), layout);
}

// Every block of the pool, byte for byte, filled or not.
template <class Storage>
std::vector<unsigned char> pool_bytes(const PagedLatentCache<Storage>& cache) {
  std::vector<unsigned char> all;
  const std::int64_t block_bytes = cache.block_size() * cache.key_token_stride() *
                                   static_cast<std::int64_t>(sizeof(Storage));
  for (std::int64_t b = 0; b < cache.num_blocks(); ++b) {
    const auto bytes = bytes_of(cache.key_block(b), block_bytes);
    all.insert(all.end(), bytes.begin(), bytes.end());
  }
  return all;
}

TYPED_TEST(LatentCacheTest, PagedInterleavedSequencesAcrossBlockBoundaries) {
  using S = TypeParam;
  for (std::int64_t dr : {6, 0})
    for (std::int64_t bs : {1, 3, 16}) {
      SCOPED_TRACE("block_size " + std::to_string(bs) + ", rope_dim " + std::to_string(dr));
      std::mt19937 rng(static_cast<unsigned>(200 + bs + dr));
      const std::int64_t dc = 10;
      PagedLatentCache<S> cache(400 / bs + 20, bs, dc, dr);
      EXPECT_EQ(cache.block_size(), bs);
      EXPECT_EQ(cache.latent_dim(), dc);
      EXPECT_EQ(cache.rope_dim(), dr);
      EXPECT_EQ(cache.free_blocks(), cache.num_blocks());
      EXPECT_EQ(cache.bytes_per_token(), (dc + dr) * static_cast<std::int64_t>(sizeof(S)));
      std::vector<Model> models;
      for (int i = 0; i < 4; ++i) models.push_back(add(cache));
      // Appends that cross several blocks, single tokens, and exact fills.
      const std::int64_t counts[] = {1, 2 * bs + 1, bs, 1, 3 * bs - 1, 7, bs + 2};
      int round = 0;
      for (std::int64_t n : counts)
        for (Model& m : models) {
          append_random(cache, m, n + m.id % 3, rng,
                        round++ % 2 ? Layout::separate : Layout::projection);
          if (round % 5 == 0) expect_paged_contents(cache, models);
        }
      expect_paged_contents(cache, models);
    }
}

// Which blocks are reused, and the errors for released ids, are the block tables' own
// (test_block_tables.cpp); here: a reused block holds its new sequence's rows, not the old ones,
// and the other sequences are untouched.
TYPED_TEST(LatentCacheTest, PagedReleasedBlocksHoldTheirNewRows) {
  using S = TypeParam;
  std::mt19937 rng(37);
  PagedLatentCache<S> cache(10, 4, 8, 4);
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
  EXPECT_INVALID("length: sequence 0 was released", cache.length(released));

  models.push_back(add(cache));
  append_random(cache, models.back(), 18, rng, Layout::separate);  // freed blocks, 2 fresh
  EXPECT_EQ(cache.free_blocks(), 0);
  expect_paged_contents(cache, models);
  for (Model& m : models) cache.release(m.id);
  EXPECT_EQ(cache.free_blocks(), 10);
  EXPECT_EQ(cache.sequences(), 0);
}

TYPED_TEST(LatentCacheTest, PagedExhaustionAndBadInputThrowAndChangeNothing) {
  using S = TypeParam;
  std::mt19937 rng(41);
  PagedLatentCache<S> cache(6, 3, 5, 3);
  std::vector<Model> models = {add(cache), add(cache)};
  append_random(cache, models[0], 7, rng);  // 3 blocks, the last holding 1 token
  append_random(cache, models[1], 4, rng);  // 2 blocks
  EXPECT_EQ(cache.free_blocks(), 1);
  const std::vector<unsigned char> before = pool_bytes(cache);
  const std::vector<std::int64_t> table0 = cache.block_table(models[0].id);

  // Sequence 0 has room for 2 more tokens in its last block and 3 in the free one.
  Model attempt = models[0];
  EXPECT_INVALID("append of 6 tokens to sequence 0 (holding 7 tokens in 3 blocks of 3) needs 2 "
               "more blocks but only 1 of 6 are free", append_random(cache, attempt, 6, rng));
  models.push_back(add(cache));
  Model empty = models.back();
  EXPECT_INVALID("needs 2 more blocks but only 1", append_random(cache, empty, 4, rng));
  // Wrong shapes, on a sequence with room to spare.
  std::vector<float> buffer(64, 0.5f);
  const TensorView<const float> c_kv(buffer.data(), 5, 1, 1, 1, 5),
      two(buffer.data(), 10, 2, 1, 1, 5), rope(buffer.data(), 3, 1, 1, 1, 3),
      rope2(buffer.data(), 6, 1, 2, 1, 3);
  EXPECT_INVALID("append: c_kv.batch (2) must equal the cache's batch (1)",
                 cache.append(models[0].id, two, rope));
  EXPECT_INVALID("append: c_kv.tokens (1) and k_rope.tokens (2) differ",
                 cache.append(models[0].id, c_kv, rope2));
  EXPECT_INVALID("k_rope is missing", cache.append(models[0].id, c_kv));
  EXPECT_INVALID("append: sequence 99 does not exist", cache.append(99, c_kv, rope));

  EXPECT_EQ(cache.free_blocks(), 1);
  EXPECT_EQ(cache.block_table(models[0].id), table0);
  EXPECT_EQ(pool_bytes(cache), before);
  expect_paged_contents(cache, models);

  // What fits exactly still goes in: 5 tokens fill sequence 0's last block and the free one.
  append_random(cache, models[0], 5, rng);
  EXPECT_EQ(cache.free_blocks(), 0);
  expect_paged_contents(cache, models);
}

TYPED_TEST(LatentCacheTest, PagedRejectsBadSizesAndBlockIds) {
  using S = TypeParam;
  EXPECT_INVALID("num_blocks (0) must be positive", (PagedLatentCache<S>(0, 16, 4, 2)));
  EXPECT_INVALID("block_size (0) must be positive", (PagedLatentCache<S>(4, 0, 4, 2)));
  EXPECT_INVALID("latent_dim (0) must be positive", (PagedLatentCache<S>(4, 16, 0, 2)));
  EXPECT_INVALID("rope_dim (-2) must not be negative", (PagedLatentCache<S>(4, 16, 4, -2)));
  const std::int64_t huge = std::int64_t{1} << 40;
  EXPECT_INVALID("overflows", (PagedLatentCache<S>(huge, huge, 4, 2)));
  PagedLatentCache<S> cache(4, 2, 4, 2);
  const auto id = cache.add_sequence();
  EXPECT_INVALID("key_block: block id (4) must be in [0, 4)", cache.key_block(4));
  EXPECT_INVALID("value_block: block id (-1)", cache.value_block(-1));
  EXPECT_INVALID("block_values: block index (0) must be in [0, 0)", cache.block_values(id, 0));
}

// ---- decoding over the caches -------------------------------------------------------------------

// An MLA decode problem of one sequence: absorbed queries [1, q_len, heads, dc + dr] and the
// cached rows, and the oracle's inputs over what Storage keeps of the rows.
struct LatentProblem {
  std::int64_t dc = 0, dr = 0;
  Rows rows;
  Inputs oracle;  // q; k = the stored rows; v = their first dc elements
};

template <class Storage>
LatentProblem make_problem(std::int64_t dc, std::int64_t dr, std::int64_t heads,
                           std::int64_t length, std::int64_t q_len, std::uint64_t seed) {
  LatentProblem p;
  p.dc = dc;
  p.dr = dr;
  p.rows = Rows{dc, dr, naive::random_vector(length * (dc + dr), seed * 5 + 1)};
  p.oracle.shape = make_shape(1, q_len, std::max<std::int64_t>(length, 1), heads, 1, dc + dr, dc);
  p.oracle.q = naive::random_vector(q_len * heads * (dc + dr), seed * 5 + 2);
  p.oracle.k = stored<Storage>(p.rows.data);
  for (std::int64_t t = 0; t < length; ++t)
    p.oracle.v.insert(p.oracle.v.end(), p.oracle.k.begin() + t * (dc + dr),
                      p.oracle.k.begin() + t * (dc + dr) + dc);
  return p;
}

// Batch entry b's part of a decode call's o [batch, q_len, heads, dc] and lse [batch, heads,
// q_len], checked against the oracle; an empty sequence must give 0 and −inf.
void expect_entry(const std::vector<float>& o, const std::vector<float>& lse, std::size_t b,
                  const LatentProblem& p, std::int64_t length, const KernelOptions& options) {
  const AttentionShape& s = p.oracle.shape;
  const auto per_o = static_cast<std::size_t>(s.o_size());
  const auto per_lse = static_cast<std::size_t>(s.lse_size());
  LibResult lib;
  lib.o.assign(o.begin() + b * per_o, o.begin() + (b + 1) * per_o);
  lib.lse.assign(lse.begin() + b * per_lse, lse.begin() + (b + 1) * per_lse);
  if (length == 0) {
    for (float x : lib.o) EXPECT_EQ(x, 0.0f);
    for (float x : lib.lse) EXPECT_EQ(x, -kInf);
    return;
  }
  expect_meets_standard(lib, run_oracle(p.oracle, options));
}

struct LatentShape {
  std::int64_t dc, dr, heads;
  std::optional<float> scale;  // MLA's 1/sqrt(nope_dim + rope_dim); none: the default
};

// DeepSeek-V2/V3's dims with their scale (nope_dim 128), a smaller pair with a scale unlike the
// default, and a layer without RoPE at the default scale.
const LatentShape kShapes[] = {{512, 64, 16, 1.0f / std::sqrt(192.0f)},
                               {256, 32, 8, 0.3f},
                               {64, 0, 4, std::nullopt}};

template <class Storage>
class LatentDecodeTest : public ::testing::Test {};
TYPED_TEST_SUITE(LatentDecodeTest, StorageTypes);

TYPED_TEST(LatentDecodeTest, ContiguousCacheMatchesNaiveOverTheStoredRows) {
  using S = TypeParam;
  const std::int64_t batch = 2;
  for (const LatentShape& shape : kShapes)
    for (std::int64_t length : {1, 17, 300, 1000})
      for (std::int64_t q_len : {1, 3}) {
        if (length == 1000 && shape.dc != 256) continue;  // one long cache: split across threads
        SCOPED_TRACE("latent_dim " + std::to_string(shape.dc) + ", rope_dim " +
                     std::to_string(shape.dr) + ", heads " + std::to_string(shape.heads) +
                     ", length " + std::to_string(length) + ", q_len " + std::to_string(q_len));
        std::vector<LatentProblem> problems;
        for (std::int64_t b = 0; b < batch; ++b)
          problems.push_back(make_problem<S>(shape.dc, shape.dr, shape.heads, length, q_len,
                                             std::uint64_t(length * 7 + q_len * 3 + b)));
        LatentCache<S> cache(batch, length + 5, shape.dc, shape.dr);
        // As a decode step appends: the context, then the q_len new tokens.
        const std::int64_t context = std::max<std::int64_t>(0, length - q_len);
        for (const auto& [t0, n] : {std::pair<std::int64_t, std::int64_t>{0, context},
                                    std::pair<std::int64_t, std::int64_t>{context,
                                                                          length - context}}) {
          if (n == 0) continue;
          std::vector<Rows> part;
          for (const LatentProblem& p : problems) part.push_back(p.rows.slice(t0, n));
          const AppendInput in = make_input(part, t0 == 0 ? Layout::projection : Layout::separate);
          if (shape.dr == 0)
            cache.append(in.c_kv);
          else
            cache.append(in.c_kv, in.k_rope);
        }
        std::vector<float> q;
        for (const LatentProblem& p : problems)
          q.insert(q.end(), p.oracle.q.begin(), p.oracle.q.end());
        const std::int64_t o_size = batch * q_len * shape.heads * shape.dc;
        std::vector<float> o(std::size_t(o_size), std::nanf(""));
        std::vector<float> lse(std::size_t(batch * shape.heads * q_len), std::nanf(""));
        KernelOptions options;
        options.causal = true;
        options.threads = 2;
        options.scale = shape.scale;
        multihead::decode_attention(
            TensorView<const float>(q.data(), std::int64_t(q.size()), batch, q_len, shape.heads,
                                    shape.dc + shape.dr),
            cache, TensorView<float>(o.data(), o_size, batch, q_len, shape.heads, shape.dc),
            options, LseOutput{lse.data(), std::int64_t(lse.size())});
        for (std::size_t b = 0; b < problems.size(); ++b)
          expect_entry(o, lse, b, problems[b], length, options);
      }
}

// A ragged batch of paged sequences, out of order in a churned pool, in an order other than
// their ids'.
template <class S>
void check_paged_decode(const LatentShape& shape, std::int64_t block_size, std::int64_t q_len) {
  SCOPED_TRACE("latent_dim " + std::to_string(shape.dc) + ", rope_dim " +
               std::to_string(shape.dr) + ", block_size " + std::to_string(block_size) +
               ", q_len " + std::to_string(q_len));
  const std::vector<std::int64_t> lengths = {17, 0, 300, 1, 2 * block_size, 45};
  PagedLatentCache<S> cache(400, block_size, shape.dc, shape.dr);
  std::mt19937 rng(43);
  Model junk_a = add(cache), junk_b = add(cache);
  append_random(cache, junk_a, 40, rng);
  append_random(cache, junk_b, 40, rng);
  cache.release(junk_a.id);

  std::vector<LatentProblem> problems;
  std::vector<std::int64_t> ids;
  for (std::size_t i = 0; i < lengths.size(); ++i) {
    problems.push_back(make_problem<S>(shape.dc, shape.dr, shape.heads, lengths[i], q_len,
                                       std::uint64_t(100 + 13 * i)));
    Model m = add(cache);
    ids.push_back(m.id);
    for (std::int64_t t = 0; t < lengths[i];) {  // uneven appends, across block boundaries
      const std::int64_t n = std::min<std::int64_t>(lengths[i] - t, 1 + t % 23);
      append_rows(cache, m, problems.back().rows.slice(t, n),
                  t % 2 ? Layout::separate : Layout::projection);
      t += n;
    }
    if (i == 1) cache.release(junk_b.id);  // freed blocks go to the longer sequences
  }
  const std::vector<std::size_t> order = {3, 0, 5, 2, 1, 4};  // batch entry → sequence
  std::vector<std::int64_t> batch_ids;
  std::vector<float> q;
  for (std::size_t i : order) {
    batch_ids.push_back(ids[i]);
    q.insert(q.end(), problems[i].oracle.q.begin(), problems[i].oracle.q.end());
  }
  const auto batch = std::int64_t(order.size());
  const std::int64_t o_size = batch * q_len * shape.heads * shape.dc;
  std::vector<float> o(std::size_t(o_size), std::nanf(""));
  std::vector<float> lse(std::size_t(batch * shape.heads * q_len), std::nanf(""));
  KernelOptions options;
  options.causal = true;
  options.threads = 2;
  options.scale = shape.scale;
  multihead::decode_attention(
      TensorView<const float>(q.data(), std::int64_t(q.size()), batch, q_len, shape.heads,
                              shape.dc + shape.dr),
      cache, Span<const std::int64_t>{batch_ids.data(), batch},
      TensorView<float>(o.data(), o_size, batch, q_len, shape.heads, shape.dc), options,
      LseOutput{lse.data(), std::int64_t(lse.size())});
  for (std::size_t b = 0; b < order.size(); ++b) {
    SCOPED_TRACE("sequence of " + std::to_string(lengths[order[b]]) + " tokens");
    expect_entry(o, lse, b, problems[order[b]], lengths[order[b]], options);
  }
}

TYPED_TEST(LatentDecodeTest, PagedRaggedBatchMatchesNaive) {
  using S = TypeParam;
  for (const LatentShape& shape : kShapes)
    for (std::int64_t block_size : {16, 5})
      for (std::int64_t q_len : {1, 3}) check_paged_decode<S>(shape, block_size, q_len);
}

TEST(LatentDecodeEdges, EmptyCacheGivesZeroAndMinusInfinity) {
  LatentCache<bf16> cache(1, 8, 16, 8);
  std::vector<float> q(4 * 24, 1.0f), o(4 * 16, 7.0f), lse(4, 7.0f);
  multihead::decode_attention(TensorView<const float>(q.data(), 96, 1, 1, 4, 24), cache,
                              TensorView<float>(o.data(), 64, 1, 1, 4, 16), {},
                              LseOutput{lse.data(), 4});
  for (float x : o) EXPECT_EQ(x, 0.0f);
  for (float x : lse) EXPECT_EQ(x, -kInf);
}

TEST(LatentDecodeEdges, BadArgumentsThrowAndWriteNothing) {
  LatentCache<float> cache(2, 16, 8, 4);
  std::vector<float> rows(2 * 3 * 12, 0.5f);
  cache.append(TensorView<const float>::strided(rows.data(), 72, 2, 3, 1, 8, 36, 12, 8),
               TensorView<const float>::strided(rows.data() + 8, 64, 2, 3, 1, 4, 36, 12, 4));
  std::vector<float> q(2 * 4 * 12, 1.0f), o(2 * 4 * 12, 7.0f), lse(8, 7.0f);
  const auto q_view = [&](std::int64_t batch, std::int64_t dim) {
    return TensorView<const float>(q.data(), batch * 4 * dim, batch, 1, 4, dim);
  };
  const auto o_view = [&](std::int64_t batch, std::int64_t dim) {
    return TensorView<float>(o.data(), batch * 4 * dim, batch, 1, 4, dim);
  };
  // q over the latent alone; o as wide as the keys; batch 1 vs 2.
  EXPECT_INVALID("q.dim (8) must equal the cache's head_dim (12)",
                 multihead::decode_attention(q_view(2, 8), cache, o_view(2, 8)));
  EXPECT_INVALID("o.dim (12) must equal the cache's value_dim (8)",
                 multihead::decode_attention(q_view(2, 12), cache, o_view(2, 12)));
  EXPECT_INVALID("batch sizes differ",
                 multihead::decode_attention(q_view(1, 12), cache, o_view(1, 8)));

  PagedLatentCache<fp16> paged(4, 4, 8, 4);
  const auto live = paged.add_sequence();
  const auto gone = paged.add_sequence();
  paged.release(gone);
  const std::int64_t unknown[] = {live, 99}, released[] = {gone, live};
  EXPECT_INVALID("sequence 99 does not exist", multihead::decode_attention(q_view(2, 12), paged,
                                           Span<const std::int64_t>{unknown, 2}, o_view(2, 8)));
  EXPECT_INVALID("was released", multihead::decode_attention(q_view(2, 12), paged,
                                           Span<const std::int64_t>{released, 2}, o_view(2, 8)));
  EXPECT_INVALID("batch sizes differ", multihead::decode_attention(q_view(2, 8), paged,
                                           Span<const std::int64_t>{unknown, 1}, o_view(1, 8)));
  for (float x : o) EXPECT_EQ(x, 7.0f);
  for (float x : lse) EXPECT_EQ(x, 7.0f);
}

}  // namespace
