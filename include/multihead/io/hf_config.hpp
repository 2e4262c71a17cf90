// A Hugging Face config.json read into the configs of one attention layer: LayerConfig for
// Llama, Mistral and Qwen2 (model_type llama, mistral, qwen2), LatentConfig for DeepSeek-V2/V3
// (deepseek_v2, deepseek_v3). Every field a layer needs is read, with the defaults transformers
// gives a field the file leaves out, and checked: a missing required field, a value of the wrong
// type or range, an unknown model_type or rope type is a std::invalid_argument naming the file,
// the field and the value. Fields of the rest of the model (the MLP, the vocabulary, the MoE
// routing) are not read.
//
// What maps to what:
//   hidden_size → model_dim, num_attention_heads → heads, num_key_value_heads → kv_groups (default
//   heads), head_dim → head_dim (default hidden_size / heads), rope_theta → rope base (10000),
//   partial_rotary_factor → rotary_dim, rope_scaling → RopeScaling (rope_scaling.hpp; "type" or
//   "rope_type"), attention_bias → bias (Llama; Qwen2's q, k and v always, o never), sliding_window
//   → window_left = sliding_window − 1 (Mistral: every layer when set; Qwen2: the layers
//   layer_types marks "sliding_attention", or without it those from max_window_layers on when
//   use_sliding_window), attn_logit_softcapping → softcap; layers are causal.
//   DeepSeek: kv_lora_rank → latent_dim, q_lora_rank → query_latent_dim (null: q_proj),
//   qk_nope_head_dim → nope_dim, qk_rope_head_dim → rope_dim, v_head_dim → value_dim,
//   rms_norm_eps → norm_eps; its YaRN's mscale_all_dim scales the softmax (LatentConfig).
#pragma once

#include <cmath>
#include <cstdint>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <string>

#include "../layer/config.hpp"
#include "../layer/latent_config.hpp"
#include "../layer/rope_scaling.hpp"
#include "safetensors.hpp"

