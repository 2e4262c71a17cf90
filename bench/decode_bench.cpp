// The decode family (see decode_bench.hpp): the problems, their caches and the timed step.
#include "decode_bench.hpp"

#include <benchmark/benchmark.h>

#include <multihead/multihead.hpp>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

#include "attention_buffers.hpp"
#include "peak.hpp"
#include "registration.hpp"
#include "roofline.hpp"
#include "shapes.hpp"

namespace bench {
namespace {

using multihead::bf16;
using multihead::fp16;

// Appends shape.lkv tokens of uniform random K and V in [-1, 1) to `batch` sequences at once,
// through append(k, v) with k and v [batch, n, groups, d]. In chunks of 256 tokens, so the
// staging buffers stay small (1 MiB each for D1) however long the cache.
template <class Append>
void fill_kv(const Shape& shape, std::int64_t batch, std::mt19937& generator, Append&& append) {
  constexpr std::int64_t kChunk = 256;
  const std::int64_t row = shape.groups * shape.d;
  std::vector<float> k(static_cast<std::size_t>(batch * kChunk * row)), v(k.size());
  std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
  for (std::int64_t t = 0; t < shape.lkv; t += kChunk) {
    const std::int64_t n = std::min(kChunk, shape.lkv - t);
    const std::int64_t size = batch * n * row;
    for (std::int64_t i = 0; i < size; ++i) k[std::size_t(i)] = uniform(generator);
    for (std::int64_t i = 0; i < size; ++i) v[std::size_t(i)] = uniform(generator);
    append(multihead::TensorView<const float>(k.data(), size, batch, n, shape.groups, shape.d),
           multihead::TensorView<const float>(v.data(), size, batch, n, shape.groups, shape.d));
  }
}

// The data of one decode benchmark: q (uniform random), o (zeroed) and, in the derived class, a
// cache holding shape.lkv tokens per sequence. Built outside any timed loop; step() allocates
// nothing of its own.
class DecodeProblem {
 public:
  explicit DecodeProblem(const Shape& shape)
      : shape_(shape), generator_(20240601), q_(shape.q_elements()), o_(shape.q_elements()) {
    std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
    std::generate(q_.data(), q_.data() + q_.size(), [&] { return uniform(generator_); });
    std::fill(o_.data(), o_.data() + o_.size(), 0.0f);
  }
  virtual ~DecodeProblem() = default;
  DecodeProblem(const DecodeProblem&) = delete;
  DecodeProblem& operator=(const DecodeProblem&) = delete;

  // One generation step: every sequence's query token attends over its whole cache.
  virtual void step(const multihead::KernelOptions& options) = 0;

 protected:
  multihead::TensorView<const float> q() const {
    return {q_.data(), q_.size(), shape_.batch, shape_.lq, shape_.heads, shape_.d};
  }
  multihead::TensorView<float> o() const {
    return {o_.data(), o_.size(), shape_.batch, shape_.lq, shape_.heads, shape_.d};
  }

  Shape shape_;
  std::mt19937 generator_;  // seeded: every run sees the same data

 private:
  AlignedFloats q_, o_;
};

// The cache of a model server that keeps a fixed batch: one KvCache, all sequences one length.
template <class Storage>
class ContiguousProblem final : public DecodeProblem {
 public:
  explicit ContiguousProblem(const Shape& shape)
      : DecodeProblem(shape), cache_(shape.batch, shape.lkv, shape.groups, shape.d) {
    fill_kv(shape, shape.batch, generator_,
            [&](const auto& k, const auto& v) { cache_.append(k, v); });
  }

  void step(const multihead::KernelOptions& options) override {
    multihead::decode_attention(q(), cache_, o(), options);
  }

 private:
  multihead::KvCache<Storage> cache_;
};

// The cache of a server that batches sequences as they come (vLLM's PagedAttention): blocks of
// kBlockSize tokens taken from a shared pool, one sequence per batch entry. kView: the same
// pool read as an engine's own memory is (paged_view.hpp): the cache's view() with the block
// tables copied once into an int32 FlashAttention-style table, as an engine keeps them.
template <class Storage, bool kView = false>
class PagedProblem final : public DecodeProblem {
 public:
  static constexpr std::int64_t kBlockSize = 16;

