// io/hf_config.hpp and io/checkpoint.hpp: small Llama, Qwen2, Mistral and DeepSeek-V2/V3
// checkpoints written by the tests (config.json and safetensors, one file or shards), loaded
// layer by layer. A loaded layer has the config config.json describes and exactly the weights of
// the file, so its output is bitwise that of the same weights set by hand; every inconsistency
// between config and weights, and every bad field, is refused naming it.
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <multihead/io/checkpoint.hpp>
#include <random>
#include <string>
#include <vector>

#include "support/safetensors_writer.hpp"
#include "support/testing.hpp"

namespace {

using multihead::bf16;
using multihead::fp16;
using multihead::HfCheckpoint;
using multihead::LatentWeight;
using multihead::Projection;
using multihead::RopeScalingType;
using multihead::RowMatrix;
using testing_io::WrittenTensor;

template <class T>
std::vector<T> as(const std::vector<float>& x) {
  std::vector<T> out;
  for (float v : x) out.push_back(multihead::from_float<T>(v));
  return out;
}

// One tensor's values (as floats) and the dtype it is written in.
struct Values {
  std::string dtype;
  std::vector<std::int64_t> shape;
  std::vector<float> data;  // already representable in dtype
};

std::vector<float> random_values(std::int64_t n, std::mt19937& rng, const std::string& dtype) {
  std::uniform_real_distribution<float> u(-0.3f, 0.3f);
  std::vector<float> out(static_cast<std::size_t>(n));
  for (float& x : out) {
    x = u(rng);
    if (dtype == "BF16") x = test_support::stored<bf16>(x);
    if (dtype == "F16") x = test_support::stored<fp16>(x);
  }
  return out;
}

WrittenTensor written(const std::string& name, const Values& v) {
  WrittenTensor t{name, v.dtype, v.shape, {}};
  if (v.dtype == "F32") {
    t.bytes = testing_io::bytes_of(v.data);
  } else if (v.dtype == "BF16") {
    std::vector<bf16> h;
    for (float x : v.data) h.push_back(multihead::from_float<bf16>(x));
    t.bytes = testing_io::bytes_of(h);
  } else {
    std::vector<fp16> h;
    for (float x : v.data) h.push_back(multihead::from_float<fp16>(x));
    t.bytes = testing_io::bytes_of(h);
  }
  return t;
}

// A checkpoint directory: config.json and the tensors, in `shards` files (with an index when
// more than one), tensors dealt to the shards in turn.
class Checkpoint {
 public:
  Checkpoint(const std::string& name, const std::string& config) : dir_(name) {
    testing_io::write_text(dir_ / "config.json", config);
  }
  // Adds tensor `name` of random values (for the layers' tests) and returns them.
  const Values& add(const std::string& name, std::vector<std::int64_t> shape,
                    const std::string& dtype = "F32") {
    std::int64_t n = 1;
    for (std::int64_t e : shape) n *= e;
    Values v{dtype, std::move(shape), random_values(n, rng_, dtype)};
    return tensors_[name] = std::move(v);
  }
  void write(int shards = 1) {
    std::vector<std::vector<WrittenTensor>> files(static_cast<std::size_t>(shards));
    std::string map;
    int next = 0;
    for (const auto& [name, v] : tensors_) {
      files[std::size_t(next)].push_back(written(name, v));
      const std::string file = file_name(next, shards);
      map += (map.empty() ? "" : ",") + ("\"" + name + "\":\"" + file + "\"");
      next = (next + 1) % shards;
    }
    for (int i = 0; i < shards; ++i)
      testing_io::write_file(dir_ / file_name(i, shards),
                             testing_io::file_image(files[std::size_t(i)]));
    if (shards > 1)
      testing_io::write_text(dir_ / "model.safetensors.index.json",
                             "{\"metadata\":{},\"weight_map\":{" + map + "}}");
  }
  std::string path() const { return dir_.path().string(); }
  const Values& operator[](const std::string& name) const { return tensors_.at(name); }
  void rewrite_config(const std::string& config) const {
    testing_io::write_text(dir_ / "config.json", config);
  }

