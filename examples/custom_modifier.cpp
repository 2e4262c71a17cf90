// A custom score modifier: packed documents with a distance bias.
//
// Training and prefill servers pack several documents into one sequence; each token may attend
// only to earlier tokens of its own document. No built-in option says "same document", so this
// example writes it as a modifier (modifiers.hpp): visible() hides other documents' keys, and
// logit() adds a learned-style bias per distance bucket (T5's relative attention, in miniature).
// The same modifier runs unchanged in fused_attention, reference_attention and decode_attention.
//
// The check at the end: attention over the packed sequence equals attention over each document
// on its own, with the same bias, so nothing leaks across documents.
//
//   custom_modifier [--documents 3] [--length 200]
#include <multihead/multihead.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

namespace {

// The modifier: keys of other documents are hidden; each distance bucket adds its bias.
struct PackedDocuments {
  const std::vector<int>* document_of;  // per token of the packed sequence
  std::int64_t first_token = 0;         // where this call's keys start in the packed sequence
  std::int64_t query_offset = 0;        // query i is token first_token + query_offset + i
  std::vector<float> bucket_bias;       // per distance bucket: 0, 1, 2–3, 4–7, …

  bool visible(const multihead::ScoreSite& at) const {
    const std::int64_t query = first_token + query_offset + at.query, key = first_token + at.key;
    return (*document_of)[std::size_t(query)] == (*document_of)[std::size_t(key)];
  }
  float logit(float score, const multihead::ScoreSite& at) const {
    const std::int64_t distance = std::abs(query_offset + at.query - at.key);
    std::size_t bucket = 0;
    while ((std::int64_t{1} << bucket) <= distance && bucket + 1 < bucket_bias.size()) ++bucket;
    return score + bucket_bias[bucket];
  }
};

std::int64_t flag(int argc, char** argv, const char* name, std::int64_t fallback) {
  for (int i = 1; i + 1 < argc; ++i)
    if (std::strcmp(argv[i], name) == 0) return std::atoll(argv[i + 1]);
  return fallback;
}

}  // namespace

int main(int argc, char** argv) {
  const std::int64_t documents = flag(argc, argv, "--documents", 3);
  const std::int64_t length = flag(argc, argv, "--length", 200);  // tokens per document
  const std::int64_t heads = 8, groups = 2, dim = 64, tokens = documents * length;

  std::mt19937 random(42);
  std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
  const auto randoms = [&](std::int64_t n) {
    std::vector<float> values(static_cast<std::size_t>(n));
    for (float& x : values) x = uniform(random);
    return values;
  };
  std::vector<float> q = randoms(tokens * heads * dim), k = randoms(tokens * groups * dim),
                     v = randoms(tokens * groups * dim), packed(static_cast<std::size_t>(tokens * heads * dim));
  std::vector<int> document_of(static_cast<std::size_t>(tokens));
  for (std::int64_t t = 0; t < tokens; ++t) document_of[std::size_t(t)] = int(t / length);

  PackedDocuments modifier{&document_of, 0, 0, {}};
  for (int bucket = 0; bucket < 8; ++bucket) modifier.bucket_bias.push_back(-0.25f * bucket);

  // The packed call: one fused_attention over every document, causal, the modifier on top.
  multihead::KernelOptions options;
  options.causal = true;
  options.modifier = multihead::ModifierRef(modifier);
  using View = multihead::TensorView<float>;
  multihead::fused_attention(View(q.data(), std::int64_t(q.size()), 1, tokens, heads, dim),
                             View(k.data(), std::int64_t(k.size()), 1, tokens, groups, dim),
                             View(v.data(), std::int64_t(v.size()), 1, tokens, groups, dim),
                             View(packed.data(), std::int64_t(packed.size()), 1, tokens, heads, dim),
                             options);

  // Each document alone (its views start at its first token): must give the same rows.
  double worst = 0.0;
  std::vector<float> alone(static_cast<std::size_t>(length * heads * dim));
  for (std::int64_t doc = 0; doc < documents; ++doc) {
    const std::int64_t t0 = doc * length;
    PackedDocuments own = modifier;
    own.first_token = t0;
    multihead::KernelOptions own_options = options;
    own_options.modifier = multihead::ModifierRef(own);
    multihead::reference_attention(
        View(q.data() + t0 * heads * dim, length * heads * dim, 1, length, heads, dim),
        View(k.data() + t0 * groups * dim, length * groups * dim, 1, length, groups, dim),
        View(v.data() + t0 * groups * dim, length * groups * dim, 1, length, groups, dim),
        View(alone.data(), std::int64_t(alone.size()), 1, length, heads, dim), own_options);
    for (std::size_t i = 0; i < alone.size(); ++i)
      worst = std::max(worst, double(std::abs(alone[i] - packed[std::size_t(t0 * heads * dim) + i])));
  }
  std::printf("%lld documents of %lld tokens packed into one call (%d heads, %d KV groups, d %d)\n",
              static_cast<long long>(documents), static_cast<long long>(length), int(heads),
              int(groups), int(dim));
  std::printf("max |packed - each document alone| = %.3g\n", worst);
  const bool ok = worst < 1e-4;
  std::printf("%s\n", ok ? "no attention crosses a document boundary" : "MISMATCH");
  return ok ? 0 : 1;
}
