// Per-thread scratch memory for the kernels: kept for the thread's lifetime and grown as needed,
// so that a call allocates nothing once its shapes have been seen. Attention runs once per layer
// and token (decode) or prompt (prefill), and fresh pages would cost more than small calls' work
// (≈ 12 µs per 4 KiB on first touch).
#pragma once
#include <cstdint>
#include <vector>

#include "isa.hpp"

namespace multihead {
inline namespace MULTIHEAD_ISA_NAMESPACE {
namespace detail {

// At least `floats` floats of the calling thread's scratch, 64-byte aligned. The memory stays
// valid until the thread's next call with a larger size; its contents are not kept.
inline float* thread_scratch(std::int64_t floats) {
  thread_local std::vector<float> buffer;
  const std::size_t needed = static_cast<std::size_t>(floats) + 16;
  if (buffer.size() < needed) buffer.resize(needed);
  float* p = buffer.data();
  return p + (64 - reinterpret_cast<std::uintptr_t>(p) % 64) % 64 / sizeof(float);
}

}  // namespace detail
}  // namespace MULTIHEAD_ISA_NAMESPACE
}  // namespace multihead
