// from_float<Storage>, the conversion generic code stores with, exists for the storage types only.
// error: from_float: Storage must be float, bf16 or fp16
#include <multihead/storage/half.hpp>

#ifdef MULTIHEAD_MISUSE
using Storage = double;
#else
using Storage = multihead::bf16;
#endif

Storage store(float x) { return multihead::from_float<Storage>(x); }