namespace multihead {
inline namespace MULTIHEAD_ISA_NAMESPACE {

// One config.json, parsed (duplicate keys refused, as in safetensors headers) and kept.
class HfConfig {
 public:
  // Reads `path` (a config.json); `name` in messages is the path.
  static HfConfig read(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) detail::fail(path, ": cannot open");
    const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    return HfConfig(detail::parse_json(text.data(), text.data() + text.size(), path, 64), path);
  }
  HfConfig(nlohmann::json json, std::string name) : json_(std::move(json)), name_(std::move(name)) {
    if (!json_.is_object()) detail::fail(name_, ": must be a JSON object");
  }

  const nlohmann::json& json() const noexcept { return json_; }
  const std::string& name() const noexcept { return name_; }
  std::string model_type() const { return text("model_type"); }
  // DeepSeek-V2/V3's multi-head latent attention, rather than a dense layer.
  bool is_latent() const {
    const std::string type = model_type();
    return type == "deepseek_v2" || type == "deepseek_v3";
  }
  std::int64_t layers() const { return integer("num_hidden_layers"); }

  // The config of dense layer `layer` (Llama, Mistral, Qwen2).
  LayerConfig layer_config(std::int64_t layer) const {
    const std::string type = model_type();
    if (type != "llama" && type != "mistral" && type != "qwen2")
      detail::fail(name_, ": model_type '", type, "' is not one multihead builds dense layers of ",
                   "(llama, mistral, qwen2", is_latent() ? "; it is MLA: latent_config" : "", ")");
    check_layer(layer);
    LayerConfig c;
    c.model_dim = integer("hidden_size");
    c.heads = integer("num_attention_heads");
    c.kv_groups = integer("num_key_value_heads", c.heads);
    c.head_dim = integer("head_dim", c.heads > 0 ? c.model_dim / c.heads : 0);
    if (type == "qwen2") {
      c.bias = true;  // Qwen2's q, k and v projections carry a bias, its o projection none
      c.output_bias = false;
    } else {
      c.bias = boolean("attention_bias", false);
    }
    RopeConfig rope;
    rope.base = number("rope_theta", 10000.0);
    const double partial = number("partial_rotary_factor", 1.0);
    if (partial != 1.0) rope.rotary_dim = static_cast<std::int64_t>(double(c.head_dim) * partial);
    rope.scaling = rope_scaling();
    c.rope = rope;
    c.causal = true;
    if (windowed(type, layer)) c.window_left = integer("sliding_window") - 1;
    if (present("attn_logit_softcapping"))
      c.softcap = static_cast<float>(number("attn_logit_softcapping", 0.0));
    c.validate();
    return c;
  }

  // The config of MLA layer `layer` (DeepSeek-V2, V3).
  LatentConfig latent_config(std::int64_t layer) const {
    if (!is_latent())
      detail::fail(name_, ": model_type '", model_type(),
                   "' is not one multihead builds MLA layers of (deepseek_v2, deepseek_v3)");
    check_layer(layer);
    if (boolean("attention_bias", false))
      detail::fail(name_, ": attention_bias is true, but MLA's projections have no biases");
    LatentConfig c;
    c.model_dim = integer("hidden_size");
    c.heads = integer("num_attention_heads");
    c.latent_dim = integer("kv_lora_rank");
    if (present("q_lora_rank")) c.query_latent_dim = integer("q_lora_rank");
    c.nope_dim = integer("qk_nope_head_dim");
    c.rope_dim = integer("qk_rope_head_dim");
    c.value_dim = integer("v_head_dim");
    c.norm_eps = static_cast<float>(number("rms_norm_eps", 1e-6));
    c.rope_base = number("rope_theta", 10000.0);
    c.rope_scaling = rope_scaling();
    c.causal = true;
    c.validate();
    return c;
  }

  // rope_scaling: absent, null or of rope type "default", none.
  RopeScaling rope_scaling() const {
    RopeScaling s;
    if (!present("rope_scaling")) return s;
    const nlohmann::json& r = json_["rope_scaling"];
    if (!r.is_object()) detail::fail(name_, ": rope_scaling must be an object or null");
    const HfConfig fields(r, name_ + ": rope_scaling");
    const std::string type =
        fields.present("rope_type") ? fields.text("rope_type") : fields.text("type");
    if (type == "default") return s;
    if (type == "linear")
      s.type = RopeScalingType::linear;
    else if (type == "dynamic")
      s.type = RopeScalingType::dynamic;
    else if (type == "llama3")
      s.type = RopeScalingType::llama3;
    else if (type == "yarn")
      s.type = RopeScalingType::yarn;
    else
      detail::fail(name_, ": rope_scaling type '", type,
                   "' is not one multihead computes (default, linear, dynamic, llama3, yarn)");
    s.factor = fields.number("factor");
    // Dynamic NTK scales from the config's max_position_embeddings, as transformers does; the
    // others from rope_scaling's original_max_position_embeddings when it has one.
    const std::int64_t trained =
        present("max_position_embeddings") ? integer("max_position_embeddings") : 0;
    s.original_context = s.type == RopeScalingType::dynamic
                             ? integer("max_position_embeddings")
                             : fields.integer("original_max_position_embeddings", trained);
    s.low_freq_factor = fields.number("low_freq_factor", s.low_freq_factor);
    s.high_freq_factor = fields.number("high_freq_factor", s.high_freq_factor);
    s.beta_fast = fields.number("beta_fast", s.beta_fast);
    s.beta_slow = fields.number("beta_slow", s.beta_slow);
    s.mscale = fields.number("mscale", 0.0);
    s.mscale_all_dim = fields.number("mscale_all_dim", 0.0);
    if (fields.present("attention_factor")) s.attention_factor = fields.number("attention_factor");
    s.truncate = fields.boolean("truncate", true);
    return s;
  }

 private:
  // Set and not null.
  bool present(const char* field) const { return json_.contains(field) && !json_[field].is_null(); }
  const nlohmann::json& field(const char* name) const {
    if (!present(name)) detail::fail(name_, ": no ", name);
    return json_[name];
  }
  std::int64_t integer(const char* name) const {
    const nlohmann::json& v = field(name);
    if (!v.is_number_integer())
      detail::fail(name_, ": ", name, " must be an integer, not ", v.dump());
    if (v.is_number_unsigned() &&
        v.get<std::uint64_t>() > std::uint64_t(std::numeric_limits<std::int64_t>::max()))
      detail::fail(name_, ": ", name, " (", v.dump(), ") is too large");
    return v.get<std::int64_t>();
  }
  std::int64_t integer(const char* name, std::int64_t otherwise) const {
    return present(name) ? integer(name) : otherwise;
  }
  double number(const char* name) const {
    const nlohmann::json& v = field(name);
    if (!v.is_number() || !std::isfinite(v.get<double>()))
      detail::fail(name_, ": ", name, " must be a finite number, not ", v.dump());
    return v.get<double>();
  }
  double number(const char* name, double otherwise) const {
    return present(name) ? number(name) : otherwise;
  }
  bool boolean(const char* name, bool otherwise) const {
    if (!present(name)) return otherwise;
    if (!json_[name].is_boolean())
      detail::fail(name_, ": ", name, " must be true or false, not ", json_[name].dump());
    return json_[name].get<bool>();
  }
  std::string text(const char* name) const {
    const nlohmann::json& v = field(name);
    if (!v.is_string()) detail::fail(name_, ": ", name, " must be a string, not ", v.dump());
    return v.get<std::string>();
  }

  void check_layer(std::int64_t layer) const {
    const std::int64_t count = layers();
    if (layer < 0 || layer >= count)
      detail::fail(name_, ": layer ", layer, " is not among num_hidden_layers (", count, ")");
  }

  // Whether layer `layer` attends through a sliding window.
  bool windowed(const std::string& type, std::int64_t layer) const {
    if (!present("sliding_window")) return false;
    if (present("layer_types")) {
      const nlohmann::json& kinds = json_["layer_types"];
      if (!kinds.is_array() || std::int64_t(kinds.size()) != layers())
        detail::fail(name_, ": layer_types must list num_hidden_layers (", layers(), ") entries");
      const nlohmann::json& kind = kinds[std::size_t(layer)];
      if (!kind.is_string())
        detail::fail(name_, ": layer_types[", layer, "] must be a string, not ", kind.dump());
      return kind.get<std::string>() == "sliding_attention";
    }
    if (type == "qwen2")
      return boolean("use_sliding_window", false) && layer >= integer("max_window_layers", 0);
    return type == "mistral";
  }

  nlohmann::json json_;
  std::string name_;
};

}  // namespace MULTIHEAD_ISA_NAMESPACE
}  // namespace multihead
