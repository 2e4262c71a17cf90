// The score modifiers (modifiers.hpp) in every kernel: reference, fused and decode over float
// views, decode over a KvCache and over a PagedKvCache (blocks of 16; bf16 caches too), against
// the independent oracle of naive_modified_reference.hpp under the accuracy standard
//   max|lib - double| <= 2 * max|naive fp32 - double| + 1e-6   (outputs and log-sum-exps),
// and, for rows that see no key, exactly output 0 and log-sum-exp −inf (or the sink).
//
// The cases: each modifier alone, then in pairs, then swept over the kernels' tile edges
// (kv_len 63/64/65/129 around the 64-key tiles; q_len 1, 2, 17 and kv_len; group sizes 1, 4 and
// 16, which put decode's rows = q_len × group size on its row path, one row vector and several;
// head dims 64 and 128, which have fixed-dim kernels, and 40, which has none), and long enough
// for decode to split the cache between two threads. Then rows that see nothing, a ragged paged
// batch, bad arguments, and alibi_slopes().
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "support/kernel_testing.hpp"
#include "support/naive_modified_reference.hpp"
#include "support/testing.hpp"

namespace {

using test_support::kInf;

using namespace kernel_testing;
using multihead::bf16;
using multihead::CausalAlignment;
using multihead::KvCache;
using multihead::MaskView;
using multihead::ModifierRef;
using multihead::PagedKvCache;
using multihead::ScoreSite;
using multihead::Span;

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
using Index = std::int64_t;

// A uniform number in [0, 1) from a few integers, so masks and biases need no stored tables.
double hash_unit(std::uint64_t a, std::uint64_t b = 0, std::uint64_t c = 0, std::uint64_t d = 0,
                 std::uint64_t e = 0) {
  std::uint64_t x = a * 0x9E3779B97F4A7C15ull ^ (b + 0x632BE59BD9B4E019ull) * 0xBF58476D1CE4E5B9ull;
  x ^= (c + 0x85EBCA77C2B2AE63ull) * 0x94D049BB133111EBull;
  x ^= (d + 0x27D4EB2F165667C5ull) * 0xD6E8FEB86659FD93ull;
  x ^= (e + 0x165667B19E3779F9ull) * 0xFF51AFD7ED558CCDull;
  x ^= x >> 31;
  x *= 0xBF58476D1CE4E5B9ull;
  x ^= x >> 29;
  x *= 0x94D049BB133111EBull;
  x ^= x >> 32;
  return double(x >> 11) * 0x1p-53;
}

// ---- The modifiers of one case, handed to the library and to the oracle ---------------------

// A mask's extents [batch, heads, q_len, kv_len]; 1 broadcasts.
struct Dims {
  Index batch = 1, heads = 1, q_len = 1, kv_len = 0;
  Index size() const { return batch * heads * q_len * kv_len; }
};

using SiteFunction = std::function<double(Index b, Index h, Index i, Index j)>;

struct Mods {
  bool causal = false, top_left = false;
  Index window_left = -1, window_right = -1;
  float softcap = 0.0f;
  std::vector<float> slopes, sinks;
  std::vector<float> additive;
  Dims additive_dims;
  std::shared_ptr<bool[]> keep;  // the boolean mask (std::vector<bool> has no data())
  Dims keep_dims;
  std::optional<float> scale;
  int threads = 1;
  // A custom modifier, kept alive here, and the oracle's view of the same hooks.
  ModifierRef modifier;
  std::shared_ptr<const void> modifier_owner;
  std::function<double(double, Index, Index, Index, Index)> logit;
  std::function<bool(Index, Index, Index, Index)> visible;
  std::function<double(Index, Index)> sink;

  KernelOptions options() const {
    KernelOptions o;
    o.causal = causal;
    o.alignment = top_left ? CausalAlignment::top_left : CausalAlignment::bottom_right;
    o.window_left = window_left;
    o.window_right = window_right;
    o.softcap = softcap;
    if (!slopes.empty()) o.alibi_slopes = {slopes.data(), Index(slopes.size())};
    if (!sinks.empty()) o.sinks = {sinks.data(), Index(sinks.size())};
    if (!additive.empty())
      o.additive_mask = MaskView<float>(additive.data(), Index(additive.size()),
                                        additive_dims.batch, additive_dims.heads,
                                        additive_dims.q_len, additive_dims.kv_len);
    if (keep)
      o.boolean_mask = MaskView<bool>(keep.get(), keep_dims.size(), keep_dims.batch,
                                      keep_dims.heads, keep_dims.q_len, keep_dims.kv_len);
    o.modifier = modifier;
    o.scale = scale;
    o.threads = threads;
    return o;
  }

  naive::Modifiers oracle() const {
    naive::Modifiers m;
    m.causal = causal;
    m.top_left = top_left;
    m.window_left = window_left;
    m.window_right = window_right;
    m.softcap = softcap;
    m.alibi_slopes.assign(slopes.begin(), slopes.end());
    m.sinks.assign(sinks.begin(), sinks.end());
    if (!additive.empty()) {
      m.additive_mask.values.assign(additive.begin(), additive.end());
      m.additive_mask.batch = additive_dims.batch;
      m.additive_mask.heads = additive_dims.heads;
      m.additive_mask.q_len = additive_dims.q_len;
      m.additive_mask.kv_len = additive_dims.kv_len;
    }
    if (keep) {
      m.boolean_mask.values.assign(keep.get(), keep.get() + keep_dims.size());
      m.boolean_mask.batch = keep_dims.batch;
      m.boolean_mask.heads = keep_dims.heads;
      m.boolean_mask.q_len = keep_dims.q_len;
      m.boolean_mask.kv_len = keep_dims.kv_len;
    }
    m.logit = logit;
    m.visible = visible;
    m.sink = sink;
    if (scale) m.scale = double(*scale);
    return m;
  }
};

// Fills a mask of extents d with f(b, h, i, j), indices within the mask (0 where it broadcasts).
void set_additive(Mods& m, Dims d, const SiteFunction& f) {
  m.additive_dims = d;
  m.additive.clear();
  for (Index b = 0; b < d.batch; ++b)
    for (Index h = 0; h < d.heads; ++h)
      for (Index i = 0; i < d.q_len; ++i)
        for (Index j = 0; j < d.kv_len; ++j) m.additive.push_back(float(f(b, h, i, j)));
}

void set_boolean(Mods& m, Dims d, const std::function<bool(Index, Index, Index, Index)>& f) {
  m.keep_dims = d;
  m.keep = std::shared_ptr<bool[]>(new bool[std::size_t(std::max<Index>(d.size(), 1))]);
  Index x = 0;
  for (Index b = 0; b < d.batch; ++b)
    for (Index h = 0; h < d.heads; ++h)
      for (Index i = 0; i < d.q_len; ++i)
        for (Index j = 0; j < d.kv_len; ++j) m.keep[std::size_t(x++)] = f(b, h, i, j);
}

// A random additive mask in [-range, range) of extents d.
void random_additive(Mods& m, Dims d, double range, std::uint64_t seed) {
  set_additive(m, d, [=](Index b, Index h, Index i, Index j) {
    return range * (2.0 * hash_unit(seed, b, h, i, j) - 1.0);
  });
}

// A random boolean mask of extents d, each element visible with probability p.
void random_boolean(Mods& m, Dims d, double p, std::uint64_t seed) {
  set_boolean(m, d, [=](Index b, Index h, Index i, Index j) {
    return hash_unit(seed, b, h, i, j) < p;
  });
}

std::vector<float> random_slopes(Index heads, std::uint64_t seed) {
  std::vector<float> s = naive::random_vector(heads, seed, 0.0f, 0.3f);
  s[0] = 0.0f;                           // a head without bias
  if (heads > 2) s[1] = -0.05f;          // slopes need not be positive
  return s;
}

std::vector<float> random_sinks(Index heads, std::uint64_t seed) {
  std::vector<float> s = naive::random_vector(heads, seed, -2.0f, 4.0f);
  if (heads > 3) s[3] = -kInf;           // a head without a sink
  return s;
}

// Documents packed into each sequence: a key is visible to a query of the same document (the
// query's own token is i + kv_len - q_len), and each head adds a bias per key.
struct Documents {
  Index q_len = 0, kv_len = 0, heads = 0;
  std::vector<int> document;  // [batch, kv_len]
  std::vector<float> bias;    // [heads, kv_len]

