// The translation unit bench/compile_cost.sh compiles to measure what multihead costs a
// consumer's build: the whole header, a GQA layer, a prefill and a decode step over a bf16 cache.
#include <multihead/multihead.hpp>

#include <cstdio>

int main() {
  multihead::LayerConfig config;
  config.model_dim = 512;
  config.heads = 8;
  config.kv_groups = 2;
  config.head_dim = 64;
  config.causal = true;
  multihead::GQA layer(config);
  layer.init_random(1);
  multihead::KvCache<multihead::bf16> cache(/*batch=*/1, /*capacity=*/64, config.kv_groups,
                                            config.head_dim);
  multihead::RowMatrix y;
  layer.forward(multihead::RowMatrix::Random(16, config.model_dim), cache, y);  // prefill
  layer.forward(multihead::RowMatrix::Random(1, config.model_dim), cache, y);   // decode step
  std::printf("%s\n%f\n", multihead::build_info().describe().c_str(), y(0, 0));
  return 0;
}
