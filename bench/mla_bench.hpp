// Registers the MLA family: one generation step of DeepSeek-V2-Lite's attention (16 heads,
// latent 512, RoPE key 64, heads 128 + 64 / 128) per iteration over a cache of L tokens filled
// before timing starts, beside MHA of the same model dim and heads. <cache>: fp32 or bf16.
//
//   mla_absorbed/<cache>/L:<L>/threads:<n>  decode_attention over a LatentCache: MQA with
//                                           qk-dim 576 and v-dim 512 straight over the latents
//                                           (the absorbed path); L = 8192, 32768
//   mla_naive/<cache>/L:8192/threads:<n>    the naive path over the same cache: every cached
//                                           latent widened and up-projected by kv_b_proj into
//                                           per-head K and V, then dense decode
//   mha_decode/<cache>/L:<L>/threads:<n>    decode_attention over a KvCache of 16 K/V heads of
//                                           128: MHA of the same model dim (2048) and heads
//
// Counters of report_roofline(), batch 1, one query token, 2 flops per multiply-add:
//   mla_absorbed  flops = 2·16·L·(576 + 512)            bytes = L·576·sizeof(<cache>)
//   mla_naive     flops = 2·L·512·16·256 + 2·16·L·(192 + 128)
//                 bytes = L·576·sizeof(<cache>) + kv_b_proj (16·256·512·4)
//   mha_decode    flops = 4·16·L·128                     bytes = 2·L·16·128·sizeof(<cache>)
// (q and o, under 64 KiB, are not counted). The query absorption and output expansion of the
// absorbed path, per token and independent of L, are not in mla_absorbed: they cost what the
// layer's own projections cost, in either path.
#pragma once

namespace bench {

void register_mla_benchmarks();

}  // namespace bench