 private:
  static std::string file_name(int i, int shards) {
    if (shards == 1) return "model.safetensors";
    return "model-0000" + std::to_string(i + 1) + "-of-0000" + std::to_string(shards) +
           ".safetensors";
  }
  testing_io::TempDir dir_;
  std::map<std::string, Values> tensors_;
  std::mt19937 rng_{20261207};
};

std::string attn(int layer, const std::string& what) {
  return "model.layers." + std::to_string(layer) + ".self_attn." + what;
}

// Writes layers 0 and 1 of a dense model: Wq [heads·head_dim, hidden] ... and biases as asked.
void add_dense_layers(Checkpoint& c, std::int64_t hidden, std::int64_t heads, std::int64_t kv,
                      std::int64_t head_dim, const std::string& dtype, bool qkv_bias, bool o_bias) {
  for (int layer = 0; layer < 2; ++layer) {
    c.add(attn(layer, "q_proj.weight"), {heads * head_dim, hidden}, dtype);
    c.add(attn(layer, "k_proj.weight"), {kv * head_dim, hidden}, dtype);
    c.add(attn(layer, "v_proj.weight"), {kv * head_dim, hidden}, dtype);
    c.add(attn(layer, "o_proj.weight"), {hidden, heads * head_dim}, dtype);
    if (qkv_bias) {
      c.add(attn(layer, "q_proj.bias"), {heads * head_dim}, dtype);
      c.add(attn(layer, "k_proj.bias"), {kv * head_dim}, dtype);
      c.add(attn(layer, "v_proj.bias"), {kv * head_dim}, dtype);
    }
    if (o_bias) c.add(attn(layer, "o_proj.bias"), {hidden}, dtype);
  }
}

RowMatrix input(std::int64_t rows, std::int64_t cols) {
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  RowMatrix x(rows, cols);
  for (Eigen::Index i = 0; i < x.size(); ++i) x.data()[i] = u(rng);
  return x;
}

// Sets a dense layer's weights by hand from the written values, by Hugging Face's names, in the
// dtype they were written in (as a user without the loader would).
template <class Layer>
void set_by_hand(Layer& layer, const Checkpoint& c, int index) {
  for (const char* p : {"q_proj", "k_proj", "v_proj", "o_proj"}) {
    for (const char* kind : {"weight", "bias"}) {
      const std::string name = attn(index, std::string(p) + "." + kind);
      if (kind == std::string("bias") && !layer.has_bias(multihead::projection_from_hf_name(p)))
        continue;
      const Values& v = c[name];
      const auto set = [&](const auto& data) {
        if (kind == std::string("weight"))
          layer.set_weight(p, data.data(), std::int64_t(data.size()));
        else
          layer.set_bias(p, data.data(), std::int64_t(data.size()));
      };
      if (v.dtype == "F32")
        set(v.data);
      else if (v.dtype == "BF16")
        set(as<bf16>(v.data));
      else
        set(as<fp16>(v.data));
    }
  }
}

bool same_bits(const RowMatrix& a, const RowMatrix& b) {
  return a.rows() == b.rows() && a.cols() == b.cols() &&
         std::memcmp(a.data(), b.data(), sizeof(float) * std::size_t(a.size())) == 0;
}

TEST(Checkpoint, LlamaLayerIsTheSameWeightsSetByHand) {
  Checkpoint c("ck_llama", R"({
    "model_type": "llama", "hidden_size": 32, "num_attention_heads": 4, "num_key_value_heads": 2,
    "num_hidden_layers": 2, "rope_theta": 500000.0, "max_position_embeddings": 131072,
    "attention_bias": false, "torch_dtype": "float32",
    "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                     "original_max_position_embeddings": 8192, "rope_type": "llama3"}})");
  add_dense_layers(c, 32, 4, 2, 8, "F32", false, false);
  c.write();
  const HfCheckpoint checkpoint(c.path());
  const multihead::LayerConfig config = checkpoint.config().layer_config(1);
  EXPECT_EQ(config.model_dim, 32);
  EXPECT_EQ(config.heads, 4);
  EXPECT_EQ(config.kv_groups, 2);
  EXPECT_EQ(config.head_dim, 8);  // hidden_size / heads
  EXPECT_FALSE(config.bias);
  EXPECT_TRUE(config.causal);
  EXPECT_EQ(config.window_left, -1);
  ASSERT_TRUE(config.rope);
  EXPECT_EQ(config.rope->base, 500000.0);
  EXPECT_EQ(config.rope->scaling.type, RopeScalingType::llama3);
  EXPECT_EQ(config.rope->scaling.factor, 8.0);
  EXPECT_EQ(config.rope->scaling.original_context, 8192);
  EXPECT_EQ(config.rope->scaling.high_freq_factor, 4.0);

  multihead::GQA loaded = checkpoint.attention(1);
  const auto& wk = c[attn(1, "k_proj.weight")].data;
  EXPECT_EQ(std::vector<float>(loaded.weight(Projection::k).data(),
                               loaded.weight(Projection::k).data() + wk.size()),
            wk);
  multihead::GQA by_hand(config);
  set_by_hand(by_hand, c, 1);
  const RowMatrix x = input(12, 32);
  EXPECT_TRUE(same_bits(loaded.forward(x), by_hand.forward(x)));
  // Layer 0 has other weights: the layer index is honoured.
  EXPECT_FALSE(same_bits(checkpoint.attention(0).forward(x), by_hand.forward(x)));
}

TEST(Checkpoint, Qwen2BiasesAndShardedBf16Weights) {
  Checkpoint c("ck_qwen2", R"({
    "model_type": "qwen2", "hidden_size": 48, "num_attention_heads": 6, "num_key_value_heads": 2,
    "num_hidden_layers": 2, "rope_theta": 1000000.0, "max_position_embeddings": 32768,
    "sliding_window": 32768, "use_sliding_window": false, "max_window_layers": 28,
    "rope_scaling": {"factor": 4.0, "original_max_position_embeddings": 32768, "type": "yarn"}})");
  add_dense_layers(c, 48, 6, 2, 8, "BF16", /*qkv_bias=*/true, /*o_bias=*/false);
  c.write(/*shards=*/3);
  const HfCheckpoint checkpoint(c.path());
  EXPECT_EQ(checkpoint.tensors().files(), 3u);
  const multihead::LayerConfig config = checkpoint.config().layer_config(0);
  EXPECT_TRUE(config.bias);
  EXPECT_FALSE(config.o_bias());
  EXPECT_EQ(config.window_left, -1);  // use_sliding_window is false
  EXPECT_EQ(config.rope->scaling.type, RopeScalingType::yarn);
  EXPECT_EQ(config.rope->scaling.original_context, 32768);
  EXPECT_EQ(config.rope->scaling.beta_fast, 32.0);  // transformers' default

