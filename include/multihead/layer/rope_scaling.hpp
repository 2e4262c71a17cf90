// RoPE scaling: how a model trained on original_context positions stretches its rotary
// frequencies to reach further, with the formulas Hugging Face transformers uses
// (modeling_rope_utils), so a checkpoint's rope_scaling entry means here what it means there.
//
// Pair i of d = rotary_dim dims turns by inv_i = base^(−2i/d) rad per position. A pair whose
// wavelength 2π/inv_i is longer than the training context never made a whole turn in training,
// and positions past the context give it angles it never saw. The scalings slow such pairs down:
//   linear   every pair: inv_i / factor, as if positions were `factor` times closer.
//   dynamic  (NTK) a larger base, chosen by the call's context length L (its largest position
//            plus one): base' = base·(factor·L/o − (factor − 1))^(d/(d − 2)), o the
//            original context; at L ≤ o the frequencies are the default ones.
//   llama3   by wavelength: longer than o/low_freq_factor slowed by factor, shorter than
//            o/high_freq_factor kept, in between blended linearly in o/wavelength.
//   yarn     by the turns a pair makes over o: more than beta_fast kept, fewer than beta_slow
//            slowed by factor, a linear ramp between; and cos and sin multiplied by an attention
//            factor (the scores by its square), which sharpens the softmax over long contexts.
//
// Everything is computed in double. Hugging Face computes the frequencies in float32, so its
// values differ from these by float rounding (about 1e-7 relative); these are the exact ones.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <optional>
#include <vector>

#include "../core/error.hpp"

