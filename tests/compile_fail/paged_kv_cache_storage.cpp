// A PagedKvCache stores float, bf16 or fp16; another element type is refused when the type is named.
// error: PagedKvCache<Storage>: Storage must be float, bf16, fp16, q8 or q4
#include <multihead/cache/paged_kv_cache.hpp>

#ifdef MULTIHEAD_MISUSE
using Storage = double;
#else
using Storage = multihead::bf16;
#endif

void make_cache() {
  multihead::PagedKvCache<Storage> cache(4, 16, 2, 4);
  (void)cache;
}
