// A custom modifier whose hook is not const has no hook the kernels can call: ModifierRef must
// refuse it at compile time instead of running attention unmodified.
// error: a modifier needs at least one hook
#include <multihead/attention/options.hpp>

struct HalveScores {
#ifdef MULTIHEAD_MISUSE
  float logit(float s, const multihead::ScoreSite&) { return s / 2; }  // not const
#else
  float logit(float s, const multihead::ScoreSite&) const { return s / 2; }
#endif
};

multihead::KernelOptions options_with(const HalveScores& modifier) {
  multihead::KernelOptions options;
  options.modifier = multihead::ModifierRef(modifier);
  return options;
}