  explicit PagedProblem(const Shape& shape)
      : DecodeProblem(shape),
        cache_(shape.batch * ((shape.lkv + kBlockSize - 1) / kBlockSize), kBlockSize, shape.groups,
               shape.d) {
    scatter_free_blocks(cache_, generator_);
    for (std::int64_t b = 0; b < shape.batch; ++b) {
      const auto seq = cache_.add_sequence();
      fill_kv(shape, 1, generator_,
              [&](const auto& k, const auto& v) { cache_.append(seq, k, v); });
      sequences_.push_back(seq);
    }
    const std::int64_t row = (shape.lkv + kBlockSize - 1) / kBlockSize;
    for (const std::int64_t seq : sequences_) {
      const auto& blocks = cache_.block_table(seq);
      table_.insert(table_.end(), blocks.begin(), blocks.end());
      table_.resize(table_.size() + std::size_t(row) - blocks.size(), 0);
      lengths_.push_back(std::int32_t(cache_.length(seq)));
    }
  }

  void step(const multihead::KernelOptions& options) override {
    if constexpr (kView) {
      const auto sequences = multihead::PagedSequences<std::int32_t>::from_block_table(
          {table_.data(), std::int64_t(table_.size())},
          std::int64_t(table_.size() / lengths_.size()),
          {lengths_.data(), std::int64_t(lengths_.size())});
      multihead::decode_attention(q(), cache_.view(), sequences, o(), options);
    } else {
      const multihead::Span<const std::int64_t> sequences{
          sequences_.data(), static_cast<std::int64_t>(sequences_.size())};
      multihead::decode_attention(q(), cache_, sequences, o(), options);
    }
  }

 private:
  multihead::PagedKvCache<Storage> cache_;
  std::vector<std::int64_t> sequences_;
  std::vector<std::int32_t> table_, lengths_;  // kView: the tables as an engine keeps them
};

template <class Storage>
using PagedViewProblem = PagedProblem<Storage, true>;

// A KvCache<bf16> read by bf16 queries into bf16 outputs (the same values as the fp32 problem's,
// rounded): on the bf16 dot product where the CPU has one.
class Bf16QueryProblem final : public DecodeProblem {
 public:
  explicit Bf16QueryProblem(const Shape& shape)
      : DecodeProblem(shape),
        cache_(shape.batch, shape.lkv, shape.groups, shape.d),
        q16_(std::size_t(shape.q_elements())),
        o16_(std::size_t(shape.q_elements())) {
    fill_kv(shape, shape.batch, generator_,
            [&](const auto& k, const auto& v) { cache_.append(k, v); });
    multihead::convert(q().data(), q16_.data(), shape.q_elements());
  }

  void step(const multihead::KernelOptions& options) override {
    const Shape& s = shape_;
    multihead::decode_attention(
        multihead::TensorView<const bf16>(q16_.data(), s.q_elements(), s.batch, s.lq, s.heads, s.d),
        cache_, multihead::TensorView<bf16>(o16_.data(), s.q_elements(), s.batch, s.lq, s.heads, s.d),
        options);
  }

 private:
  multihead::KvCache<bf16> cache_;
  std::vector<bf16> q16_, o16_;
};

// K and V in the head-major layout [batch, groups, tokens, d] (PyTorch's usual cache layout),
// passed as strided views: each group's rows are contiguous, a token's groups far apart.
template <class Storage>
class HeadMajorProblem final : public DecodeProblem {
  using Buffer = multihead::detail::AlignedBuffer<Storage>;

 public:
  explicit HeadMajorProblem(const Shape& shape)
      : DecodeProblem(shape), k_(size(shape)), v_(size(shape)) {
    std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
    for (Storage* x : {k_.data(), v_.data()})
      for (std::int64_t i = 0; i < size(shape); ++i)
        x[i] = multihead::from_float<Storage>(uniform(generator_));
  }

  void step(const multihead::KernelOptions& options) override {
    multihead::decode_attention(q(), view(k_), view(v_), o(), options);
  }

 private:
  static std::int64_t size(const Shape& s) { return s.batch * s.groups * s.lkv * s.d; }
  multihead::TensorView<const Storage> view(const Buffer& x) const {
    const Shape& s = shape_;
    return multihead::TensorView<const Storage>::strided(x.data(), size(s), s.batch, s.lkv,
                                                         s.groups, s.d, s.groups * s.lkv * s.d,
                                                         s.d, s.lkv * s.d);
  }

