// What every benchmark of multihead_bench shares: the thread counts, the name suffix and the
// timing settings.
#pragma once

#include <benchmark/benchmark.h>

#include <multihead/multihead.hpp>

#include <algorithm>
#include <cstdint>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

namespace bench {

// Each benchmark runs on one core and on two, the cores of the machine the figures are taken on
// (add more counts here for bigger machines). Threads are OpenMP threads inside the measured
// code, not Google Benchmark's ->Threads(), which would run several copies of the benchmark.
inline std::vector<int> thread_counts() {
#ifdef _OPENMP
  return {1, 2};
#else
  return {1};  // without OpenMP every "parallel" region runs on the calling thread
#endif
}

// "<path>/threads:<n>", e.g. "reference/P1/threads:2".
inline std::string with_threads(const std::string& path, int threads) {
  return path + "/threads:" + std::to_string(threads);
}

// The <cache> part of a benchmark name: the storage of a KV or latent cache.
template <class Storage>
const char* storage_name() {
  if constexpr (std::is_same_v<Storage, float>)
    return "fp32";
  else if constexpr (std::is_same_v<Storage, multihead::bf16>)
    return "bf16";
  else if constexpr (std::is_same_v<Storage, multihead::q8>)
    return "int8";
  else if constexpr (std::is_same_v<Storage, multihead::q4>)
    return "int4";
  else
    return "fp16";
}

// Bytes a cached value takes in Storage, its share of a quantized block's scales included.
template <class Storage>
double bytes_per_value() {
  if constexpr (multihead::is_quantized_v<Storage>)
    return double(sizeof(Storage)) / Storage::kValues;
  else
    return double(sizeof(Storage));
}

// The problem (a filled cache and its buffers) named `name`, built by make() on first use and
// kept from one call to the next: a benchmark is called several times and its thread counts
// follow each other, while filling a cache takes up to seconds. Only the last one of each
// Problem type is kept (the old one is freed before the new one is built), so memory stays at
// one cache's worth per family.
template <class Problem, class Make>
Problem& last_problem(const std::string& name, Make&& make) {
  static std::unique_ptr<Problem> cached;
  static std::string cached_name;
  if (!cached || cached_name != name) {
    cached.reset();
    cached = make();
    cached_name = name;
  }
  return *cached;
}

// Leaves a paged cache's free list in random order, as in a pool that has served other
// sequences: a fresh pool hands out its blocks in address order, which would lay a sequence out
// as contiguously as a KvCache and hide what walking a block table costs. Each block is taken
// by a one-token sequence, then the sequences are released in shuffled order.
template <class Cache, class Generator>
void scatter_free_blocks(Cache& cache, Generator& generator) {
  const std::vector<float> token(static_cast<std::size_t>(cache.kv_groups() * cache.head_dim()),
                                 0.0f);
  const multihead::TensorView<const float> row(token.data(), std::int64_t(token.size()), 1, 1,
                                               cache.kv_groups(), cache.head_dim());
  std::vector<std::int64_t> holders;
  while (cache.free_blocks() > 0) {
    holders.push_back(cache.add_sequence());
    cache.append(holders.back(), row, row);
  }
  std::shuffle(holders.begin(), holders.end(), generator);
  for (const std::int64_t seq : holders) cache.release(seq);
}

// Wall-clock time, since the work is spread over threads; rate counters are then divided by the
// real time too (checked against manual timing with Google Benchmark 1.7.1). Google Benchmark
// appends "/real_time" to the reported names. MeasureProcessCPUTime() would make the CPU column
// show how many cores were busy, but would append "/process_time" as well.
inline benchmark::internal::Benchmark* configure(benchmark::internal::Benchmark* b) {
  return b->UseRealTime()->Unit(benchmark::kMillisecond);
}

}  // namespace bench
