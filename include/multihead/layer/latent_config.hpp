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
// With YaRN (rope_scaling), DeepSeek multiplies the scale by m(factor, mscale_all_dim)²
// (rope_scaling.hpp): YaRN's temperature on every score, the cos and sin of q_R and k_R carrying
// only the ratio m(factor, mscale) / m(factor, mscale_all_dim).
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
  double rope_base = 10000.0;   // θ of the decoupled RoPE
  RopeScaling rope_scaling;     // of the decoupled RoPE: DeepSeek-V2/V3 configure yarn
  // The order q_R and k_R are rotated in and k_R is cached in. interleaved: pairs (2i, 2i + 1),
  // as the projections emit them and DeepSeek's reference code rotates them. rotate_half:
  // Hugging Face's DeepseekV2/V3 order, each part permuted to its even dims, then its odd ones,
  // and rotated as halves (i, i + rope_dim/2). The same pairs turn by the same angles, so the
  // scores agree (up to summation order); only the order of a cached k_R differs.
  RopeLayout rope_layout = RopeLayout::interleaved;
  std::optional<float> scale;   // defaults to 1/sqrt(nope_dim + rope_dim), times yarn's term

  // Sums of user sizes, overflow-checked (validate() calls them first).
  std::int64_t qk_dim() const {
    return detail::checked_add(nope_dim, rope_dim, "qk_dim (nope_dim + rope_dim)");
  }
  // What the cache keeps per token: the latent and the RoPE key.
  std::int64_t cached_dim() const {
    return detail::checked_add(latent_dim, rope_dim, "cached_dim (latent_dim + rope_dim)");
  }
  // scale, or 1/sqrt(qk_dim) times DeepSeek's yarn term (RopeScaling::softmax_scale_factor).
  float resolved_scale() const {
    if (scale) return *scale;
    const float plain = 1.0f / std::sqrt(static_cast<float>(qk_dim()));
    return static_cast<float>(plain * rope_scaling.softmax_scale_factor());  // 1: exactly plain
  }
  RopeConfig rope() const {
    RopeConfig rope;
    rope.base = rope_base;
    rope.layout = rope_layout;
    rope.scaling = rope_scaling;
    return rope;
  }

  // Throws std::invalid_argument naming the field unless every size is positive (rope_dim may be
  // 0; otherwise even), the rope (rope_base, rope_scaling, rope_layout, checked as a RopeConfig's
  // rope.* fields), the norms' epsilon and the scale are sensible and the weights fit.
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
    if (rope_dim > 0)
      rope().validate(rope_dim);
    else
      require(rope_scaling.type == RopeScalingType::none, "rope_scaling (",
              rope_scaling_name(rope_scaling.type), ") needs a RoPE to scale but rope_dim is 0");
    if (scale)
      require(*scale > 0.0f && std::isfinite(*scale), "scale (", *scale,
              ") must be positive and finite");
    // The default scale times DeepSeek's yarn term, rounded to float, must be finite too.
    require(std::isfinite(resolved_scale()) && resolved_scale() > 0.0f, "the softmax scale (",
            resolved_scale(), ") from rope_scaling.mscale_all_dim (", rope_scaling.mscale_all_dim,
            ") must be positive and finite in float");
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
