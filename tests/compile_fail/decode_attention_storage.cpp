// decode_attention reads K/V of float, bf16 or fp16; views of another type are refused.
// error: decode_attention: K/V must be float, bf16 or fp16
#include <multihead/attention/decode.hpp>

#ifdef MULTIHEAD_MISUSE
using Storage = double;
#else
using Storage = multihead::fp16;
#endif

void decode(const multihead::TensorView<const float>& q, const multihead::TensorView<const Storage>& k,
            const multihead::TensorView<const Storage>& v, const multihead::TensorView<float>& o) {
  multihead::decode_attention<Storage>(q, k, v, o);
}
