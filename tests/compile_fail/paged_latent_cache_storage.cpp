// A PagedLatentCache stores float, bf16 or fp16; another element type is refused when the type is named.
// error: PagedLatentCache<Storage>: Storage must be float, bf16, fp16, q8 or q4
#include <multihead/cache/paged_latent_cache.hpp>

#ifdef MULTIHEAD_MISUSE
using Storage = double;
#else
using Storage = multihead::bf16;
#endif

void make_cache() {
  multihead::PagedLatentCache<Storage> cache(4, 16, 16, 4);
  (void)cache;
}
