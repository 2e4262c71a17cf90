// A KvCache stores float, bf16 or fp16; another element type is refused when the type is named.
// error: KvCache<Storage>: Storage must be float, bf16, fp16, q8 or q4
#include <multihead/cache/kv_cache.hpp>

#ifdef MULTIHEAD_MISUSE
using Storage = double;
#else
using Storage = multihead::bf16;
#endif

void make_cache() {
  multihead::KvCache<Storage> cache(1, 8, 2, 4);
  (void)cache;
}
