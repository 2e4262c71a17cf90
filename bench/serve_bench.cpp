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

// A family of the benchmark: its name, and its sequences' shortest and longest lengths.
struct Mix {
  const char* name;
  std::int64_t shortest, longest;
};

void run_serve(benchmark::State& state, Mix mix, bool one_call, int threads) {
  const MachinePeak& peak = machine_peak(threads);
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
}

}  // namespace bench
