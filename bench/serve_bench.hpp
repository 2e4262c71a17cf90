// Registers the serving family: one decode step of a continuous batch, as an inference server
// makes it, over a pool of paged K/V the server owns (cache/paged_view.hpp).
//
//   serve/mixed/one-call/threads:<n>       32 sequences of mixed lengths (100 to 8000 tokens,
//                                          GQA 32/8, d 128, a bf16 pool of 16-token blocks in
//                                          random order) each decode one token, in one call
//   serve/mixed/per-sequence/threads:<n>   the same 32 steps, one call per sequence
//   serve/mixed-short/{one-call,per-sequence}/threads:<n>   the same with 16 to 512 tokens per
//                                          sequence, where a call's own cost counts
//
// Each reports report_roofline()'s counters for
//   flops = 4·heads·d·Σ lengths (Q·Kᵀ and P·V)
//   bytes = 2·groups·d·2·Σ lengths + 2·32·heads·d·4: the pool's K and V read once, q read and
//           o written in fp32 (the int32 block tables, 33 KiB, not counted)
#pragma once

namespace bench {

void register_serve_benchmarks();

}  // namespace bench
