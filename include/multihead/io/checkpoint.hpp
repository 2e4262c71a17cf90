// Attention layers from a Hugging Face checkpoint directory: config.json (hf_config.hpp) and the
// safetensors files beside it, one file or shards with their index (safetensors.hpp).
//
//   multihead::HfCheckpoint checkpoint("/models/Llama-3.1-8B");
//   multihead::GQA layer = checkpoint.attention(0);            // Llama, Mistral, Qwen2
//   multihead::MLA mla = checkpoint.latent_attention(3);       // DeepSeek-V2/V3
//
// Layer i's tensors are read by their Hugging Face names, model.layers.{i}.self_attn.q_proj.weight
// and so on, each checked for its dtype (F32, BF16 or F16) and for the shape the layer's config
// gives it before it is set. A tensor the config has no place for (a bias the config leaves out,
// q_a_proj without q_lora_rank) is refused rather than dropped: the config and the weights
// disagree. bf16 and fp16 weights are widened to fp32 as they are set (precision.hpp): the layer
// holds 4 bytes per parameter, twice a bf16 checkpoint's, and its projections run in fp32.
// A config of one's own (another RoPE layout for MLA's cache, a different window) loads the same
// weights: attention(i, config) and latent_attention(i, config).
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "../layer/attention.hpp"
#include "../layer/latent_attention.hpp"
#include "hf_config.hpp"
#include "safetensors.hpp"

namespace multihead {
inline namespace MULTIHEAD_ISA_NAMESPACE {

class HfCheckpoint {
 public:
  // Reads directory/config.json and opens (maps and checks) every safetensors file.
  explicit HfCheckpoint(const std::string& directory)
      : config_(HfConfig::read((std::filesystem::path(directory) / "config.json").string())),
        tensors_(directory) {}

  const HfConfig& config() const noexcept { return config_; }
  const SafetensorsCheckpoint& tensors() const noexcept { return tensors_; }

  // The attention of layer `layer`, with the config config.json gives it or with `config`.
  template <class Variant = variant::GroupedQuery>
  Attention<Variant> attention(std::int64_t layer) const {
    return attention<Variant>(layer, config_.layer_config(layer));
  }
  template <class Variant = variant::GroupedQuery>
  Attention<Variant> attention(std::int64_t layer, const LayerConfig& config) const {
    Attention<Variant> result(config);
    load(result, layer);
    return result;
  }
  Attention<variant::Latent> latent_attention(std::int64_t layer) const {
    return latent_attention(layer, config_.latent_config(layer));
  }
  Attention<variant::Latent> latent_attention(std::int64_t layer,
                                              const LatentConfig& config) const {
    Attention<variant::Latent> result(config);
    load(result, layer);
    return result;
  }

  // "model.layers.{layer}.self_attn.": where a layer's attention tensors are named.
  static std::string prefix(std::int64_t layer) {
    return "model.layers." + std::to_string(layer) + ".self_attn.";
  }

  // Sets a dense layer's weights (and biases) from layer `layer` of the checkpoint.
  template <class Variant>
  void load(Attention<Variant>& target, std::int64_t layer) const {
    for (Projection p : {Projection::q, Projection::k, Projection::v, Projection::o}) {
      const std::string name = prefix(layer) + hf_projection_name(p);
      tensors_.visit(
          name + ".weight", {target.out_features(p), target.in_features(p)},
          [&](const auto* data, std::int64_t size) { target.set_weight(p, data, size); });
      if (target.has_bias(p))
        tensors_.visit(
            name + ".bias", {target.out_features(p)},
            [&](const auto* data, std::int64_t size) { target.set_bias(p, data, size); });
      else
        refuse_unused(name + ".bias", "the layer's config has no bias there");
    }
  }

  // Sets an MLA layer's weights from layer `layer` of the checkpoint.
  void load(Attention<variant::Latent>& target, std::int64_t layer) const {
    const auto name = [&](LatentWeight w) {
      return prefix(layer) + latent_weight_name(w) + ".weight";
    };
    // First what the config has no place for: it says most about a mismatch (q_a_proj where
    // the config has q_proj says more than a missing q_proj).
    for (int i = 0; i < kLatentWeights; ++i) {
      const auto w = static_cast<LatentWeight>(i);
      if (!target.has_weight(w)) refuse_unused(name(w), "the layer's config has no such parameter");
    }
    for (int i = 0; i < kLatentWeights; ++i) {
      const auto w = static_cast<LatentWeight>(i);
      if (!target.has_weight(w)) continue;
      const auto shape = target.weight_shape(w);
      const bool norm = w == LatentWeight::q_a_layernorm || w == LatentWeight::kv_a_layernorm;
      tensors_.visit(
          name(w),
          norm ? std::vector<std::int64_t>{shape[1]}
               : std::vector<std::int64_t>{shape[0], shape[1]},
          [&](const auto* data, std::int64_t size) { target.set_weight(w, data, size); });
    }
  }

 private:
  void refuse_unused(const std::string& name, const char* why) const {
    if (tensors_.contains(name))
      detail::fail("checkpoint ", tensors_.path(), ": holds ", name, " but ", why,
                   " (config.json and the weights disagree)");
  }

  HfConfig config_;
  SafetensorsCheckpoint tensors_;
};

}  // namespace MULTIHEAD_ISA_NAMESPACE
}  // namespace multihead
