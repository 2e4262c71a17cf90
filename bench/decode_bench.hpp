// Registers the decode family: decode_attention, one generation step per iteration, over KV caches
// filled before timing starts. <cache> is the cache's storage: fp32, bf16 or fp16.
//
//   decode/D1/<cache>/threads:<n>            D1 (shapes.hpp) over a KvCache; fp32, bf16, fp16
//   decode/D1-paged16/<cache>/threads:<n>    D1 over a PagedKvCache of 16-token blocks in random
//                                            pool order, to be read against decode/D1; fp32,
//                                            bf16, fp16
//   decode/D1-paged16-view/<cache>/threads:<n>  D1-paged16's pool read as memory the caller owns
//                                            (its view() and int32 block tables), to be
//                                            within ±3% of D1-paged16
//   decode/D1-head-major/<cache>/threads:<n> D1 over strided views of K and V laid out
//                                            [batch, groups, tokens, d]; fp32, bf16
//   decode/D1-len/<cache>/L:<L>/threads:<n>  D1's heads over L = 1024, 4096, 16384, 65536 tokens
//                                            of KvCache: time should grow linearly in L; fp32, bf16
//   decode/D2/<cache>/threads:<n>            D2 (MQA) over a KvCache; fp32, bf16
//   decode/D2-paged16/<cache>/threads:<n>    D2 over a PagedKvCache of 16-token blocks in random
//                                            pool order (MQA as a paged server keeps it), to be
//                                            read against decode/D2; fp32, bf16
//   decode/C1/bf16/threads:<n>               C1, a prefill chunk over a bf16 KvCache
//   decode/{D2,C1}/bf16-queries/threads:<n>  the same with q and o in bf16: on the bf16 dot
//                                            product (read against peak/bf16-dot) where the CPU
//                                            has one
//
// Each reports the counters of report_roofline() for
//   flops = Shape::flops = 4·heads·L·d: Q·Kᵀ and P·V, 2 flops per multiply-add (batch 1, one
//           query token; the softmax is not counted)
//   bytes = Shape::bytes(sizeof(<cache>)) = 2·L·groups·d·sizeof(<cache>) + 2·heads·d·4: K and V
//           read once from the cache, plus q read and o written in fp32 (32 KiB, under 0.1% of
//           D1's cache; the paged cache's block table, 4 KiB for D1, is not counted)
#pragma once

namespace bench {

// Every benchmark above, each for every n of thread_counts().
void register_decode_benchmarks();

}  // namespace bench
