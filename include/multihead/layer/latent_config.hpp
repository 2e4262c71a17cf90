// The configuration of a multi-head latent attention (MLA) layer, DeepSeek-V2/V3's attention,
// and its checks.
//
// Per token h (model_dim):
//   c_KV = RMSNorm(W_DKV·h)                  latent_dim (d_c) values, cached
//   k_R  = RoPE(W_KR·h)                      rope_dim (d_r) values, cached, shared by all heads
//   q    = W_UQ·RMSNorm(W_DQ·h) or W_Q·h     per head [q_C (nope_dim); q_R (rope_dim)], q_R rotated
//   k_C  = W_UK·c_KV, v = W_UV·c_KV          per head: nope_dim and value_dim values
//   out  = W_O·[softmax(q·[k_C; k_R] · scale)·v over heads],  scale = 1/sqrt(nope_dim + rope_dim)
// so a token costs (latent_dim + rope_dim) cached values, whatever the number of heads.
// The score modifiers (causal, window, soft-cap, ALiBi, sinks; attention/modifiers.hpp) are
// those of a dense layer, applied to the heads' scores in both of MLA's paths.
#pragma once

#include <cmath>
#include <cstdint>
#include <optional>

#include "../attention/modifiers.hpp"
#include "../core/error.hpp"
#include "rope.hpp"

namespace multihead {
inline namespace MULTIHEAD_ISA_NAMESPACE {

struct LatentConfig : ScoreModifiers {
  std::int64_t model_dim = 0;
  std::int64_t heads = 0;
  std::int64_t latent_dim = 0;                   // d_c, Hugging Face's kv_lora_rank
  std::optional<std::int64_t> query_latent_dim;  // d_c', q_lora_rank; none: q_proj from the input
  std::int64_t nope_dim = 0;                     // qk_nope_head_dim: the part of q·k without RoPE
  std::int64_t rope_dim = 0;                     // qk_rope_head_dim; 0: no decoupled RoPE key
  std::int64_t value_dim = 0;                    // v_head_dim
  bool kv_norm = true;          // RMS-normalise the latent (kv_a_layernorm), as DeepSeek does
  float norm_eps = 1e-6f;       // of both RMS norms
  double rope_base = 10000.0;   // θ of the decoupled RoPE (interleaved pairs, as DeepSeek)
  std::optional<float> scale;   // defaults to 1/sqrt(nope_dim + rope_dim)

  // Sums of user sizes, overflow-checked (validate() calls them first).
  std::int64_t qk_dim() const {
    return detail::checked_add(nope_dim, rope_dim, "qk_dim (nope_dim + rope_dim)");
  }
  // What the cache keeps per token: the latent and the RoPE key.
  std::int64_t cached_dim() const {
    return detail::checked_add(latent_dim, rope_dim, "cached_dim (latent_dim + rope_dim)");
  }
  float resolved_scale() const {
    return scale.value_or(1.0f / std::sqrt(static_cast<float>(qk_dim())));
  }
  RopeConfig rope() const {
    RopeConfig rope;
    rope.base = rope_base;
    rope.layout = RopeLayout::interleaved;
    return rope;
  }

  // Throws std::invalid_argument naming the field unless every size is positive (rope_dim may be
  // 0; otherwise even), the norms' epsilon and the scale are sensible and the weights fit.
  void validate() const {
    using detail::require;
    using detail::require_positive;
    require_positive(model_dim, "model_dim");
    require_positive(heads, "heads");
    require_positive(latent_dim, "latent_dim");
    if (query_latent_dim) require_positive(*query_latent_dim, "query_latent_dim");
    require_positive(nope_dim, "nope_dim");
    require(rope_dim >= 0 && rope_dim % 2 == 0, "rope_dim (", rope_dim,
            ") must be 0 or positive and even: dims rotate in pairs");
    require_positive(value_dim, "value_dim");
    require(norm_eps > 0.0f && std::isfinite(norm_eps), "norm_eps (", norm_eps,
            ") must be positive and finite");
    if (rope_dim > 0) rope().validate(rope_dim);
    if (scale)
      require(*scale > 0.0f && std::isfinite(*scale), "scale (", *scale,
              ") must be positive and finite");
    validate_modifiers(heads);
    // The absorbed query [heads, latent_dim + rope_dim] per token, and every weight's bytes.
    detail::checked_product("absorbed query (heads * (latent_dim + rope_dim))", heads,
                            cached_dim());
    detail::checked_mul(weight_floats(), std::int64_t(sizeof(float)), "weight bytes");
  }

  // The floats of every weight: the query path (q_a_proj and q_b_proj, or q_proj), kv_a_proj
  // [latent_dim + rope_dim, model_dim], kv_b_proj [heads·(nope_dim + value_dim), latent_dim]
  // and o_proj [model_dim, heads·value_dim] (the norms' weights are smaller), overflow-checked.
  std::int64_t weight_floats() const {
    using detail::checked_add;
    using detail::checked_product;
    const char* what = "weight size (floats of every projection)";
    const std::int64_t q_rows = checked_product(what, heads, qk_dim());
    const std::int64_t query =
        query_latent_dim ? checked_add(checked_product(what, *query_latent_dim, model_dim),
                                       checked_product(what, q_rows, *query_latent_dim), what)
                         : checked_product(what, q_rows, model_dim);
    const std::int64_t kv_a = checked_product(what, cached_dim(), model_dim);
    const std::int64_t kv_b = checked_product(
        what, heads, checked_add(nope_dim, value_dim, "nope_dim + value_dim"), latent_dim);
    const std::int64_t o = checked_product(what, model_dim, heads, value_dim);
    return checked_add(checked_add(query, kv_a, what), checked_add(kv_b, o, what), what);
  }

  // The published shapes. DeepSeek-V2-Lite: no query compression, 16 heads.
  static LatentConfig deepseek_v2_lite() {
    LatentConfig c;
    c.model_dim = 2048;
    c.heads = 16;
    c.latent_dim = 512;
    c.nope_dim = 128;
    c.rope_dim = 64;
    c.value_dim = 128;
    return c;
  }
  // DeepSeek-V2 (model 5120) and V3 (model 7168): 128 heads, queries through a 1536 latent.
  static LatentConfig deepseek_v2() {
    LatentConfig c = deepseek_v2_lite();
    c.model_dim = 5120;
    c.heads = 128;
    c.query_latent_dim = 1536;
    return c;
  }
  static LatentConfig deepseek_v3() {
    LatentConfig c = deepseek_v2();
    c.model_dim = 7168;
    return c;
  }
};

}  // namespace MULTIHEAD_ISA_NAMESPACE
}  // namespace multihead
