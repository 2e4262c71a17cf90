// Fuzzes the layers' configurations and their checks (layer/config.hpp, latent_config.hpp,
// rope.hpp, attention/modifiers.hpp): every config either passes validate() or gets
// std::invalid_argument (never another exception, a crash or undefined behaviour: built with
// ASan and UBSan), and a config that passes has sizes that all fit: its weights' bytes, and the
// derived dims, computed again without a throw.
#include <cmath>
#include <cstdint>
#include <stdexcept>

#include <multihead/layer/config.hpp>
#include <multihead/layer/latent_config.hpp>

#include "fuzz_input.hpp"

namespace {

void fill_modifiers(fuzz::Input& in, multihead::ScoreModifiers& m) {
  m.causal = in.flag();
  m.window_left = in.size(-2, 64);
  m.window_right = in.size(-2, 64);
  m.softcap = in.number(0.0f, 60.0f);
  m.alibi = in.flag();
  const std::int64_t sinks = in.size(0, 16);
  for (std::int64_t h = 0; h >= 0 && h < sinks && h < 64; ++h) m.sinks.push_back(in.number(-5, 5));
}

void fuzz_layer(fuzz::Input& in) {
  multihead::LayerConfig c;
  c.model_dim = in.size(0, 4096);
  c.heads = in.size(0, 64);
  c.kv_groups = in.size(0, 64);
  c.head_dim = in.size(0, 256);
  if (in.flag()) c.value_dim = in.size(0, 256);
  c.bias = in.flag();
  if (in.flag()) c.scale = in.number(0.0f, 1.0f);
  if (in.flag()) {
    multihead::RopeConfig rope;
    rope.base = double(in.number(0.0f, 1e6f));
    if (in.flag()) rope.rotary_dim = in.size(0, 256);
    c.rope = rope;
  }
  fill_modifiers(in, c);
  try {
    c.validate();
  } catch (const std::invalid_argument&) {
    return;
  }
  const std::int64_t floats = c.weight_floats();  // must not throw now
  fuzz::check(floats > 0 && floats <= INT64_MAX / 4, "an accepted layer's weight bytes fit");
  fuzz::check(c.heads % c.kv_groups == 0, "an accepted layer's groups divide its heads");
}

void fuzz_latent(fuzz::Input& in) {
  multihead::LatentConfig c;
  c.model_dim = in.size(0, 4096);
  c.heads = in.size(0, 128);
  c.latent_dim = in.size(0, 512);
  if (in.flag()) c.query_latent_dim = in.size(0, 1536);
  c.nope_dim = in.size(0, 128);
  c.rope_dim = in.size(0, 64);
  c.value_dim = in.size(0, 128);
  c.norm_eps = in.number(0.0f, 1e-3f);
  c.rope_base = double(in.number(0.0f, 1e6f));
  if (in.flag()) c.scale = in.number(0.0f, 1.0f);
  fill_modifiers(in, c);
  try {
    c.validate();
  } catch (const std::invalid_argument&) {
    return;
  }
  fuzz::check(c.qk_dim() > 0 && c.cached_dim() > 0, "an accepted MLA config's dims are positive");
  fuzz::check(c.weight_floats() <= INT64_MAX / 4, "an accepted MLA config's weight bytes fit");
  const float scale = c.resolved_scale();  // any positive finite scale is the user's to choose
  fuzz::check(scale > 0.0f && std::isfinite(scale), "an accepted MLA config's scale is finite");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  fuzz::Input in(data, size);
  if (in.flag())
    fuzz_layer(in);
  else
    fuzz_latent(in);
  return 0;
}
