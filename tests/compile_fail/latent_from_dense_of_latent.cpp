// latent_from_dense converts a dense layer (MHA, GQA, MQA) to MLA; given an MLA layer it must
// say so at compile time.
// error: latent_from_dense takes a dense MHA, GQA or MQA layer; this one is MLA already
#include <multihead/layer/latent_from_dense.hpp>

#ifdef MULTIHEAD_MISUSE
using Layer = multihead::MLA;
#else
using Layer = multihead::GQA;
#endif

multihead::LatentConversion convert(const Layer& layer) {
  return multihead::latent_from_dense(layer, multihead::LatentRank::fixed(4));
}