  multihead::GQA loaded = checkpoint.attention(0);
  multihead::GQA by_hand(config);
  set_by_hand(by_hand, c, 0);
  const RowMatrix x = input(9, 48);
  EXPECT_TRUE(same_bits(loaded.forward(x), by_hand.forward(x)));
  EXPECT_EQ(loaded.bias(Projection::v)(3), c[attn(0, "v_proj.bias")].data[3]);
}

TEST(Checkpoint, MistralSlidingWindowAndFp16Weights) {
  const std::string config_text = R"({
    "model_type": "mistral", "hidden_size": 32, "num_attention_heads": 4, "num_key_value_heads": 1,
    "head_dim": 16, "num_hidden_layers": 2, "rope_theta": 10000.0, "sliding_window": 5})";
  Checkpoint c("ck_mistral", config_text);
  add_dense_layers(c, 32, 4, 1, 16, "F16", false, false);
  c.write();
  const HfCheckpoint checkpoint(c.path());
  const multihead::LayerConfig config = checkpoint.config().layer_config(1);
  EXPECT_EQ(config.head_dim, 16);    // given, not hidden_size / heads
  EXPECT_EQ(config.window_left, 4);  // 5 keys: the query's own and 4 before it
  EXPECT_EQ(config.rope->scaling.type, RopeScalingType::none);
  multihead::MQA loaded = checkpoint.attention<multihead::variant::MultiQuery>(1);
  multihead::MQA by_hand(config);
  set_by_hand(by_hand, c, 1);
  const RowMatrix x = input(11, 32);
  EXPECT_TRUE(same_bits(loaded.forward(x), by_hand.forward(x)));

  // A config of one's own loads the same weights: here without the window.
  multihead::LayerConfig full = config;
  full.window_left = -1;
  EXPECT_FALSE(same_bits(checkpoint.attention(1, full).forward(x), by_hand.forward(x)));
}

