// The serving family (see serve_bench.hpp): a continuous batch's pool and its decode step.
#include "serve_bench.hpp"

#include <benchmark/benchmark.h>

#include <multihead/multihead.hpp>

#include <algorithm>
#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "attention_buffers.hpp"
#include "peak.hpp"
#include "registration.hpp"
#include "roofline.hpp"

namespace bench {
namespace {

constexpr std::int64_t kSequences = 32, kHeads = 32, kGroups = 8, kDim = 128, kBlock = 16;

// 32 sequences of lengths drawn once (fixed seed) from [shortest, longest], filled with random
// K and V into a PagedKvCache whose free blocks were first scattered (registration.hpp), then
// read as the server's own memory: the cache's view() and int32 block
// tables kept as an engine keeps them.
class MixedBatch {
 public:
  MixedBatch(std::int64_t shortest, std::int64_t longest)
      : generator_(20261207), q_(kSequences * kHeads * kDim), o_(kSequences * kHeads * kDim) {
    std::uniform_int_distribution<std::int64_t> length(shortest, longest);
    std::int64_t blocks = 0;
    for (std::int64_t b = 0; b < kSequences; ++b) {
      lengths_.push_back(std::int32_t(length(generator_)));
      blocks += (lengths_.back() + kBlock - 1) / kBlock;
    }
    cache_ = std::make_unique<multihead::PagedKvCache<multihead::bf16>>(blocks, kBlock, kGroups,
                                                                        kDim);
    scatter_free_blocks(*cache_, generator_);
    std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
    std::vector<float> k(std::size_t(256 * kGroups * kDim)), v(k.size());
    std::vector<std::int64_t> ids;
    for (std::int64_t b = 0; b < kSequences; ++b) {
      const auto seq = cache_->add_sequence();
      for (std::int64_t t = 0; t < lengths_[std::size_t(b)]; t += 256) {
        const std::int64_t n = std::min<std::int64_t>(256, lengths_[std::size_t(b)] - t);
        for (float& x : k) x = uniform(generator_);
        for (float& x : v) x = uniform(generator_);
        const std::int64_t size = n * kGroups * kDim;
        cache_->append(seq, {k.data(), size, 1, n, kGroups, kDim},
                       {v.data(), size, 1, n, kGroups, kDim});
      }
      ids.push_back(seq);
    }
    // The tables as an engine keeps them: int32, [sequences, max_blocks].
    for (const std::int64_t seq : ids)
      max_blocks_ = std::max<std::int64_t>(max_blocks_, std::int64_t(cache_->block_table(seq).size()));
    for (const std::int64_t seq : ids) {
      const auto& t = cache_->block_table(seq);
      table32_.insert(table32_.end(), t.begin(), t.end());
      table32_.resize(table32_.size() + std::size_t(max_blocks_) - t.size(), 0);
    }
    std::generate(q_.data(), q_.data() + q_.size(), [&] { return uniform(generator_); });
    std::fill(o_.data(), o_.data() + o_.size(), 0.0f);
  }

  std::int64_t total_tokens() const {
    std::int64_t n = 0;
    for (std::int32_t l : lengths_) n += l;
    return n;
  }

  // Every sequence's step in one call.
  void one_call(const multihead::KernelOptions& options) {
    multihead::decode_attention(queries(0, kSequences), cache_->view(), sequences(0, kSequences),
                                outputs(0, kSequences), options);
  }
  // The same steps, a call per sequence.
  void per_sequence(const multihead::KernelOptions& options) {
    for (std::int64_t b = 0; b < kSequences; ++b)
      multihead::decode_attention(queries(b, 1), cache_->view(), sequences(b, 1), outputs(b, 1),
                                  options);
  }

 private:
  multihead::PagedSequences<std::int32_t> sequences(std::int64_t first, std::int64_t count) const {
    return multihead::PagedSequences<std::int32_t>::from_block_table(
        {table32_.data() + first * max_blocks_, count * max_blocks_}, max_blocks_,
        {lengths_.data() + first, count});
  }
  multihead::TensorView<const float> queries(std::int64_t first, std::int64_t count) const {
    const std::int64_t row = kHeads * kDim;
    return {q_.data() + first * row, count * row, count, 1, kHeads, kDim};
  }
  multihead::TensorView<float> outputs(std::int64_t first, std::int64_t count) {
    const std::int64_t row = kHeads * kDim;
    return {o_.data() + first * row, count * row, count, 1, kHeads, kDim};
  }

  std::mt19937 generator_;
  std::vector<std::int32_t> lengths_, table32_;
  std::int64_t max_blocks_ = 0;
  std::unique_ptr<multihead::PagedKvCache<multihead::bf16>> cache_;
  AlignedFloats q_, o_;
};

// A chunk of a long prompt's prefill as a server runs it: 512 new tokens (bf16 queries, their
// K/V already appended) over a sequence of 4096 in a bf16 pool of 16-token blocks in random
// order, causal; beside it, the same attention by the fused kernel over contiguous K/V.
class PrefillChunk {
 public:
  static constexpr std::int64_t kChunk = 512, kLength = 4096;

