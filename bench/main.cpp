// multihead_bench: the machine's peaks first, then every kernel on every shape, each figure read
// as a fraction of those peaks (the `roofline` counter). Run with --benchmark_filter=<regex> to
// pick benchmarks, e.g. --benchmark_filter='peak|reference/P1'.
#include <benchmark/benchmark.h>

#include <multihead/multihead.hpp>

#include "attention_bench.hpp"
#include "peak_bench.hpp"

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::AddCustomContext("multihead_isa", multihead::isa_name());

  bench::register_peak_benchmarks();
  // The reference kernel: plain Eigen products and a full softmax, the baseline of every other.
  bench::register_attention("reference", [](const bench::AttentionViews& a,
                                            const multihead::KernelOptions& options) {
    multihead::reference_attention(a.q, a.k, a.v, a.o, options);
  });
  // The fused kernel: tiled online softmax, group-packed heads, register-blocked products.
  bench::register_attention("fused", [](const bench::AttentionViews& a,
                                        const multihead::KernelOptions& options) {
    multihead::fused_attention(a.q, a.k, a.v, a.o, options);
  });

  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