namespace multihead {
inline namespace MULTIHEAD_ISA_NAMESPACE {

enum class RopeScalingType { none, linear, dynamic, llama3, yarn };

inline const char* rope_scaling_name(RopeScalingType type) {
  switch (type) {
    case RopeScalingType::none: return "none";
    case RopeScalingType::linear: return "linear";
    case RopeScalingType::dynamic: return "dynamic";
    case RopeScalingType::llama3: return "llama3";
    case RopeScalingType::yarn: return "yarn";
  }
  return "?";
}

namespace detail {

// base^(−2i/d): pair i's unscaled inverse frequency. One expression for every caller, so a row
// computed for one call is bitwise the row a table holds.
inline double rope_inverse_frequency(double base, std::int64_t i, std::int64_t rotary_dim) {
  return std::pow(base, -2.0 * static_cast<double>(i) / static_cast<double>(rotary_dim));
}

// YaRN's temperature term m(s, k): 1 up to s = 1, then 0.1·k·ln(s) + 1.
inline double yarn_mscale(double scale, double k) {
  return scale <= 1.0 ? 1.0 : 0.1 * k * std::log(scale) + 1.0;
}

}  // namespace detail

// The fields of Hugging Face's rope_scaling entry. With type none the others are unused and
// unchecked; each other type reads only its own (listed per field).
struct RopeScaling {
  RopeScalingType type = RopeScalingType::none;
  double factor = 1.0;  // how many times the context is stretched; every type but none
  // The context the model was trained on (rope_scaling's original_max_position_embeddings, or
  // the config's max_position_embeddings: dynamic always takes the latter); dynamic, llama3, yarn.
  std::int64_t original_context = 0;
  double low_freq_factor = 1.0;   // llama3
  double high_freq_factor = 4.0;  // llama3
  double beta_fast = 32.0;        // yarn: pairs turning more often over original_context are kept
  double beta_slow = 1.0;         // yarn: pairs turning less often are slowed by factor
  double mscale = 0.0;            // yarn (DeepSeek): 0 is unset
  double mscale_all_dim = 0.0;    // yarn (DeepSeek): 0 is unset; also scales MLA's softmax
  std::optional<double> attention_factor;  // yarn: set, it replaces the one computed from mscale
  bool truncate = true;  // yarn: the ramp's ends rounded outwards to whole dims

  bool uses_original_context() const noexcept {
    return type == RopeScalingType::dynamic || type == RopeScalingType::llama3 ||
           type == RopeScalingType::yarn;
  }
  // Whether the frequencies depend on the call's context length (dynamic only).
  bool depends_on_context() const noexcept { return type == RopeScalingType::dynamic; }

  // Throws std::invalid_argument naming the field unless the fields of the type are usable with
  // a rope of rotary_dim dims and this base. factor must be finite and at least 1: every type is
  // for stretching a context, and a factor below 1 (which Hugging Face only warns about) would
  // shrink it, most likely a reciprocal typed by mistake.
  void validate(std::int64_t rotary_dim, double base) const {
    using detail::require;
    const char* name = rope_scaling_name(type);
    require(name[0] != '?', "rope.scaling.type (", static_cast<int>(type),
            ") is not a RopeScalingType");
    if (type == RopeScalingType::none) return;
    require(std::isfinite(factor) && factor >= 1.0, "rope.scaling.factor (", factor,
            ") must be finite and at least 1 (", name, " scaling stretches the context)");
    if (uses_original_context())
      require(original_context > 0, "rope.scaling.original_context (", original_context,
              ") must be positive: ", name, " scaling reads the trained context length");
    if (type == RopeScalingType::dynamic)
      require(rotary_dim > 2, "rope.rotary_dim (", rotary_dim,
              ") must be at least 4 for dynamic scaling (its exponent is d/(d − 2))");
    if (type == RopeScalingType::llama3) {
      require(std::isfinite(low_freq_factor) && low_freq_factor > 0.0,
              "rope.scaling.low_freq_factor (", low_freq_factor, ") must be positive and finite");
      require(std::isfinite(high_freq_factor) && high_freq_factor > low_freq_factor,
              "rope.scaling.high_freq_factor (", high_freq_factor,
              ") must be finite and above low_freq_factor (", low_freq_factor, ")");
    }
    if (type == RopeScalingType::yarn) {
      require(std::isfinite(beta_slow) && beta_slow > 0.0, "rope.scaling.beta_slow (", beta_slow,
              ") must be positive and finite");
      require(std::isfinite(beta_fast) && beta_fast > beta_slow, "rope.scaling.beta_fast (",
              beta_fast, ") must be finite and above beta_slow (", beta_slow, ")");
      require(std::isfinite(mscale) && mscale >= 0.0, "rope.scaling.mscale (", mscale,
              ") must be finite and not negative (0: unset)");
      require(std::isfinite(mscale_all_dim) && mscale_all_dim >= 0.0,
              "rope.scaling.mscale_all_dim (", mscale_all_dim,
              ") must be finite and not negative (0: unset)");
      if (attention_factor)
        require(std::isfinite(*attention_factor) && *attention_factor > 0.0,
                "rope.scaling.attention_factor (", *attention_factor,
                ") must be positive and finite");
      // The ramp's ends divide by ln(base).
      require(base > 1.0, "rope.base (", base, ") must be above 1 for yarn scaling");
      // Finite fields can still give infinite factors: a huge mscale_all_dim squared.
      const double attention = resolved_attention_factor();
      require(std::isfinite(attention) && attention > 0.0, "rope.scaling: the attention factor (",
              attention, ") from mscale (", mscale, ") and mscale_all_dim (", mscale_all_dim,
              ") must be positive and finite");
      require(std::isfinite(softmax_scale_factor()), "rope.scaling.mscale_all_dim (",
              mscale_all_dim, ") makes the softmax scale's factor infinite");
    }
  }

  // The base the frequencies of a call of context length `context` are computed from: dynamic's
  // base' past original_context, `base` itself otherwise.
  double frequency_base(double base, std::int64_t rotary_dim, std::int64_t context) const {
    if (!depends_on_context() || context <= original_context) return base;
    const double d = static_cast<double>(rotary_dim);
    const double stretch = factor * static_cast<double>(context) /
                               static_cast<double>(original_context) - (factor - 1.0);
    return base * std::pow(stretch, d / (d - 2.0));
  }

  // The rotary_dim / 2 inverse frequencies, pair by pair, of a call of context length `context`
  // (read by dynamic only).
  std::vector<double> inverse_frequencies(std::int64_t rotary_dim, double base,
                                          std::int64_t context = 0) const {
    const std::int64_t pairs = rotary_dim / 2;
    const double theta = frequency_base(base, rotary_dim, context);
    std::vector<double> inv(static_cast<std::size_t>(pairs));
    for (std::int64_t i = 0; i < pairs; ++i)
      inv[static_cast<std::size_t>(i)] = detail::rope_inverse_frequency(theta, i, rotary_dim);
    if (type == RopeScalingType::linear)
      for (double& f : inv) f /= factor;
    if (type == RopeScalingType::llama3) scale_llama3(inv);
    if (type == RopeScalingType::yarn) scale_yarn(inv, rotary_dim, base);
    return inv;
  }

  // What cos and sin are multiplied by (so q·k by its square): yarn's attention factor, else 1.
  double resolved_attention_factor() const {
    if (type != RopeScalingType::yarn) return 1.0;
    if (attention_factor) return *attention_factor;
    if (mscale != 0.0 && mscale_all_dim != 0.0)
      return detail::yarn_mscale(factor, mscale) / detail::yarn_mscale(factor, mscale_all_dim);
    return detail::yarn_mscale(factor, 1.0);
  }

  // What DeepSeek-V2/V3's attention multiplies its softmax scale by: m(factor, mscale_all_dim)²
  // with yarn and mscale_all_dim set, else 1. MLA applies it (LatentConfig::resolved_scale);
  // the dense layers do not, as Llama's and Qwen's attention do not.
  double softmax_scale_factor() const {
    if (type != RopeScalingType::yarn || mscale_all_dim == 0.0) return 1.0;
    const double m = detail::yarn_mscale(factor, mscale_all_dim);
    return m * m;
  }

 private:
  void scale_llama3(std::vector<double>& inv) const {
    const double context = static_cast<double>(original_context);
    const double kept_below = context / high_freq_factor;   // shorter wavelengths are kept
    const double slowed_above = context / low_freq_factor;  // longer ones are slowed
    const double two_pi = 2.0 * 3.14159265358979323846;
    for (double& f : inv) {
      const double wavelength = two_pi / f;
      if (wavelength > slowed_above) {
        f /= factor;
      } else if (!(wavelength < kept_below)) {
        const double smooth =
            (context / wavelength - low_freq_factor) / (high_freq_factor - low_freq_factor);
        f = (1.0 - smooth) * f / factor + smooth * f;
      }
    }
  }

  void scale_yarn(std::vector<double>& inv, std::int64_t rotary_dim, double base) const {
    const double d = static_cast<double>(rotary_dim);
    const double two_pi = 2.0 * 3.14159265358979323846;
    // The dim at which a pair makes `turns` turns over the original context.
    const auto dim_of = [&](double turns) {
      return d * std::log(static_cast<double>(original_context) / (turns * two_pi)) /
             (2.0 * std::log(base));
    };
    double low = dim_of(beta_fast), high = dim_of(beta_slow);
    if (truncate) {
      low = std::floor(low);
      high = std::ceil(high);
    }
    low = std::max(low, 0.0);
    high = std::min(high, d - 1.0);
    if (low == high) high += 0.001;  // a ramp of (almost) no width, not a division by zero
    for (std::size_t i = 0; i < inv.size(); ++i) {
      // 0: the pair keeps its frequency (extrapolates); 1: it is slowed (interpolates).
      const double ramp =
          std::min(std::max((static_cast<double>(i) - low) / (high - low), 0.0), 1.0);
      inv[i] = inv[i] / factor * ramp + inv[i] * (1.0 - ramp);
    }
  }
};

}  // namespace MULTIHEAD_ISA_NAMESPACE
}  // namespace multihead
