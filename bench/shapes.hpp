// The attention shapes the kernels are benchmarked on, and the work each one represents.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace bench {

// One attention call: Q [batch, lq, heads, d], K and V [batch, lkv, groups, d], O like Q.
struct Shape {
  const char* name;     // the <shape> part of a benchmark name
  std::int64_t batch;
  std::int64_t heads;   // query heads
  std::int64_t groups;  // K/V heads: heads for MHA, 1 for MQA, in between for GQA
  std::int64_t d;       // head dim, of keys and values alike
  std::int64_t lq;      // query tokens
  std::int64_t lkv;     // key/value tokens
  bool causal;

  std::int64_t q_elements() const { return batch * lq * heads * d; }  // and O's
  std::int64_t kv_elements() const { return batch * lkv * groups * d; }  // each of K and V

  // The useful work: Q·Kᵀ and P·V, 2·lq·lkv·d flops each per head, halved when causal (the
  // masked half of the scores is work a kernel need not do, as FlashAttention's benchmarks
  // count it; "half" assumes lq == lkv, as in every causal shape so far). The softmax is not
  // counted: it is O(lq·lkv), not O(lq·lkv·d).
  double flops() const {
    const double full = 4.0 * batch * heads * static_cast<double>(lq) * lkv * d;
    return causal ? full / 2 : full;
  }

  // The compulsory traffic: Q, K and V read once and O written once; K and V elements take
  // kv_element_bytes (a KV cache's storage: 2 for bf16 and fp16), Q and O elements
  // q_element_bytes (fp32 unless the kernel runs in bf16).
  double bytes(double kv_element_bytes = sizeof(float),
               double q_element_bytes = sizeof(float)) const {
    return q_element_bytes * 2.0 * q_elements() + kv_element_bytes * 2.0 * kv_elements();
  }
};

// Prefill shapes: long query sequences, where attention is bound by the FMA units (about 500
// flops per byte of compulsory traffic), so `roofline` measures how well a kernel uses them.
inline const std::vector<Shape>& prefill_shapes() {
  static const std::vector<Shape> shapes = {
      // P1, the common case of today's decoder LLMs: a Llama-3-8B / Mistral-7B layer (32 query
      // heads sharing 8 K/V heads, GQA with groups of 4, d = 128) prefilling a 2048-token
      // prompt. Causal, so a kernel that skips masked tiles does half the work of one that
      // does not; shared K/V, so a kernel that stacks a group's heads reads each K/V tile once.
      // Its 2048 × 2048 score matrix (16 MiB per head) does not fit in cache.
      {"P1", 1, 32, 8, 128, 2048, 2048, true},
      // P2, the dense baseline: plain MHA (32 heads, 32 K/V heads, d = 128, as Llama-2-7B) over
      // 1024 tokens without a mask (an encoder, or bidirectional attention over a prefix).
      // Every score counts and nothing is shared, so a kernel can only win by doing the
      // products and the softmax faster, not by skipping or reusing work.
      {"P2", 1, 32, 32, 128, 1024, 1024, false},
      // P2-MQA: P2's query heads and length with a single K/V head (multi-query attention,
      // as PaLM and Falcon-7B). The same flops as P2 over 1/32 of the K/V: a kernel that stacks
      // the heads sharing a K/V head must run it at least as fast per flop as P2.
      {"P2-MQA", 1, 32, 1, 128, 1024, 1024, false},
  };
  return shapes;
}

// Decode shapes: one new token (lq = 1) attending over a long KV cache, as every generation step
// of an LLM does. Each K/V element is used for 2·heads/groups flops only, so unless the query
// heads sharing a K/V head are many, decoding is bound by reading the cache; decode_bench.cpp
// runs them over caches of each storage type, which changes the bytes, not the flops.
inline const std::vector<Shape>& decode_shapes() {
  static const std::vector<Shape> shapes = {
      // D1: P1's Llama-3-8B layer (32 query heads, 8 K/V heads, d = 128) generating at 8192
      // tokens of context. 4 heads per K/V head: 2 flops per fp32 byte, 4 per bf16 byte, below
      // the ridge point of common CPUs (peak flops over peak bandwidth, some 5 to 20), so
      // memory-bound; the cache (64 MiB in fp32, 32 MiB in bf16) is larger than most last-level
      // caches, so every step streams it from memory.
      {"D1", 1, 32, 8, 128, 1, 8192, false},
      // D2: multi-query attention (32 query heads, 1 K/V head, d = 128, as PaLM and Falcon)
      // over 32768 tokens. 32 heads per K/V head: 16 flops per fp32 byte, 32 per bf16 byte, at
      // or above the ridge point, so compute-bound (the label says which roof binds on the
      // machine at hand): a kernel that reads each K/V row once for all 32 heads is measured by
      // its FMA rate, one that reads it once per head moves 32 times the bytes.
      {"D2", 1, 32, 1, 128, 1, 32768, false},
      // C1: a chunk of a long prompt's prefill over the cache of the chunks before it (GQA 32/8,
      // d = 128, 512 new tokens over 4096 cached), as servers that chunk prefills run it through
      // decode_attention; counted without the causal mask over the chunk's own tokens.
      {"C1", 1, 32, 8, 128, 512, 4096, false},
  };
  return shapes;
}

}  // namespace bench