// DeepSeek-V2-Lite-like (q_proj) and V3-like (q_a_proj, q_b_proj), with yarn.
std::string deepseek_config(const std::string& type, bool q_lora) {
  return R"({"model_type": ")" + type + R"(", "hidden_size": 40, "num_attention_heads": 4,
    "num_hidden_layers": 2, "kv_lora_rank": 16, "q_lora_rank": )" +
         (q_lora ? "24" : "null") +
         R"(, "qk_nope_head_dim": 8, "qk_rope_head_dim": 4, "v_head_dim": 6,
    "rms_norm_eps": 1e-06, "rope_theta": 10000, "max_position_embeddings": 163840,
    "attention_bias": false,
    "rope_scaling": {"beta_fast": 32, "beta_slow": 1, "factor": 40, "mscale": 1.0,
                     "mscale_all_dim": 1.0, "original_max_position_embeddings": 4096,
                     "type": "yarn"}})";
}

void add_latent_layer(Checkpoint& c, int layer, bool q_lora, const std::string& dtype) {
  if (q_lora) {
    c.add(attn(layer, "q_a_proj.weight"), {24, 40}, dtype);
    c.add(attn(layer, "q_a_layernorm.weight"), {24}, dtype);
    c.add(attn(layer, "q_b_proj.weight"), {4 * 12, 24}, dtype);
  } else {
    c.add(attn(layer, "q_proj.weight"), {4 * 12, 40}, dtype);
  }
  c.add(attn(layer, "kv_a_proj_with_mqa.weight"), {16 + 4, 40}, dtype);
  c.add(attn(layer, "kv_a_layernorm.weight"), {16}, dtype);
  c.add(attn(layer, "kv_b_proj.weight"), {4 * (8 + 6), 16}, dtype);
  c.add(attn(layer, "o_proj.weight"), {40, 4 * 6}, dtype);
}

TEST(Checkpoint, DeepSeekLatentLayersWithAndWithoutQueryCompression) {
  for (const bool q_lora : {false, true}) {
    SCOPED_TRACE(q_lora ? "deepseek_v3, q_lora_rank 24" : "deepseek_v2, no q_lora_rank");
    Checkpoint c("ck_deepseek", deepseek_config(q_lora ? "deepseek_v3" : "deepseek_v2", q_lora));
    add_latent_layer(c, 0, q_lora, "BF16");
    add_latent_layer(c, 1, q_lora, "BF16");
    c.write(q_lora ? 2 : 1);
    const HfCheckpoint checkpoint(c.path());
    ASSERT_TRUE(checkpoint.config().is_latent());
    const multihead::LatentConfig config = checkpoint.config().latent_config(1);
    EXPECT_EQ(config.latent_dim, 16);
    EXPECT_EQ(config.query_latent_dim.has_value(), q_lora);
    EXPECT_EQ(config.nope_dim, 8);
    EXPECT_EQ(config.rope_dim, 4);
    EXPECT_EQ(config.value_dim, 6);
    EXPECT_EQ(config.rope_scaling.type, RopeScalingType::yarn);
    EXPECT_EQ(config.rope_scaling.factor, 40.0);
    EXPECT_EQ(config.rope_scaling.original_context, 4096);
    // DeepSeek's softmax scale: 1/sqrt(12) times (0.1·ln 40 + 1)².
    const double m = 0.1 * std::log(40.0) + 1.0;
    EXPECT_NEAR(config.resolved_scale(), m * m / std::sqrt(12.0), 1e-6);

    multihead::MLA loaded = checkpoint.latent_attention(1);
    multihead::MLA by_hand(config);
    for (int i = 0; i < multihead::kLatentWeights; ++i) {
      const auto w = static_cast<LatentWeight>(i);
      if (!by_hand.has_weight(w)) continue;
      const auto values =
          as<bf16>(c[attn(1, std::string(multihead::latent_weight_name(w)) + ".weight")].data);
      by_hand.set_weight(w, values.data(), std::int64_t(values.size()));
    }
    const RowMatrix x = input(7, 40);
    EXPECT_TRUE(same_bits(loaded.forward(x), by_hand.forward(x)));
  }
}