  Buffer k_, v_;
};

// One benchmark of the family, all but the thread count.
struct DecodeCase {
  std::string name;  // between "decode/" and "/threads:<n>"
  Shape shape;
  double kv_value_bytes;  // bytes per cached value (bytes_per_value)
  std::unique_ptr<DecodeProblem> (*make)(const Shape&);
  bool bf16_queries = false;  // q and o in bf16, the flops on the bf16 dot product
};

template <template <class> class Problem, class Storage>
DecodeCase decode_case(const std::string& family, const Shape& shape,
                       const std::string& suffix = "") {
  return {family + "/" + storage_name<Storage>() + suffix, shape, bytes_per_value<Storage>(),
          [](const Shape& s) -> std::unique_ptr<DecodeProblem> {
            return std::make_unique<Problem<Storage>>(s);
          }};
}

void run_decode(benchmark::State& state, const DecodeCase& c, int threads) {
  // Both untimed: the peaks are measured once per thread count, the cache once per problem.
  const MachinePeak& peak = machine_peak(threads);
  // The largest, D1-len/fp32/L:65536, holds 512 MiB.
  DecodeProblem& problem = last_problem<DecodeProblem>(c.name, [&] { return c.make(c.shape); });
  multihead::KernelOptions options;
  options.threads = threads;

  const double seconds = timed_loop(state, [&] { problem.step(options); });
  report_roofline(state,
                  {c.shape.flops(), c.shape.bytes(c.kv_value_bytes, c.bf16_queries ? 2 : 4),
                   c.bf16_queries},
                  peak, seconds);
}

const Shape& decode_shape(const std::string& name) {
  const auto& shapes = decode_shapes();
  return *std::find_if(shapes.begin(), shapes.end(),
                       [&](const Shape& s) { return s.name == name; });
}

// D1-len/<cache>/L:<L>: D1 with L tokens of context. From 1024, where the cache (8 MiB in fp32)
// may sit in the last-level cache, to 65536 (512 MiB), each 4 times the last.
template <class Storage>
void add_length_sweep(std::vector<DecodeCase>& cases) {
  for (const std::int64_t length : {1024, 4096, 16384, 65536}) {
    Shape shape = decode_shape("D1");
    shape.lkv = length;
    cases.push_back(
        decode_case<ContiguousProblem, Storage>("D1-len", shape, "/L:" + std::to_string(length)));
  }
}

}  // namespace

void register_decode_benchmarks() {
  const Shape& d1 = decode_shape("D1");
  const Shape& d2 = decode_shape("D2");
  // D1-paged16 and D1-head-major right after D1, so that a run filtered to decode/D1 lists them
  // side by side.
  std::vector<DecodeCase> cases = {
      decode_case<ContiguousProblem, float>("D1", d1),
      decode_case<ContiguousProblem, bf16>("D1", d1),
      decode_case<ContiguousProblem, fp16>("D1", d1),
      decode_case<ContiguousProblem, multihead::q8>("D1", d1),
      decode_case<ContiguousProblem, multihead::q4>("D1", d1),
      decode_case<PagedProblem, float>("D1-paged16", d1),
      decode_case<PagedProblem, bf16>("D1-paged16", d1),
      decode_case<PagedProblem, fp16>("D1-paged16", d1),
      decode_case<PagedProblem, multihead::q8>("D1-paged16", d1),
      decode_case<PagedViewProblem, float>("D1-paged16-view", d1),
      decode_case<PagedViewProblem, bf16>("D1-paged16-view", d1),
      decode_case<HeadMajorProblem, float>("D1-head-major", d1),
      decode_case<HeadMajorProblem, bf16>("D1-head-major", d1),
  };
  add_length_sweep<float>(cases);
  add_length_sweep<bf16>(cases);
  cases.push_back(decode_case<ContiguousProblem, float>("D2", d2));
  cases.push_back(decode_case<ContiguousProblem, bf16>("D2", d2));
  cases.push_back(decode_case<ContiguousProblem, multihead::q8>("D2", d2));
  cases.push_back(decode_case<ContiguousProblem, multihead::q4>("D2", d2));
  cases.push_back(decode_case<PagedProblem, float>("D2-paged16", d2));
  cases.push_back(decode_case<PagedProblem, bf16>("D2-paged16", d2));
  // bf16 queries over a bf16 cache, beside fp32 queries over it: MQA's D2, and C1, a prefill
  // chunk of 512 tokens over 4096 cached ones (what a server's chunked prefill runs).
  const Shape& c1 = decode_shape("C1");
  cases.push_back(decode_case<ContiguousProblem, bf16>("C1", c1));
  for (const Shape* shape : {&d2, &c1})
    cases.push_back({std::string(shape->name) + "/bf16-queries", *shape, 2.0,
                     [](const Shape& s) -> std::unique_ptr<DecodeProblem> {
                       return std::make_unique<Bf16QueryProblem>(s);
                     },
                     true});

  for (const DecodeCase& c : cases)
    for (int threads : thread_counts())
      configure(benchmark::RegisterBenchmark(with_threads("decode/" + c.name, threads).c_str(),
                                             run_decode, c, threads));
}

}  // namespace bench
