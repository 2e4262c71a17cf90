// Fuzzes the layers' configurations and their checks (layer/config.hpp, latent_config.hpp,
// rope.hpp, rope_scaling.hpp, attention/modifiers.hpp): every config either passes validate() or
// gets std::invalid_argument (never another exception, a crash or undefined behaviour: built with
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

// Any scaling: a type (or an out-of-range value, which validate() must refuse) and its fields.
void fill_scaling(fuzz::Input& in, multihead::RopeScaling& s) {
  s.type = static_cast<multihead::RopeScalingType>(in.size(0, 5));
  s.factor = double(in.number(-1.0f, 64.0f));
  s.original_context = in.size(-1, 1 << 20);
  s.low_freq_factor = double(in.number(-1.0f, 8.0f));
  s.high_freq_factor = double(in.number(-1.0f, 8.0f));
  s.beta_fast = double(in.number(-1.0f, 64.0f));
  s.beta_slow = double(in.number(-1.0f, 64.0f));
  s.mscale = double(in.number(-1.0f, 2.0f));
  s.mscale_all_dim = double(in.number(-1.0f, 2.0f));
  if (in.flag()) s.attention_factor = double(in.number(-1.0f, 4.0f));
  s.truncate = in.flag();
}

// An accepted rope's frequencies (at its trained context and far past it) and attention factor
// are positive and finite: what the table's angles and rows are made of. (Heads of up to 4096
// dims: a larger one is accepted too, but its table is memory the caller asked for.)
void check_rope(const multihead::RopeConfig& rope, std::int64_t head_dim) {
  if (rope.rotary_dims(head_dim) > 4096) return;
  const multihead::RopeTable table(rope, head_dim);
  for (std::int64_t context : {std::int64_t(1), std::int64_t(1) << 40})
    for (double f : table.inverse_frequencies(context))
      fuzz::check(f > 0.0 && std::isfinite(f), "an accepted rope's frequencies are finite");
  const double factor = table.attention_factor();
  fuzz::check(factor > 0.0 && std::isfinite(factor), "an accepted rope's attention factor is finite");
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
    if (in.flag()) fill_scaling(in, rope.scaling);
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
  if (c.rope) check_rope(*c.rope, c.head_dim);
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
  if (in.flag()) fill_scaling(in, c.rope_scaling);
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
  if (c.rope_dim > 0) check_rope(c.rope(), c.rope_dim);
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