  PrefillChunk()
      : cache_(kLength / kBlock + 16, kBlock, kGroups, kDim),
        q_(kChunk * kHeads * kDim), o_(q_.size()), k_(kLength * kGroups * kDim), v_(k_.size()) {
    std::mt19937 generator(512);
    scatter_free_blocks(cache_, generator);
    std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
    std::vector<float> k(k_.size()), v(k.size()), q(q_.size());
    for (float& x : k) x = uniform(generator);
    for (float& x : v) x = uniform(generator);
    for (float& x : q) x = uniform(generator);
    const std::int64_t seq = cache_.add_sequence(), size = std::int64_t(k.size());
    cache_.append(seq, {k.data(), size, 1, kLength, kGroups, kDim},
                  {v.data(), size, 1, kLength, kGroups, kDim});
    multihead::convert(k.data(), k_.data(), size);
    multihead::convert(v.data(), v_.data(), size);
    multihead::convert(q.data(), q_.data(), std::int64_t(q.size()));
    for (const std::int64_t id : cache_.block_table(seq)) table_.push_back(std::int32_t(id));
  }

  void batch(const multihead::KernelOptions& options) {
    const std::int32_t cu[] = {0, std::int32_t(kChunk)}, length = std::int32_t(kLength);
    multihead::batch_attention(
        queries(), multihead::Span<const std::int32_t>{cu, 2}, cache_.view(),
        multihead::PagedSequences<std::int32_t>::from_block_table(
            {table_.data(), std::int64_t(table_.size())}, std::int64_t(table_.size()),
            {&length, 1}),
        outputs(), options);
  }
  void fused(const multihead::KernelOptions& options) {
    const std::int64_t size = std::int64_t(k_.size());
    multihead::fused_attention(
        queries(), multihead::TensorView<const bf16>(k_.data(), size, 1, kLength, kGroups, kDim),
        multihead::TensorView<const bf16>(v_.data(), size, 1, kLength, kGroups, kDim), outputs(),
        options);
  }

  // Q·Kᵀ and P·V over the keys each query sees (causal, the chunk the last of the sequence).
  static double flops() {
    const double keys = double(kChunk) * double(kLength - kChunk) +
                        double(kChunk) * double(kChunk + 1) / 2.0;
    return 4.0 * kHeads * kDim * keys;
  }
  // K and V read once, q read and o written, all bf16.
  static double bytes() { return 2.0 * (2.0 * kLength * kGroups * kDim + 2.0 * kChunk * kHeads * kDim); }

 private:
  using bf16 = multihead::bf16;
  multihead::TensorView<const bf16> queries() const {
    return {q_.data(), std::int64_t(q_.size()), 1, kChunk, kHeads, kDim};
  }
  multihead::TensorView<bf16> outputs() {
    return {o_.data(), std::int64_t(o_.size()), 1, kChunk, kHeads, kDim};
  }

  multihead::PagedKvCache<bf16> cache_;
  std::vector<std::int32_t> table_;
  std::vector<bf16> q_, o_, k_, v_;
};

void run_chunk(benchmark::State& state, bool batch, int threads) {
  const MachinePeak& peak = machine_peak(threads);
  PrefillChunk& chunk =
      last_problem<PrefillChunk>("serve/chunk", [] { return std::make_unique<PrefillChunk>(); });
  multihead::KernelOptions options;
  options.threads = threads;
  options.causal = true;
  const double seconds = timed_loop(state, [&] {
    if (batch)
      chunk.batch(options);
    else
      chunk.fused(options);
  });
  report_roofline(state, {PrefillChunk::flops(), PrefillChunk::bytes(), true}, peak, seconds);
}

// A family of the benchmark: its name, and its sequences' shortest and longest lengths.
struct Mix {
  const char* name;
  std::int64_t shortest, longest;
};

void run_serve(benchmark::State& state, Mix mix, bool one_call, int threads) {
  // The pool is read in blocks of kBlock tokens' K (or V) rows, in random order.
  constexpr std::int64_t block_bytes = kBlock * kGroups * kDim * sizeof(multihead::bf16);
  const MachinePeak& peak = machine_peak_scattered(threads, block_bytes);
  MixedBatch& batch = last_problem<MixedBatch>(mix.name, [&] {
    return std::make_unique<MixedBatch>(mix.shortest, mix.longest);
  });
  multihead::KernelOptions options;
  options.threads = threads;
  const double seconds = timed_loop(state, [&] {
    if (one_call)
      batch.one_call(options);
    else
      batch.per_sequence(options);
  });
  const double tokens = double(batch.total_tokens());
  report_roofline(state,
                  {4.0 * kHeads * kDim * tokens,
                   2.0 * kGroups * kDim * 2.0 * tokens + 2.0 * kSequences * kHeads * kDim * 4.0},
                  peak, seconds);
}

}  // namespace

void register_serve_benchmarks() {
  for (const Mix mix : {Mix{"serve/mixed", 100, 8000}, Mix{"serve/mixed-short", 16, 512}})
    for (const bool one_call : {true, false})
      for (int threads : thread_counts())
        configure(benchmark::RegisterBenchmark(
            with_threads(std::string(mix.name) + (one_call ? "/one-call" : "/per-sequence"),
                         threads)
                .c_str(),
            run_serve, mix, one_call, threads));
  for (const bool batch : {true, false})
    for (int threads : thread_counts())
      configure(benchmark::RegisterBenchmark(
          with_threads(batch ? "serve/chunk/paged-batch" : "serve/chunk/fused-contiguous", threads)
              .c_str(),
          run_chunk, batch, threads));
}

}  // namespace bench