  int doc(Index b, Index t) const { return document[std::size_t(b * kv_len + t)]; }
  float bias_at(Index h, Index j) const { return bias[std::size_t(h * kv_len + j)]; }
  bool visible(const ScoreSite& at) const {
    const Index token = at.query + kv_len - q_len;
    return token >= 0 && doc(at.batch, token) == doc(at.batch, at.key);
  }
  float logit(float s, const ScoreSite& at) const { return s + bias_at(at.head, at.key); }
};

std::shared_ptr<const Documents> make_documents(const AttentionShape& s, std::uint64_t seed) {
  auto d = std::make_shared<Documents>();
  d->q_len = s.q_len;
  d->kv_len = s.kv_len;
  d->heads = s.heads;
  for (Index b = 0; b < s.batch; ++b) {
    int current = 0;
    for (Index t = 0; t < s.kv_len; ++t) {
      if (t > 0 && hash_unit(seed, b, t) < 0.06) ++current;  // documents of ~16 tokens
      d->document.push_back(current);
    }
  }
  d->bias = naive::random_vector(s.heads * s.kv_len, seed + 1, -1.0f, 1.0f);
  return d;
}

void use_documents(Mods& m, const AttentionShape& s, std::uint64_t seed) {
  const std::shared_ptr<const Documents> d = make_documents(s, seed);
  m.modifier = ModifierRef(*d);
  m.modifier_owner = d;
  m.visible = [d](Index b, Index h, Index i, Index j) { return d->visible(ScoreSite{b, h, i, j}); };
  m.logit = [d](double x, Index, Index h, Index, Index j) { return x + double(d->bias_at(h, j)); };
}

// A sink per (batch entry, head) from a custom modifier's sink() hook.
struct SinkPerSequence {
  Index heads = 0;
  std::vector<float> values;  // [batch, heads]
  float sink(Index b, Index h) const { return values[std::size_t(b * heads + h)]; }
};

void use_sink_hook(Mods& m, const AttentionShape& s, std::uint64_t seed) {
  auto k = std::make_shared<SinkPerSequence>();
  k->heads = s.heads;
  k->values = naive::random_vector(s.batch * s.heads, seed, -1.0f, 3.0f);
  if (k->values.size() > 2) k->values[2] = -kInf;
  m.modifier = ModifierRef(*k);
  m.modifier_owner = k;
  m.sink = [k](Index b, Index h) { return double(k->sink(b, h)); };
}

// ---- The kernels under test -------------------------------------------------------------------

enum class Path { reference, fused, decode, kv_cache, paged, kv_cache_bf16, paged_bf16 };
const std::vector<Path> kFloatPaths = {Path::reference, Path::fused, Path::decode, Path::kv_cache,
                                       Path::paged};

const char* path_name(Path p) {
  switch (p) {
    case Path::reference: return "reference_attention";
    case Path::fused: return "fused_attention";
    case Path::decode: return "decode_attention over views";
    case Path::kv_cache: return "decode_attention over KvCache<float>";
    case Path::paged: return "decode_attention over PagedKvCache<float> (blocks of 16)";
    case Path::kv_cache_bf16: return "decode_attention over KvCache<bf16>";
    case Path::paged_bf16: return "decode_attention over PagedKvCache<bf16> (blocks of 16)";
  }
  return "?";
}

bool stores_bf16(Path p) { return p == Path::kv_cache_bf16 || p == Path::paged_bf16; }

std::vector<float> rounded_to_bf16(std::vector<float> x) {
  for (float& e : x) e = multihead::to_float(multihead::from_float<bf16>(e));
  return x;
}

TensorView<const float> q_view(const Inputs& in) {
  const AttentionShape& s = in.shape;
  return TensorView<const float>(in.q.data(), s.q_size(), s.batch, s.q_len, s.heads, s.head_dim);
}

TensorView<float> o_view(const AttentionShape& s, LibResult& r) {
  return TensorView<float>(r.o.data(), s.o_size(), s.batch, s.q_len, s.heads, s.value_dim);
}

// Tokens [t0, t0 + n) of batch entries [b0, b0 + batch) of a contiguous [batch, kv_len,
// kv_groups, dim] tensor.
TensorView<const float> token_range(const std::vector<float>& x, const AttentionShape& s,
                                    Index dim, Index b0, Index batch, Index t0, Index n) {
  const Index row = s.kv_groups * dim, start = (b0 * s.kv_len + t0) * row;
  return TensorView<const float>::strided(x.data() + start, Index(x.size()) - start, batch, n,
                                          s.kv_groups, dim, s.kv_len * row, row, dim);
}

// Appended in two parts, the second the last q_len tokens (a decode step's new tokens).
template <class Storage>
void run_kv_cache(const Inputs& in, const KernelOptions& options, LibResult& r) {
  const AttentionShape& s = in.shape;
  KvCache<Storage> cache(s.batch, s.kv_len + 3, s.kv_groups, s.head_dim, s.value_dim);
  const Index split = std::max<Index>(s.kv_len - s.q_len, 0);
  for (const auto& [t0, n] : {std::pair<Index, Index>{0, split},
                              std::pair<Index, Index>{split, s.kv_len - split}})
    if (n > 0)
      cache.append(token_range(in.k, s, s.head_dim, 0, s.batch, t0, n),
                   token_range(in.v, s, s.value_dim, 0, s.batch, t0, n));
  multihead::decode_attention(q_view(in), cache, o_view(s, r), options,
                              LseOutput{r.lse.data(), s.lse_size()});
}

// One sequence per batch entry, appended round-robin in uneven chunks after a sequence that is
// then released, so that each sequence's blocks are scattered over the pool.
template <class Storage>
void run_paged(const Inputs& in, const KernelOptions& options, LibResult& r) {
  const AttentionShape& s = in.shape;
  constexpr Index kBlock = 16;
  PagedKvCache<Storage> cache(s.batch * ((s.kv_len + kBlock - 1) / kBlock) + 2, kBlock,
                              s.kv_groups, s.head_dim, s.value_dim);
  std::vector<float> junk(std::size_t(20 * s.kv_groups * std::max(s.head_dim, s.value_dim)), 9.0f);
  const auto junk_id = cache.add_sequence();
  cache.append(junk_id,
               TensorView<const float>(junk.data(), 20 * s.kv_groups * s.head_dim, 1, 20,
                                       s.kv_groups, s.head_dim),
               TensorView<const float>(junk.data(), 20 * s.kv_groups * s.value_dim, 1, 20,
                                       s.kv_groups, s.value_dim));
  std::vector<Index> ids, filled(std::size_t(s.batch), 0);
  for (Index b = 0; b < s.batch; ++b) ids.push_back(cache.add_sequence());
  for (bool more = true; more;) {
    more = false;
    for (Index b = 0; b < s.batch; ++b) {
      Index& t = filled[std::size_t(b)];
      const Index n = std::min<Index>(s.kv_len - t, 1 + (t + 5 * b) % 23);
      if (n <= 0) continue;
      cache.append(ids[std::size_t(b)], token_range(in.k, s, s.head_dim, b, 1, t, n),
                   token_range(in.v, s, s.value_dim, b, 1, t, n));
      t += n;
      more = true;
      if (t > 40 && junk_id >= 0 && cache.sequences() == s.batch + 1) cache.release(junk_id);
    }
  }
  multihead::decode_attention(q_view(in), cache, Span<const Index>{ids.data(), s.batch},
                              o_view(s, r), options, LseOutput{r.lse.data(), s.lse_size()});
}

// Runs `path` into r, whose o and lse must have the shape's sizes.
void run_into(Path path, const Inputs& in, const KernelOptions& options, LibResult& r) {
  const AttentionShape& s = in.shape;
  const TensorView<const float> k(in.k.data(), s.k_size(), s.batch, s.kv_len, s.kv_groups,
                                  s.head_dim);
  const TensorView<const float> v(in.v.data(), s.v_size(), s.batch, s.kv_len, s.kv_groups,
                                  s.value_dim);
  const LseOutput lse{r.lse.data(), s.lse_size()};
  switch (path) {
    case Path::reference:
      multihead::reference_attention(q_view(in), k, v, o_view(s, r), options, lse);
      break;
    case Path::fused:
      multihead::fused_attention(q_view(in), k, v, o_view(s, r), options, lse);
      break;
    case Path::decode:
      multihead::decode_attention<float>(q_view(in), k, v, o_view(s, r), options, lse);
      break;
    case Path::kv_cache: run_kv_cache<float>(in, options, r); break;
    case Path::paged: run_paged<float>(in, options, r); break;
    case Path::kv_cache_bf16: run_kv_cache<bf16>(in, options, r); break;
    case Path::paged_bf16: run_paged<bf16>(in, options, r); break;
  }
}

LibResult run_path(Path path, const Inputs& in, const KernelOptions& options) {
  LibResult r;
  r.o.assign(std::size_t(in.shape.o_size()), kNaN);  // anything left unwritten shows
  r.lse.assign(std::size_t(in.shape.lse_size()), kNaN);
  run_into(path, in, options, r);
  return r;
}

Oracle modified_oracle(const Inputs& in, const naive::Modifiers& m) {
  Oracle oracle;
  oracle.exact = naive::modified_attention<double>(in.shape, in.q.data(), in.k.data(),
                                                    in.v.data(), m);
  oracle.fp32 = naive::modified_attention<float>(in.shape, in.q.data(), in.k.data(),
                                                  in.v.data(), m);
  return oracle;
}

// Rows that see no key: output exactly 0, log-sum-exp exactly the oracle's (−inf, or the sink).
void expect_empty_rows_exact(const AttentionShape& s, const std::vector<char>& nothing,
                             const Oracle& oracle, const LibResult& lib) {
  int failures = 0;
  for (Index b = 0; b < s.batch; ++b)
    for (Index h = 0; h < s.heads; ++h)
      for (Index i = 0; i < s.q_len && failures < 5; ++i) {
        const std::size_t row = std::size_t((b * s.heads + h) * s.q_len + i);
        if (!nothing[row]) continue;
        const float expected = float(oracle.exact.lse[row]);
        if (!(lib.lse[row] == expected)) {
          ++failures;
          ADD_FAILURE() << "row seeing no key: lse " << lib.lse[row] << ", expected " << expected
                        << " (b " << b << ", h " << h << ", i " << i << ")";
        }
        for (Index d = 0; d < s.value_dim; ++d) {
          const float o = lib.o[std::size_t(((b * s.q_len + i) * s.heads + h) * s.value_dim + d)];
          if (o != 0.0f) {
            ++failures;
            ADD_FAILURE() << "row seeing no key: o " << o << " (b " << b << ", h " << h << ", i "
                          << i << ", d " << d << ")";
            break;
          }
        }
      }
}

// Every path against the oracle (bf16 paths: the oracle over the bf16-rounded K/V). Returns the
// number of rows that see no key, so that a test can check it exercises what it claims.
Index check_paths(const Inputs& in, const Mods& mods,
                  const std::vector<Path>& paths = kFloatPaths) {
  const naive::Modifiers m = mods.oracle();
  const KernelOptions options = mods.options();
  const std::vector<char> nothing = naive::rows_seeing_nothing(in.shape, m);
  std::optional<Oracle> exact_kv, bf16_kv;
  for (Path path : paths) {
    SCOPED_TRACE(path_name(path));
    std::optional<Oracle>& oracle = stores_bf16(path) ? bf16_kv : exact_kv;
    if (!oracle) {
      if (stores_bf16(path)) {
        Inputs rounded = in;
        rounded.k = rounded_to_bf16(in.k);
        rounded.v = rounded_to_bf16(in.v);
        oracle = modified_oracle(rounded, m);
      } else {
        oracle = modified_oracle(in, m);
      }
    }
    const LibResult lib = run_path(path, in, options);
    expect_meets_standard(lib, *oracle);
    expect_empty_rows_exact(in.shape, nothing, *oracle, lib);
  }
  return Index(std::count(nothing.begin(), nothing.end(), 1));
}

// ---- Each modifier alone, and in pairs --------------------------------------------------------

struct ModCase {
  std::string name;
  AttentionShape shape;
  float magnitude;  // Q and K uniform in [-magnitude, magnitude)
  std::function<void(Mods&, const AttentionShape&)> set;
};

void PrintTo(const ModCase& c, std::ostream* out) {
  *out << c.name << " (" << describe(c.shape) << ")";
}

AttentionShape shape_of(Index batch, Index q_len, Index kv_len, Index heads, Index groups,
                        Index dim) {
  return make_shape(batch, q_len, kv_len, heads, groups, dim, dim);
}

std::vector<ModCase> single_and_pair_cases() {
  using S = const AttentionShape&;
  std::vector<ModCase> c;
  // Causal alignment.
  c.push_back({"CausalBottomRightFewerQueries", shape_of(2, 17, 65, 8, 2, 64), 1.0f,
               [](Mods& m, S) { m.causal = true; }});
  c.push_back({"CausalBottomRightMoreQueries", shape_of(1, 70, 63, 4, 4, 64), 1.0f,
               [](Mods& m, S) { m.causal = true; }});
  c.push_back({"CausalTopLeftFewerQueries", shape_of(2, 17, 129, 8, 2, 40), 1.0f,
               [](Mods& m, S) { m.causal = m.top_left = true; }});
  c.push_back({"CausalTopLeftMoreQueries", shape_of(1, 65, 17, 16, 1, 64), 1.0f,
               [](Mods& m, S) { m.causal = m.top_left = true; }});
  // Sliding windows.
  c.push_back({"WindowMistralCausalLeft", shape_of(1, 65, 65, 8, 2, 64), 1.0f, [](Mods& m, S) {
                 m.causal = true;
                 m.window_left = 15;
               }});
  c.push_back({"WindowMistralDecodeStep", shape_of(2, 1, 129, 16, 1, 128), 1.0f, [](Mods& m, S) {
                 m.causal = true;
                 m.window_left = 31;
               }});
  c.push_back({"WindowLeftAndRight", shape_of(2, 17, 65, 8, 2, 64), 1.0f, [](Mods& m, S) {
                 m.window_left = 7;
                 m.window_right = 5;
               }});
  c.push_back({"WindowLeftAndRightTopLeft", shape_of(1, 33, 65, 4, 1, 40), 1.0f, [](Mods& m, S) {
                 m.top_left = true;
                 m.window_left = 3;
                 m.window_right = 10;
               }});
  c.push_back({"WindowRightOnly", shape_of(1, 2, 65, 4, 1, 64), 1.0f,
               [](Mods& m, S) { m.window_right = 3; }});
  c.push_back({"WindowWiderThanTheSequence", shape_of(1, 17, 129, 8, 2, 64), 1.0f,
               [](Mods& m, S) { m.window_left = m.window_right = 500; }});
  // Soft-cap: inputs large enough that scores pass the cap (checked in the test).
  c.push_back({"Softcap5", shape_of(2, 17, 65, 8, 2, 64), 6.0f, [](Mods& m, S) { m.softcap = 5; }});
  c.push_back({"Softcap50", shape_of(1, 17, 129, 4, 1, 128), 12.0f,
               [](Mods& m, S) { m.softcap = 50; }});
  // ALiBi.
  c.push_back({"AlibiStandardSlopes", shape_of(2, 17, 129, 8, 2, 64), 1.0f,
               [](Mods& m, S) { m.slopes = multihead::alibi_slopes(8); }});
  c.push_back({"AlibiStandardSlopesCausal", shape_of(1, 65, 65, 12, 3, 64), 1.0f, [](Mods& m, S) {
                 m.slopes = multihead::alibi_slopes(12);
                 m.causal = true;
               }});
  c.push_back({"AlibiCustomSlopes", shape_of(2, 2, 65, 16, 1, 40), 1.0f,
               [](Mods& m, S s) { m.slopes = random_slopes(s.heads, 11); }});
  c.push_back({"AlibiCustomSlopesCausalTopLeft", shape_of(1, 17, 64, 4, 4, 64), 1.0f,
               [](Mods& m, S s) {
                 m.slopes = random_slopes(s.heads, 12);
                 m.causal = m.top_left = true;
               }});
  // Additive masks.
  c.push_back({"AdditiveMaskFull", shape_of(2, 17, 65, 8, 2, 64), 1.0f, [](Mods& m, S s) {
                 random_additive(m, {s.batch, s.heads, s.q_len, s.kv_len}, 4.0, 21);
               }});
  c.push_back({"AdditiveMaskBroadcastQueriesKeys", shape_of(2, 17, 65, 8, 2, 40), 1.0f,
               [](Mods& m, S s) { random_additive(m, {1, 1, s.q_len, s.kv_len}, 4.0, 22); }});
  c.push_back({"AdditiveMaskPerHeadKeys", shape_of(2, 2, 65, 16, 1, 64), 1.0f,
               [](Mods& m, S s) { random_additive(m, {1, s.heads, 1, s.kv_len}, 4.0, 23); }});
  // Key padding as −inf: batch entry 0 padded on the right, 1 on the left (whole tiles hidden
  // before the first visible key).
  c.push_back({"AdditiveMaskKeyPaddingMinusInfinity", shape_of(2, 3, 129, 8, 2, 64), 1.0f,
               [](Mods& m, S s) {
                 set_additive(m, {s.batch, 1, 1, s.kv_len}, [](Index b, Index, Index, Index j) {
                   const bool padding = b == 0 ? j >= 100 : j < 70;
                   return padding ? -double(kInf) : 0.0;
                 });
               }});
  // Boolean masks.
  c.push_back({"BooleanMaskFull", shape_of(2, 17, 65, 8, 2, 64), 1.0f, [](Mods& m, S s) {
                 random_boolean(m, {s.batch, s.heads, s.q_len, s.kv_len}, 0.7, 31);
               }});
  c.push_back({"BooleanMaskBroadcastQueriesKeys", shape_of(2, 17, 129, 4, 1, 128), 1.0f,
               [](Mods& m, S s) { random_boolean(m, {1, 1, s.q_len, s.kv_len}, 0.5, 32); }});
  c.push_back({"BooleanMaskKeyPadding", shape_of(2, 2, 129, 8, 2, 64), 1.0f, [](Mods& m, S s) {
                 set_boolean(m, {s.batch, 1, 1, s.kv_len}, [](Index b, Index, Index, Index j) {
                   return b == 0 ? j < 100 : j >= 70;
                 });
               }});
  // Sinks.
  c.push_back({"Sinks", shape_of(2, 17, 65, 8, 2, 64), 1.0f,
               [](Mods& m, S s) { m.sinks = random_sinks(s.heads, 41); }});
  c.push_back({"SinksDominant", shape_of(1, 1, 129, 16, 1, 128), 1.0f,
               [](Mods& m, S s) { m.sinks.assign(std::size_t(s.heads), 8.0f); }});
  // Scale.
  c.push_back({"CustomScale", shape_of(2, 17, 65, 8, 2, 64), 1.0f,
               [](Mods& m, S) { m.scale = 0.3f; }});
  // Custom modifiers through ModifierRef.
  c.push_back({"CustomDocumentMaskAndBias", shape_of(2, 17, 129, 8, 2, 64), 1.0f,
               [](Mods& m, S s) { use_documents(m, s, 51); }});
  c.push_back({"CustomDocumentMaskCausal", shape_of(1, 65, 65, 16, 1, 40), 1.0f,
               [](Mods& m, S s) {
                 use_documents(m, s, 52);
                 m.causal = true;
               }});
  c.push_back({"CustomSinkHook", shape_of(2, 2, 65, 8, 2, 64), 1.0f,
               [](Mods& m, S s) { use_sink_hook(m, s, 53); }});
  c.push_back({"CustomSinkHookAndSinks", shape_of(2, 17, 65, 8, 2, 64), 1.0f, [](Mods& m, S s) {
                 use_sink_hook(m, s, 54);
                 m.sinks = random_sinks(s.heads, 55);
               }});
  // Pairs.
  c.push_back({"PairWindowSoftcap", shape_of(2, 17, 129, 8, 2, 64), 6.0f, [](Mods& m, S) {
                 m.causal = true;
                 m.window_left = 20;
                 m.softcap = 5;
               }});
  c.push_back({"PairAlibiCausalDecodeStep", shape_of(2, 1, 129, 16, 4, 64), 1.0f,
               [](Mods& m, S) {
                 m.slopes = multihead::alibi_slopes(16);
                 m.causal = true;
               }});
  c.push_back({"PairSinksWindow", shape_of(2, 17, 129, 8, 2, 64), 1.0f, [](Mods& m, S s) {
                 m.sinks = random_sinks(s.heads, 61);
                 m.window_left = 10;
                 m.window_right = 2;
               }});
  c.push_back({"PairBooleanAdditive", shape_of(2, 17, 65, 8, 2, 64), 1.0f, [](Mods& m, S s) {
                 random_boolean(m, {s.batch, 1, s.q_len, s.kv_len}, 0.6, 62);
                 random_additive(m, {1, s.heads, s.q_len, s.kv_len}, 3.0, 63);
               }});
  c.push_back({"PairSoftcapAlibi", shape_of(1, 17, 65, 8, 2, 128), 10.0f, [](Mods& m, S s) {
                 m.softcap = 30;
                 m.slopes = random_slopes(s.heads, 64);
               }});
  c.push_back({"EverythingOddDims", make_shape(2, 3, 65, 8, 2, 37, 24), 5.0f, [](Mods& m, S s) {
                 m.causal = true;
                 m.window_left = 30;
                 m.softcap = 10;
                 m.slopes = random_slopes(s.heads, 75);
                 m.sinks = random_sinks(s.heads, 76);
                 random_boolean(m, {s.batch, s.heads, s.q_len, s.kv_len}, 0.8, 77);
                 random_additive(m, {s.batch, 1, 1, s.kv_len}, 2.0, 78);
               }});
  c.push_back({"Everything", shape_of(2, 17, 129, 8, 2, 64), 5.0f, [](Mods& m, S s) {
                 m.causal = true;
                 m.window_left = 40;
                 m.softcap = 20;
                 m.slopes = multihead::alibi_slopes(s.heads);
                 m.sinks = random_sinks(s.heads, 71);
                 random_additive(m, {1, s.heads, s.q_len, s.kv_len}, 2.0, 72);
                 random_boolean(m, {s.batch, 1, 1, s.kv_len}, 0.8, 73);
                 use_documents(m, s, 74);
                 m.scale = 0.2f;
               }});
  return c;
}

class ModifierKernels : public ::testing::TestWithParam<ModCase> {};

TEST_P(ModifierKernels, EveryKernelMeetsTheStandard) {
  const ModCase& c = GetParam();
  const Inputs in = make_inputs(c.shape, std::hash<std::string>{}(c.name) % 100000, c.magnitude);
  for (int threads : {1, 2}) {
    SCOPED_TRACE(c.name + ", " + describe(c.shape) + ", threads " + std::to_string(threads));
    Mods m;
    c.set(m, c.shape);
    m.threads = threads;
    if (m.softcap > 0.0f) {
      const double scale = m.scale ? *m.scale : 1.0 / std::sqrt(double(c.shape.head_dim));
      EXPECT_GT(naive::max_abs_score(c.shape, in.q.data(), in.k.data(), scale),
                1.5 * m.softcap)
          << "the inputs do not reach the cap";
    }
    check_paths(in, m);
    if (HasFailure()) return;  // one failing configuration is enough to read
  }
}

INSTANTIATE_TEST_SUITE_P(SingleAndPairs, ModifierKernels,
                         ::testing::ValuesIn(single_and_pair_cases()),
                         [](const ::testing::TestParamInfo<ModCase>& info) {
                           return info.param.name;
                         });

// ---- Tile edges: lengths around the 64-key tiles, query counts, group sizes, dims ---------------

// Three mixes of modifiers, so that each edge meets ranges (causal, windows, both alignments),
// per-score modifiers (soft-cap, ALiBi, masks, a custom hook) and sinks.
void set_mix(int mix, Mods& m, const AttentionShape& s, std::uint64_t seed) {
  switch (mix) {
    case 0:  // Mistral-like: causal window, soft-cap, sinks
      m.causal = true;
      m.window_left = s.kv_len / 3;
      m.softcap = 3;
      m.sinks = random_sinks(s.heads, seed);
      break;
    case 1:  // ALiBi with padding and a broadcast additive mask
      m.slopes = multihead::alibi_slopes(s.heads);
      random_boolean(m, {s.batch, 1, 1, s.kv_len}, 0.85, seed);
      random_additive(m, {1, 1, s.q_len, s.kv_len}, 2.0, seed + 1);
      break;
    default:  // a two-sided top-left window with ALiBi and a custom mask and bias
      m.top_left = true;
      m.window_left = 9;
      m.window_right = 4;
      m.slopes = random_slopes(s.heads, seed);
      use_documents(m, s, seed + 2);
      break;
  }
}

using TileParam = std::tuple<int, int>;  // group size, mix

class ModifierTileEdges : public ::testing::TestWithParam<TileParam> {};

TEST_P(ModifierTileEdges, EveryKernelMeetsTheStandard) {
  const auto [group_size, mix] = GetParam();
  const Index groups = group_size == 16 ? 1 : 2;
  const Index dims[] = {64, 128, 40};
  int n = 0;
  for (Index kv_len : {63, 64, 65, 129})
    for (Index q_len : {Index(1), Index(2), Index(17), kv_len}) {
      const Index dim = dims[(n + mix) % 3];
      const AttentionShape shape =
          shape_of(1 + n % 2, q_len, kv_len, group_size * groups, groups, dim);
      const std::uint64_t seed = std::uint64_t(1000 * mix + 37 * n + group_size);
      Mods m;
      set_mix(mix, m, shape, seed);
      m.threads = 1 + n % 2;
      ++n;
      SCOPED_TRACE("mix " + std::to_string(mix) + ", " + describe(shape) + ", threads " +
                   std::to_string(m.threads));
      check_paths(make_inputs(shape, seed, 2.0f), m);
      if (HasFailure()) return;
    }
}

INSTANTIATE_TEST_SUITE_P(GroupSizesAndMixes, ModifierTileEdges,
                         ::testing::Combine(::testing::Values(1, 4, 16),
                                            ::testing::Values(0, 1, 2)),
                         [](const ::testing::TestParamInfo<TileParam>& info) {
                           return "group" + std::to_string(std::get<0>(info.param)) + "_mix" +
                                  std::to_string(std::get<1>(info.param));
                         });

// ---- Decode's split-KV: one sequence long enough to be split between two threads --------------

TEST(ModifierDecodeSplits, SplitCachesMeetTheStandard) {
  struct Split {
    const char* name;
    AttentionShape shape;
    std::function<void(Mods&, const AttentionShape&)> set;
  };
  const std::vector<Split> splits = {
      {"causal window, ALiBi, soft-cap, sinks", shape_of(1, 1, 1100, 8, 2, 64),
       [](Mods& m, const AttentionShape& s) {
         m.causal = true;
         m.window_left = 600;
         m.slopes = multihead::alibi_slopes(s.heads);
         m.softcap = 15;
         m.sinks = random_sinks(s.heads, 81);
       }},
      {"a narrow window: every split but the last sees nothing; sinks",
       shape_of(1, 2, 1300, 16, 1, 128),
       [](Mods& m, const AttentionShape& s) {
         m.causal = true;
         m.window_left = 10;
         m.sinks = random_sinks(s.heads, 82);
       }},
      {"boolean mask with holes, additive mask, custom hooks", shape_of(1, 2, 1100, 8, 2, 40),
       [](Mods& m, const AttentionShape& s) {
         random_boolean(m, {1, s.heads, s.q_len, s.kv_len}, 0.3, 83);
         random_additive(m, {1, 1, 1, s.kv_len}, 3.0, 84);
         use_documents(m, s, 85);
       }},
      {"custom sink hook, top-left window", shape_of(1, 1, 1200, 4, 4, 64),
       [](Mods& m, const AttentionShape& s) {
         use_sink_hook(m, s, 86);
         m.top_left = true;
         m.window_right = 700;
       }},
  };
  for (const Split& c : splits) {
    SCOPED_TRACE(std::string(c.name) + ", " + describe(c.shape));
    Mods m;
    c.set(m, c.shape);
    m.threads = 2;
    check_paths(make_inputs(c.shape, 90, 1.5f), m);
  }
}

// ---- Rows that see nothing: output 0 and lse −inf (or the sink), never NaN -------------------

TEST(ModifierEmptyRows, BooleanMaskRowsAllFalse) {
  const AttentionShape s = shape_of(2, 17, 129, 8, 2, 64);
  Mods m;
  set_boolean(m, {s.batch, s.heads, s.q_len, s.kv_len}, [](Index b, Index h, Index i, Index j) {
    return (b + h + i) % 5 != 0 && hash_unit(91, b, h, i, j) < 0.5;
  });
  for (bool with_sinks : {false, true}) {
    SCOPED_TRACE(with_sinks ? "with sinks" : "without sinks");
    if (with_sinks) m.sinks = random_sinks(s.heads, 92);
    EXPECT_GT(check_paths(make_inputs(s, 93), m), 0);
  }
}

TEST(ModifierEmptyRows, BottomRightCausalWithMoreQueriesThanKeys) {
  for (Index group_size : {1, 4, 16}) {
    const AttentionShape s = shape_of(1, 20, 5, group_size * (group_size == 16 ? 1 : 2),
                                      group_size == 16 ? 1 : 2, 64);
    SCOPED_TRACE(describe(s));
    Mods m;
    m.causal = true;
    EXPECT_EQ(check_paths(make_inputs(s, 94), m), s.heads * 15);
    m.sinks = random_sinks(s.heads, 95);
    m.threads = 2;
    check_paths(make_inputs(s, 94), m);
  }
}

TEST(ModifierEmptyRows, TopLeftWindowPastTheKeys) {
  // Top-left causal alone always leaves key 0 visible; a left window moves the first visible key
  // past the last one for queries i > kv_len - 1 + window_left.
  const AttentionShape s = shape_of(1, 40, 17, 4, 1, 64);
  for (bool causal : {false, true}) {
    SCOPED_TRACE(causal ? "causal" : "not causal");
    Mods m;
    m.top_left = true;
    m.causal = causal;
    m.window_left = 2;
    EXPECT_EQ(check_paths(make_inputs(s, 96), m), s.heads * (40 - 19));
  }
}

TEST(ModifierEmptyRows, DiagonalWindowHiddenByBooleanMask) {
  // window_left = window_right = 0 leaves each row its diagonal key; the mask hides exactly it.
  for (const AttentionShape& s : {shape_of(2, 17, 65, 8, 2, 64), shape_of(1, 1, 129, 16, 1, 128),
                                  shape_of(1, 129, 129, 4, 4, 40)}) {
    SCOPED_TRACE(describe(s));
    Mods m;
    m.window_left = m.window_right = 0;
    set_boolean(m, {1, 1, s.q_len, s.kv_len},
                [&](Index, Index, Index i, Index j) { return j != i + s.kv_len - s.q_len; });
    EXPECT_EQ(check_paths(make_inputs(s, 97), m), s.lse_size());
    m.sinks = random_sinks(s.heads, 98);  // then lse = the sink, −inf for head 3
    m.threads = 2;
    check_paths(make_inputs(s, 97), m);
  }
}

TEST(ModifierEmptyRows, CustomModifierHidesRows) {
  struct HideSomeRows {
    bool visible(const ScoreSite& at) const { return (at.head + at.query) % 3 != 0; }
  };
  const AttentionShape s = shape_of(2, 5, 100, 8, 2, 64);
  static const HideSomeRows hide{};
  Mods m;
  m.modifier = ModifierRef(hide);
  m.visible = [](Index, Index h, Index i, Index) { return (h + i) % 3 != 0; };
  EXPECT_GT(check_paths(make_inputs(s, 99), m), 0);
}

TEST(ModifierEmptyRows, AdditiveMinusInfinityOverAWholeRow) {
  // Every key of some rows at −inf: no finite score, so output 0 and lse −inf like a row that
  // sees nothing (and never NaN).
  const AttentionShape s = shape_of(2, 3, 129, 8, 2, 64);
  Mods m;
  set_additive(m, {s.batch, s.heads, s.q_len, s.kv_len}, [](Index b, Index h, Index i, Index) {
    return (b + h + i) % 4 == 0 ? -double(kInf) : 0.0;
  });
  check_paths(make_inputs(s, 100), m);
}

// ---- bf16 caches and a ragged paged batch ----------------------------------------------------

TEST(ModifierCaches, Bf16CachesMeetTheStandardOverTheStoredValues) {
  const std::vector<Path> bf16_paths = {Path::kv_cache_bf16, Path::paged_bf16};
  {
    const AttentionShape s = shape_of(2, 2, 129, 8, 2, 64);
    SCOPED_TRACE("causal window, ALiBi, soft-cap, sinks; " + describe(s));
    Mods m;
    set_mix(0, m, s, 101);
    m.slopes = multihead::alibi_slopes(s.heads);
    m.threads = 2;
    check_paths(make_inputs(s, 102, 2.0f), m, bf16_paths);
  }
  {
    const AttentionShape s = shape_of(2, 17, 65, 32, 2, 128);
    SCOPED_TRACE("masks, custom hooks; " + describe(s));
    Mods m;
    set_mix(2, m, s, 103);
    random_boolean(m, {s.batch, 1, s.q_len, s.kv_len}, 0.7, 104);
    check_paths(make_inputs(s, 105, 2.0f), m, bf16_paths);
  }
}

// Sequences of different lengths in one call: causal, windows and ALiBi align each query with
// its own sequence's end; masks are indexed [b, h, i, j] with kv_len the longest sequence.
TEST(ModifierCaches, RaggedPagedBatchAlignsEachSequence) {
  const Index heads = 8, groups = 2, d = 64, q_len = 2;
  const std::vector<Index> lengths = {1, 15, 16, 17, 64, 130};
  const Index batch = Index(lengths.size()), longest = 130;
  for (int variant = 0; variant < 2; ++variant) {
    SCOPED_TRACE(variant == 0 ? "bottom-right causal window, ALiBi, soft-cap, sinks, padding mask"
                              : "top-left two-sided window, additive mask, custom hooks");
    Mods m;
    m.threads = 2;
    if (variant == 0) {
      m.causal = true;
      m.window_left = 20;
      m.slopes = multihead::alibi_slopes(heads);
      m.softcap = 8;
      m.sinks = random_sinks(heads, 111);
      random_boolean(m, {batch, 1, 1, longest}, 0.8, 112);
    } else {
      m.top_left = true;
      m.window_left = 5;
      m.window_right = 40;
      random_additive(m, {batch, heads, q_len, longest}, 2.0, 113);
      // Sinks per (sequence, head), a key mask and a logit bias that depend on the batch index.
      struct Hooks {
        SinkPerSequence sinks;
        float sink(Index b, Index h) const { return sinks.sink(b, h); }
        bool visible(const ScoreSite& at) const { return (at.key + at.batch) % 7 != 3; }
        float logit(float x, const ScoreSite& at) const {
          return x + (0.25f * float(at.head) - 0.5f * float(at.batch));
        }
      };
      const auto hooks = std::make_shared<Hooks>(
          Hooks{{heads, naive::random_vector(batch * heads, 114, -1.0f, 2.0f)}});
      m.modifier = ModifierRef(*hooks);
      m.modifier_owner = hooks;
      m.sink = [hooks](Index b, Index h) { return double(hooks->sink(b, h)); };
      m.visible = [](Index b, Index, Index, Index j) { return (j + b) % 7 != 3; };
      m.logit = [](double x, Index b, Index h, Index, Index) {
        return x + double(0.25f * float(h) - 0.5f * float(b));
      };
    }
    const KernelOptions options = m.options();

    PagedKvCache<float> cache(64, 16, groups, d);
    std::vector<Inputs> inputs;
    std::vector<Index> ids;
    std::vector<float> q;
    for (std::size_t x = 0; x < lengths.size(); ++x) {
      inputs.push_back(make_inputs(shape_of(1, q_len, lengths[x], heads, groups, d), 120 + x));
      ids.push_back(cache.add_sequence());
      q.insert(q.end(), inputs.back().q.begin(), inputs.back().q.end());
    }
    for (Index t = 0; t < longest; t += 7)  // interleaved appends scatter the blocks
      for (std::size_t x = 0; x < lengths.size(); ++x) {
        const Index n = std::min<Index>(7, lengths[x] - t);
        if (n <= 0) continue;
        const AttentionShape& s = inputs[x].shape;
        cache.append(ids[x], token_range(inputs[x].k, s, d, 0, 1, t, n),
                     token_range(inputs[x].v, s, d, 0, 1, t, n));
      }
    LibResult lib;
    lib.o.assign(std::size_t(batch * q_len * heads * d), kNaN);
    lib.lse.assign(std::size_t(batch * heads * q_len), kNaN);
    multihead::decode_attention(
        TensorView<const float>(q.data(), Index(q.size()), batch, q_len, heads, d), cache,
        Span<const Index>{ids.data(), batch},
        TensorView<float>(lib.o.data(), Index(lib.o.size()), batch, q_len, heads, d), options,
        LseOutput{lib.lse.data(), Index(lib.lse.size())});

    // Each sequence against the oracle as a batch of one: its slice of the masks, its batch
    // index in the hooks.
    const naive::Modifiers all = m.oracle();
    for (std::size_t x = 0; x < lengths.size(); ++x) {
      SCOPED_TRACE("sequence of " + std::to_string(lengths[x]) + " tokens");
      const Index b = Index(x), length = lengths[x];
      naive::Modifiers one = all;
      const auto slice = [&](const auto& mask, auto& out) {
        if (mask.empty()) return;
        out.values.clear();
        out.batch = 1;
        out.kv_len = length;
        for (Index h = 0; h < mask.heads; ++h)
          for (Index i = 0; i < mask.q_len; ++i)
            for (Index j = 0; j < length; ++j) out.values.push_back(mask.at(b, h, i, j));
      };
      slice(all.additive_mask, one.additive_mask);
      slice(all.boolean_mask, one.boolean_mask);
      if (all.visible)
        one.visible = [&all, b](Index, Index h, Index i, Index j) {
          return all.visible(b, h, i, j);
        };
      if (all.logit)
        one.logit = [&all, b](double s, Index, Index h, Index i, Index j) {
          return all.logit(s, b, h, i, j);
        };
      if (all.sink) one.sink = [&all, b](Index, Index h) { return all.sink(b, h); };
      const Oracle oracle = modified_oracle(inputs[x], one);
      LibResult part;
      const std::size_t per_o = std::size_t(q_len * heads * d);
      const std::size_t per_lse = std::size_t(heads * q_len);
      part.o.assign(lib.o.begin() + long(x * per_o), lib.o.begin() + long((x + 1) * per_o));
      part.lse.assign(lib.lse.begin() + long(x * per_lse),
                      lib.lse.begin() + long((x + 1) * per_lse));
      expect_meets_standard(part, oracle);
      expect_empty_rows_exact(inputs[x].shape, naive::rows_seeing_nothing(inputs[x].shape, one),
                              oracle, part);
    }
  }
}

// ---- Bad arguments: std::invalid_argument before anything is written -------------------------

TEST(ModifierErrors, BadModifiersThrowAndWriteNothing) {
  const AttentionShape s = shape_of(2, 3, 20, 4, 2, 8);
  const Inputs in = make_inputs(s, 130);
  struct Bad {
    const char* name;
    std::function<void(Mods&)> set;
  };
  const std::vector<Bad> bad = {
      {"softcap -1", [](Mods& m) { m.softcap = -1.0f; }},
      {"softcap NaN", [](Mods& m) { m.softcap = kNaN; }},
      {"softcap +inf", [](Mods& m) { m.softcap = kInf; }},
      {"alibi_slopes of heads - 1", [](Mods& m) { m.slopes.assign(3, 0.5f); }},
      {"alibi_slopes of heads + 1", [](Mods& m) { m.slopes.assign(5, 0.5f); }},
      {"alibi_slopes with a NaN", [](Mods& m) { m.slopes = {0.5f, 0.25f, kNaN, 0.1f}; }},
      {"alibi_slopes with -inf", [](Mods& m) { m.slopes = {0.5f, -kInf, 0.2f, 0.1f}; }},
      {"sinks of heads - 1", [](Mods& m) { m.sinks.assign(3, 0.0f); }},
      {"sinks of heads * 2", [](Mods& m) { m.sinks.assign(8, 0.0f); }},
      {"sinks with a NaN", [](Mods& m) { m.sinks = {0.0f, kNaN, 1.0f, 2.0f}; }},
      {"sinks with +inf", [](Mods& m) { m.sinks = {0.0f, 1.0f, kInf, 2.0f}; }},
      {"window_left -2", [](Mods& m) { m.window_left = -2; }},
      {"window_right -2", [](Mods& m) { m.window_right = -2; }},
      {"additive_mask batch 3 of 2", [](Mods& m) { random_additive(m, {3, 1, 1, 20}, 1, 1); }},
      {"additive_mask heads 2 of 4", [](Mods& m) { random_additive(m, {1, 2, 1, 20}, 1, 1); }},
      {"additive_mask q_len 2 of 3", [](Mods& m) { random_additive(m, {1, 1, 2, 20}, 1, 1); }},
      {"additive_mask kv_len 19 of 20", [](Mods& m) { random_additive(m, {2, 4, 3, 19}, 1, 1); }},
      {"additive_mask kv_len 1 of 20", [](Mods& m) { random_additive(m, {1, 1, 1, 1}, 1, 1); }},
      {"boolean_mask batch 4 of 2", [](Mods& m) { random_boolean(m, {4, 1, 1, 20}, 0.5, 1); }},
      {"boolean_mask heads 8 of 4", [](Mods& m) { random_boolean(m, {1, 8, 1, 20}, 0.5, 1); }},
      {"boolean_mask q_len 6 of 3", [](Mods& m) { random_boolean(m, {1, 1, 6, 20}, 0.5, 1); }},
      {"boolean_mask kv_len 21 of 20", [](Mods& m) { random_boolean(m, {1, 1, 1, 21}, 0.5, 1); }},
  };
  const std::vector<Path> paths = {Path::reference, Path::fused,    Path::decode,
                                   Path::kv_cache,  Path::paged,    Path::kv_cache_bf16,
                                   Path::paged_bf16};
  for (Path path : paths) {
    SCOPED_TRACE(path_name(path));
    for (const Bad& b : bad) {
      SCOPED_TRACE(b.name);
      Mods m;
      b.set(m);
      LibResult r;
      r.o.assign(std::size_t(s.o_size()), kSentinel);
      r.lse.assign(std::size_t(s.lse_size()), kSentinel);
      EXPECT_THROW(run_into(path, in, m.options(), r), std::invalid_argument);
      EXPECT_EQ(std::count(r.o.begin(), r.o.end(), kSentinel), s.o_size()) << "o was written";
      EXPECT_EQ(std::count(r.lse.begin(), r.lse.end(), kSentinel), s.lse_size())
          << "lse was written";
    }
    // The edges of what is allowed: a −inf sink, broadcast masks, windows of 0, a zero slope.
    Mods ok;
    ok.sinks = {0.0f, -kInf, 1.0f, -kInf};
    ok.slopes = {0.0f, 0.5f, -0.5f, 1.0f};
    ok.window_left = ok.window_right = 0;
    random_additive(ok, {2, 1, 3, 20}, 1, 2);
    random_boolean(ok, {1, 4, 1, 20}, 0.5, 2);
    LibResult r = run_path(path, in, ok.options());
    EXPECT_FALSE(naive::any_nan(r.o));
    EXPECT_FALSE(naive::any_nan(r.lse));
  }
}

// ---- alibi_slopes ------------------------------------------------------------------------------

TEST(AlibiSlopes, PowerOfTwoHeadCounts) {
  const std::vector<float> eight = multihead::alibi_slopes(8);
  ASSERT_EQ(eight.size(), 8u);
  for (int i = 0; i < 8; ++i) EXPECT_EQ(eight[std::size_t(i)], std::ldexp(1.0f, -(i + 1))) << i;
  const std::vector<float> sixteen = multihead::alibi_slopes(16);
  ASSERT_EQ(sixteen.size(), 16u);
  for (int i = 0; i < 16; ++i)
    EXPECT_FLOAT_EQ(sixteen[std::size_t(i)], float(std::exp2(-0.5 * (i + 1)))) << i;
  const std::vector<float> one = multihead::alibi_slopes(1);
  ASSERT_EQ(one.size(), 1u);
  EXPECT_EQ(one[0], 1.0f / 256.0f);
}

TEST(AlibiSlopes, OtherCountsTakeEveryOtherSlopeOfTheNextPowerOfTwo) {
  // 12 heads: the 8-head slopes, then 2^-0.5, 2^-1.5, 2^-2.5, 2^-3.5 (entries 0, 2, 4, 6 of the
  // 16-head series).
  const std::vector<float> twelve = multihead::alibi_slopes(12);
  ASSERT_EQ(twelve.size(), 12u);
  for (int i = 0; i < 8; ++i) EXPECT_EQ(twelve[std::size_t(i)], std::ldexp(1.0f, -(i + 1))) << i;
  for (int i = 0; i < 4; ++i)
    EXPECT_FLOAT_EQ(twelve[std::size_t(8 + i)], float(std::exp2(-0.5 - i))) << 8 + i;
  // 3 heads: 2^-4, 2^-8, then 2^-2 (BLOOM's get_slopes).
  const std::vector<float> three = multihead::alibi_slopes(3);
  ASSERT_EQ(three.size(), 3u);
  EXPECT_EQ(three[0], 1.0f / 16.0f);
  EXPECT_EQ(three[1], 1.0f / 256.0f);
  EXPECT_EQ(three[2], 0.25f);
}

TEST(AlibiSlopes, NonPositiveHeadCountsThrow) {
  EXPECT_THROW(multihead::alibi_slopes(0), std::invalid_argument);
  EXPECT_THROW(multihead::alibi_slopes(-4), std::invalid_argument);
}

}  // namespace
