// The attention benchmark body and its registration; the loop and counters are roofline.hpp's.
#include "attention_bench.hpp"

#include <benchmark/benchmark.h>

#include <string>

#include "peak.hpp"
#include "registration.hpp"
#include "roofline.hpp"

namespace bench {
namespace {

void run_attention(benchmark::State& state, const AttentionKernel& kernel, const Shape& shape,
                   int threads) {
  // Both untimed: the peaks are measured on the first benchmark at this thread count and
  // cached; the buffers are filled when the shape changes.
  const MachinePeak& peak = machine_peak(threads);
  const AttentionViews views = AttentionBuffers::of(shape).views();
  multihead::KernelOptions options;
  options.causal = shape.causal;
  options.threads = threads;

  const double seconds = timed_loop(state, [&] { kernel(views, options); });
  report_roofline(state, {shape.flops(), shape.bytes()}, peak, seconds);
}

void run_bf16_attention(benchmark::State& state, const Shape& shape, int threads) {
  const MachinePeak& peak = machine_peak(threads);
  const Bf16AttentionViews views = AttentionBuffers::of(shape).bf16_views();
  multihead::KernelOptions options;
  options.causal = shape.causal;
  options.threads = threads;

  const double seconds =
      timed_loop(state, [&] { multihead::fused_attention(views.q, views.k, views.v, views.o, options); });
  report_roofline(state, {shape.flops(), shape.bytes(2, 2), true}, peak, seconds);
}

}  // namespace

void register_bf16_attention(const std::string& path, const std::vector<Shape>& shapes) {
  for (const Shape& shape : shapes)
    for (int threads : thread_counts()) {
      const std::string name = with_threads(path + "/" + shape.name, threads);
      configure(benchmark::RegisterBenchmark(name.c_str(), run_bf16_attention, shape, threads));
    }
}

void register_attention(const std::string& path, AttentionKernel kernel,
                        const std::vector<Shape>& shapes) {
  for (const Shape& shape : shapes)
    for (int threads : thread_counts()) {
      const std::string name = with_threads(path + "/" + shape.name, threads);
      configure(benchmark::RegisterBenchmark(name.c_str(), run_attention, kernel, shape, threads));
    }
}

}  // namespace bench