TEST(Checkpoint, ConfigAndWeightsThatDisagreeAreRefused) {
  Checkpoint c("ck_bad", R"({"model_type": "llama", "hidden_size": 32, "num_attention_heads": 4,
                            "num_key_value_heads": 2, "num_hidden_layers": 2})");
  add_dense_layers(c, 32, 4, 2, 8, "F32", false, /*o_bias=*/true);  // a bias config.json denies
  c.add(attn(0, "q_norm.weight"), {8}, "F32");
  c.write();
  const HfCheckpoint checkpoint(c.path());
  EXPECT_INVALID("holds model.layers.0.self_attn.o_proj.bias but the layer's config has no bias",
                 checkpoint.attention(0));
  EXPECT_INVALID("layer 2 is not among num_hidden_layers (2)", checkpoint.attention(2));
  EXPECT_INVALID("model_type 'llama' is not one multihead builds MLA layers of",
                 checkpoint.latent_attention(0));

  // The loader checks each tensor's shape against the layer's config.
  multihead::LayerConfig wider = checkpoint.config().layer_config(0);
  wider.bias = true;
  wider.head_dim = 4;
  EXPECT_INVALID(
      "tensor 'model.layers.0.self_attn.q_proj.weight' has shape [32, 32], expected [16, 32]",
      checkpoint.attention(0, wider));

  // An MLA checkpoint whose config says no q_lora_rank but which holds q_a_proj.
  Checkpoint d("ck_bad_mla", deepseek_config("deepseek_v2", false));
  add_latent_layer(d, 0, /*q_lora=*/true, "F32");
  add_latent_layer(d, 1, false, "F32");
  d.write();
  EXPECT_INVALID("holds model.layers.0.self_attn.q_a_proj.weight but the layer's config has no",
                 HfCheckpoint(d.path()).latent_attention(0));
}

TEST(Checkpoint, BadConfigFieldsAreRefusedNamingThem) {
  Checkpoint c("ck_fields", "{}");
  add_dense_layers(c, 32, 4, 2, 8, "F32", false, false);
  c.write();
  const auto config = [&](const std::string& text) {
    c.rewrite_config(text);
    return HfCheckpoint(c.path()).config().layer_config(0);
  };
  const std::string base = R"("num_hidden_layers": 2, "num_attention_heads": 4)";
  EXPECT_INVALID("config.json: no model_type", config("{" + base + "}"));
  EXPECT_INVALID("model_type 'gemma3' is not one multihead builds dense layers of",
                 config(R"({"model_type": "gemma3", )" + base + "}"));
  EXPECT_INVALID("config.json: no hidden_size", config(R"({"model_type": "llama", )" + base + "}"));
  EXPECT_INVALID("hidden_size must be an integer, not \"32\"",
                 config(R"({"model_type": "llama", "hidden_size": "32", )" + base + "}"));
  EXPECT_INVALID(
      "num_key_value_heads must be an integer, not 2.5",
      config(R"({"model_type": "llama", "hidden_size": 32, "num_key_value_heads": 2.5, )" + base +
             "}"));
  EXPECT_INVALID("heads (4) must be divisible by kv_groups (3)",
                 config(R"({"model_type": "llama", "hidden_size": 32, "num_key_value_heads": 3, )" +
                        base + "}"));
  EXPECT_INVALID("rope_scaling type 'longrope' is not one multihead computes",
                 config(R"({"model_type": "llama", "hidden_size": 32, )" + base +
                        R"(, "rope_scaling": {"rope_type": "longrope", "factor": 2}})"));
  EXPECT_INVALID("rope_scaling: no factor",
                 config(R"({"model_type": "llama", "hidden_size": 32, )" + base +
                        R"(, "rope_scaling": {"rope_type": "linear"}})"));
  EXPECT_INVALID(
      "attention_bias must be true or false, not 1",
      config(R"({"model_type": "llama", "hidden_size": 32, "attention_bias": 1, )" + base + "}"));
  EXPECT_INVALID(
      "the key 'hidden_size' appears twice",
      config(R"({"model_type": "llama", "hidden_size": 32, "hidden_size": 64, )" + base + "}"));
  EXPECT_INVALID("config.json is not valid JSON", config("{\"model_type\": "));
  testing_io::TempDir empty("ck_empty");
  EXPECT_INVALID("config.json: cannot open", HfCheckpoint(empty.path().string()));
}

}  // namespace
