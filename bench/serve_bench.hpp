// Registers the serving family: one decode step of a continuous batch, as an inference server
// makes it, over a pool of paged K/V the server owns (cache/paged_view.hpp).
//
//   serve/mixed/one-call/threads:<n>       32 sequences of mixed lengths (100 to 8000 tokens,
//                                          GQA 32/8, d 128, a bf16 pool of 16-token blocks in
//                                          random order) each decode one token, in one call
//   serve/mixed/per-sequence/threads:<n>   the same 32 steps, one call per sequence
//   serve/mixed-short/{one-call,per-sequence}/threads:<n>   the same with 16 to 512 tokens per
//                                          sequence, where a call's own cost counts
//   serve/chunk/paged-batch/threads:<n>    a prefill chunk of 512 tokens (bf16 queries) over a
//                                          4096-token sequence in a bf16 pool of 16-token blocks,
//                                          causal, by batch_attention (cache/batch.hpp)
//   serve/chunk/fused-contiguous/threads:<n>  the same attention by fused_attention over
//                                          contiguous bf16 K/V: the rate the chunk should reach
//
// Each reports report_roofline()'s counters, against the read roof of the pool's access pattern:
// 32 KiB blocks (16 tokens of 8 bf16 rows of 128) in random order (machine_peak_scattered, the
// rate of peak/read-scattered/32KiB), for
//   flops = 4·heads·d·Σ lengths (Q·Kᵀ and P·V)
//   bytes = 2·groups·d·2·Σ lengths + 2·32·heads·d·4: the pool's K and V read once, q read and
//           o written in fp32 (the int32 block tables, 33 KiB, not counted)
// and the chunk's flops over the keys each query sees, K/V read once and q, o in bf16, against
// the bf16 dot product's peak.
#pragma once

namespace bench {

void register_serve_benchmarks();

}  // namespace bench
