// Loads one attention layer from a Hugging Face checkpoint directory (config.json and its
// safetensors: Llama, Mistral, Qwen2, DeepSeek-V2/V3) and prints its output for a fixed input,
// so that a user with a real checkpoint can hold the figures against transformers' (README,
// "Loading a checkpoint", has the Python side).
//
//   load_checkpoint <checkpoint directory> [layer = 0] [tokens = 4]
//
// The input is x[t, j] = 0.5·sin(0.01·(t·hidden_size + j)), the tokens at positions 0, 1, ...
// of one causal sequence. Printed: the layer's config as read, the load's time and the bytes the
// layer holds, then the first 8 values of each token's output row and the sum over the row.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <multihead/io/checkpoint.hpp>
#include <stdexcept>
#include <string>

namespace {

multihead::RowMatrix fixed_input(std::int64_t tokens, std::int64_t model_dim) {
  multihead::RowMatrix x(tokens, model_dim);
  for (std::int64_t t = 0; t < tokens; ++t)
    for (std::int64_t j = 0; j < model_dim; ++j)
      x(t, j) = static_cast<float>(0.5 * std::sin(0.01 * double(t * model_dim + j)));
  return x;
}

void print_rows(const multihead::RowMatrix& y) {
  for (Eigen::Index t = 0; t < y.rows(); ++t) {
    std::printf("  token %ld:", static_cast<long>(t));
    for (Eigen::Index j = 0; j < std::min<Eigen::Index>(8, y.cols()); ++j)
      std::printf(" %+.6f", y(t, j));
    std::printf("   sum %+.6f\n", double(y.row(t).sum()));
  }
}

const char* scaling_name(const multihead::RopeScaling& s) {
  return multihead::rope_scaling_name(s.type);
}

template <class Layer>
void run(Layer& layer, std::int64_t tokens, std::int64_t model_dim, double seconds) {
  std::printf("loaded in %.3f s: %lld parameters, %.2f MB as fp32\n", seconds,
              static_cast<long long>(layer.parameter_count()),
              double(layer.parameter_count()) * 4.0 / 1e6);
  const multihead::RowMatrix y = layer.forward(fixed_input(tokens, model_dim));
  std::printf("output [%lld tokens, %lld]:\n", static_cast<long long>(y.rows()),
              static_cast<long long>(y.cols()));
  print_rows(y);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s <checkpoint directory> [layer = 0] [tokens = 4]\n", argv[0]);
    return 2;
  }
  const std::int64_t layer = argc > 2 ? std::atoll(argv[2]) : 0;
  const std::int64_t tokens = argc > 3 ? std::atoll(argv[3]) : 4;
  try {
    const auto start = std::chrono::steady_clock::now();
    const multihead::HfCheckpoint checkpoint(argv[1]);
    const auto& config = checkpoint.config();
    const auto elapsed = [&] {
      return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    };
    std::printf("%s: model_type %s, %lld layers, %zu safetensors file(s)\n", argv[1],
                config.model_type().c_str(), static_cast<long long>(config.layers()),
                checkpoint.tensors().files());
    if (config.is_latent()) {
      const multihead::LatentConfig c = config.latent_config(layer);
      std::printf(
          "layer %lld: MLA, hidden %lld, heads %lld, latent %lld, q latent %lld, "
          "nope %lld, rope %lld, value %lld, rope scaling %s, softmax scale %.6f\n",
          static_cast<long long>(layer), static_cast<long long>(c.model_dim),
          static_cast<long long>(c.heads), static_cast<long long>(c.latent_dim),
          static_cast<long long>(c.query_latent_dim.value_or(0)),
          static_cast<long long>(c.nope_dim), static_cast<long long>(c.rope_dim),
          static_cast<long long>(c.value_dim), scaling_name(c.rope_scaling),
          double(c.resolved_scale()));
      multihead::MLA mla = checkpoint.latent_attention(layer, c);
      run(mla, tokens, c.model_dim, elapsed());
    } else {
      const multihead::LayerConfig c = config.layer_config(layer);
      std::printf(
          "layer %lld: hidden %lld, heads %lld, kv heads %lld, head_dim %lld, bias %s/%s, "
          "rope base %g, scaling %s, window %lld\n",
          static_cast<long long>(layer), static_cast<long long>(c.model_dim),
          static_cast<long long>(c.heads), static_cast<long long>(c.kv_groups),
          static_cast<long long>(c.head_dim), c.bias ? "qkv" : "-", c.o_bias() ? "o" : "-",
          c.rope->base, scaling_name(c.rope->scaling), static_cast<long long>(c.window_left));
      multihead::GQA dense = checkpoint.attention(layer, c);
      run(dense, tokens, c.model_dim, elapsed());
    }
  } catch (const std::invalid_argument& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 1;
  }
  return 0;
}
