// multihead_bench: the machine's peaks first, then every kernel on every shape, each figure read
// as a fraction of those peaks (the `roofline` counter). Every name ends in /threads:<n>:
//   peak/fma, peak/bf16-dot, peak/read   the roofs (peak_bench.hpp)
//   reference/<shape>, fused/<shape>     prefill attention on P1, P2, P2-MQA (shapes.hpp)
//   fused-bf16/P1, fused-bf16/P2         prefill in bf16, read against peak/bf16-dot
//   fused-softcap/P1, fused-alibi/P1     score modifiers, beside fused/P1
//   fused-window4096/P1-8192             a sliding window, beside fused/P1-8192 (plain causal)
//                                        and fused/P1-8192-full (no mask)
//   decode/D1/<cache>                    one generation step of D1 over a KvCache of <cache>
//                                        (fp32, bf16, fp16, int8 = q8, int4 = q4)
//                                        = fp32, bf16 or fp16 (decode_bench.hpp)
//   decode/D1-paged16/<cache>            the same over a PagedKvCache of 16-token blocks
//   decode/D1-head-major/<cache>         the same over head-major views [batch, groups, L, d]
//   decode/D1-len/<cache>/L:<L>          D1 over L = 1024 to 65536 tokens of context
//   decode/D2/<cache>                    MQA over 32768 tokens of context
//   decode/D1-paged16-view/<cache>       the same pool as memory the caller owns (int32 tables)
//   decode/D2-paged16/<cache>            the same over a PagedKvCache of 16-token blocks
//   mla_absorbed/<cache>/L:<L>           DeepSeek-V2-Lite's MLA decode over a LatentCache, beside
//   mla_naive/<cache>/L:<L>              its naive path and MHA of the same size (mla_bench.hpp)
//   mha_decode/<cache>/L:<L>
//   serve/mixed/one-call, serve/mixed/per-sequence   a continuous batch of 32 mixed-length
//                                        sequences decoding a step each (serve_bench.hpp)
// Run with --benchmark_filter=<regex> to pick benchmarks, e.g. --benchmark_filter='peak|fused/P1'
// or --benchmark_filter='peak|decode/D1'.
#include <benchmark/benchmark.h>

#include <multihead/multihead.hpp>

#include <cstdint>
#include <vector>

#include "attention_bench.hpp"
#include "decode_bench.hpp"
#include "mla_bench.hpp"
#include "peak_bench.hpp"
#include "serve_bench.hpp"

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
  const bench::AttentionKernel fused = [](const bench::AttentionViews& a,
                                          const multihead::KernelOptions& options) {
    multihead::fused_attention(a.q, a.k, a.v, a.o, options);
  };
  bench::register_attention("fused", fused);
  // The same in bf16 (Q, K, V and O): on the bf16 dot product where the CPU has it.
  bench::register_bf16_attention("fused-bf16", {bench::prefill_shapes()[0],
                                                bench::prefill_shapes()[1]});
  // Score modifiers (issue 6's targets): soft-cap and ALiBi on P1, and a 4096-key sliding
  // window over P1's layer at 8192 tokens beside plain causal and unmasked attention there.
  // The modifiers are counted as the plain causal work, so their times compare directly with
  // fused/P1 and fused/P1-8192.
  const std::vector<bench::Shape> p1 = {bench::prefill_shapes().front()};
  const std::vector<bench::Shape> p1_8192 = {{"P1-8192", 1, 32, 8, 128, 8192, 8192, true}};
  bench::register_attention("fused", fused,
                            {p1_8192.front(), {"P1-8192-full", 1, 32, 8, 128, 8192, 8192, false}});
  bench::register_attention("fused-softcap", [](const bench::AttentionViews& a,
                                                const multihead::KernelOptions& options) {
    multihead::KernelOptions capped = options;
    capped.softcap = 50.0f;  // Gemma 2's attention cap
    multihead::fused_attention(a.q, a.k, a.v, a.o, capped);
  }, p1);
  bench::register_attention("fused-alibi", [](const bench::AttentionViews& a,
                                              const multihead::KernelOptions& options) {
    static const std::vector<float> slopes = multihead::alibi_slopes(a.q.heads());
    multihead::KernelOptions biased = options;
    biased.alibi_slopes = {slopes.data(), std::int64_t(slopes.size())};
    multihead::fused_attention(a.q, a.k, a.v, a.o, biased);
  }, p1);
  bench::register_attention("fused-window4096", [](const bench::AttentionViews& a,
                                                   const multihead::KernelOptions& options) {
    multihead::KernelOptions windowed = options;
    windowed.window_left = 4095;  // each query sees itself and the 4095 keys before it
    multihead::fused_attention(a.q, a.k, a.v, a.o, windowed);
  }, p1_8192);
  // decode_attention over KV caches of each storage type, contiguous and paged.
  bench::register_decode_benchmarks();
  // MLA decode, absorbed and naive, beside MHA of the same model dim and heads.
  bench::register_mla_benchmarks();
  // A continuous batch's decode step over a server's own paged pool, in one call and per sequence.
  bench::register_serve_benchmarks();

  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
