// What the module tests share: building a layer's config, and its config and parameters as the
// naive oracle's (naive_reference.hpp) module shape and weights, read through the getters.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include <multihead/multihead.hpp>

#include "naive_reference.hpp"

namespace module_testing {

inline multihead::LayerConfig make_config(std::int64_t model_dim, std::int64_t heads,
                                          std::int64_t kv_groups, std::int64_t head_dim,
                                          bool bias, bool causal, std::int64_t value_dim = 0) {
  multihead::LayerConfig c;
  c.model_dim = model_dim;
  c.heads = heads;
  c.kv_groups = kv_groups;
  c.head_dim = head_dim;
  if (value_dim > 0) c.value_dim = value_dim;
  c.bias = bias;
  c.causal = causal;
  return c;
}

// c with a rope of the given layout, rotary_dim (the whole head by default) and base.
inline multihead::LayerConfig with_rope(multihead::LayerConfig c, multihead::RopeLayout layout,
                                        std::optional<std::int64_t> rotary_dim = std::nullopt,
                                        double base = 10000.0) {
  multihead::RopeConfig rope;
  rope.layout = layout;
  rope.rotary_dim = rotary_dim;
  rope.base = base;
  c.rope = rope;
  return c;
}

inline std::vector<float> to_vector(const multihead::RowMatrix& m) {
  return std::vector<float>(m.data(), m.data() + m.size());
}
inline std::vector<float> to_vector(const Eigen::VectorXf& v) {
  return std::vector<float>(v.data(), v.data() + v.size());
}

inline naive::ModuleShape shape_of(const multihead::LayerConfig& c) {
  naive::ModuleShape m;
  m.model_dim = c.model_dim;
  m.heads = c.heads;
  m.kv_groups = c.kv_groups;
  m.head_dim = c.head_dim;
  m.value_dim = c.v_dim();
  m.causal = c.causal;
  if (c.scale) m.scale = static_cast<double>(*c.scale);
  if (c.rope) {
    naive::Rope rope;
    rope.rotary_dim = c.rope->rotary_dim.value_or(c.head_dim);
    rope.base = c.rope->base;
    rope.interleaved = c.rope->layout == multihead::RopeLayout::interleaved;
    m.rope = rope;
  }
  return m;
}

// The layer's parameters, read through its getters.
template <class Layer>
naive::ModuleWeights weights_of(const Layer& layer) {
  using multihead::Projection;
  naive::ModuleWeights w;
  w.wq = to_vector(layer.weight(Projection::q));
  w.wk = to_vector(layer.weight(Projection::k));
  w.wv = to_vector(layer.weight(Projection::v));
  w.wo = to_vector(layer.weight(Projection::o));
  w.bq = to_vector(layer.bias(Projection::q));
  w.bk = to_vector(layer.bias(Projection::k));
  w.bv = to_vector(layer.bias(Projection::v));
  w.bo = to_vector(layer.bias(Projection::o));
  return w;
}

}  // namespace module_testing
