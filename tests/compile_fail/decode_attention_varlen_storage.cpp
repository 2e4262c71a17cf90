// decode_attention_varlen reads packed K/V of float, bf16 or fp16; another type is refused.
// error: decode_attention_varlen: K/V must be float, bf16 or fp16
#include <cstdint>

#include <multihead/attention/varlen.hpp>

#ifdef MULTIHEAD_MISUSE
using Storage = double;
#else
using Storage = float;
#endif

void decode(const multihead::TensorView<const float>& q, const multihead::TensorView<const Storage>& k,
            const multihead::TensorView<const Storage>& v,
            multihead::Span<const std::int64_t> cu_seqlens_k, const multihead::TensorView<float>& o) {
  multihead::decode_attention_varlen<Storage>(q, k, v, cu_seqlens_k, o);
}
