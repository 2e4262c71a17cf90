// A consumer's program: includes multihead, runs a layer and a kernel, and checks one result it
// can know in advance. Exit status 0 means the library was usable from this kind of project.
#include <multihead/multihead.hpp>

#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

int main() {
  using namespace multihead;

  // With all keys equal every query attends uniformly, so each output row is the mean of V.
  const std::int64_t kv_len = 5, heads = 4, groups = 2, dim = 8;
  std::vector<float> q(heads * dim, 0.5f), k(kv_len * groups * dim, 1.0f);
  std::vector<float> v(kv_len * groups * dim), o(heads * dim);
  for (std::size_t i = 0; i < v.size(); ++i) v[i] = static_cast<float>(i % 7);
  reference_attention(TensorView<const float>(q.data(), q.size(), 1, 1, heads, dim),
                      TensorView<const float>(k.data(), k.size(), 1, kv_len, groups, dim),
                      TensorView<const float>(v.data(), v.size(), 1, kv_len, groups, dim),
                      TensorView<float>(o.data(), o.size(), 1, 1, heads, dim));
  for (std::int64_t h = 0; h < heads; ++h)
    for (std::int64_t c = 0; c < dim; ++c) {
      double mean = 0;
      for (std::int64_t t = 0; t < kv_len; ++t) mean += v[(t * groups + h / 2) * dim + c];
      mean /= kv_len;
      if (std::abs(o[h * dim + c] - mean) > 1e-5) {
        std::printf("wrong output at head %lld channel %lld\n", (long long)h, (long long)c);
        return 1;
      }
    }

  LayerConfig config;
  config.model_dim = 32;
  config.heads = heads;
  config.kv_groups = groups;
  config.head_dim = dim;
  GQA layer(config);
  layer.init_random(7);
  const RowMatrix y = layer.forward(RowMatrix::Random(6, 32));
  if (!y.allFinite()) return 1;
  // The build it asked for (the consumer's CMakeLists passes what it expects).
  const BuildInfo info = build_info();
  std::printf("%s\n", info.describe().c_str());
#ifdef EXPECT_COMPILED_KERNELS
  if (info.compiled_kernels != (EXPECT_COMPILED_KERNELS != 0)) return 1;
#endif
#ifdef EXPECT_OPENMP
  if (info.openmp != (EXPECT_OPENMP != 0)) return 1;
#endif
#ifdef EXPECT_ISA
  if (std::string(info.isa) != EXPECT_ISA) return 1;
#endif
  return 0;
}
