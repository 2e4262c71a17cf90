// The peak family: peak/fma/threads:<n>, peak/bf16-dot/threads:<n> and peak/read/threads:<n>,
// the roofs every other figure of this binary is read against, and
// peak/read-scattered/<KiB>KiB/threads:<n>, the read bandwidth left when memory comes in
// scattered blocks (the paged decode benchmarks' context).
#include "peak_bench.hpp"

#include <benchmark/benchmark.h>

#include <cstdint>
#include <string>

#include "peak.hpp"
#include "registration.hpp"

namespace bench {
namespace {

// fp32 FMA throughput: independent FMA chains on every thread, the widest vectors the CPU has.
void fma_peak(benchmark::State& state, int threads) {
  double flops = 0.0;
  for (auto _ : state) flops += run_fma(threads);
  state.counters["flops"] = benchmark::Counter(flops, benchmark::Counter::kIsRate);
  state.SetLabel(peak_isa());
}

// bf16 dot-product throughput (vdpbf16ps), the roof of the bf16 kernels; skipped where the CPU
// lacks AVX-512 BF16.
void bf16_dot_peak(benchmark::State& state, int threads) {
  if (!has_bf16_dot()) {
    state.SkipWithError("this CPU has no AVX-512 BF16 (vdpbf16ps)");
    return;
  }
  double flops = 0.0;
  for (auto _ : state) flops += run_bf16_dot(threads);
  state.counters["flops"] = benchmark::Counter(flops, benchmark::Counter::kIsRate);
  state.SetLabel("avx512bf16");
}

// Memory read bandwidth: one pass over a buffer far larger than the L3 per iteration.
void read_peak(benchmark::State& state, int threads) {
  run_read(threads);  // allocates and first touches the buffer on the first call, untimed
  double bytes = 0.0;
  for (auto _ : state) bytes += run_read(threads);
  state.counters["bytes"] = benchmark::Counter(bytes, benchmark::Counter::kIsRate);
  state.SetLabel(peak_isa());
}

// The same bandwidth over scattered chunks (run_read_scattered).
void scattered_read_peak(benchmark::State& state, int threads, std::int64_t chunk_bytes) {
  run_read_scattered(threads, chunk_bytes);  // first touch and the chunk order, untimed
  double bytes = 0.0;
  for (auto _ : state) bytes += run_read_scattered(threads, chunk_bytes);
  state.counters["bytes"] = benchmark::Counter(bytes, benchmark::Counter::kIsRate);
  state.SetLabel(peak_isa());
}

}  // namespace

void register_peak_benchmarks() {
  for (int threads : thread_counts())
    configure(benchmark::RegisterBenchmark(with_threads("peak/fma", threads).c_str(), fma_peak,
                                           threads));
  for (int threads : thread_counts())
    configure(benchmark::RegisterBenchmark(with_threads("peak/bf16-dot", threads).c_str(),
                                           bf16_dot_peak, threads));
  for (int threads : thread_counts())
    configure(benchmark::RegisterBenchmark(with_threads("peak/read", threads).c_str(),
                                           read_peak, threads));
  // The block sizes of decode/D1-paged16: 16 tokens × 8 groups × 128 dims of K (or V) in fp32
  // (64 KiB) and in bf16 / fp16 (32 KiB).
  for (std::int64_t kib : {32, 64})
    for (int threads : thread_counts())
      configure(benchmark::RegisterBenchmark(
          with_threads("peak/read-scattered/" + std::to_string(kib) + "KiB", threads).c_str(),
          scattered_read_peak, threads, kib << 10));
}

}  // namespace bench
