// AlignedBuffer (the caches' memory) leaves its elements uninitialised and never destroys them,
// so a type with a constructor or destructor is refused.
// error: AlignedBuffer holds trivial types only
#include <string>

#include <multihead/core/aligned_buffer.hpp>

#ifdef MULTIHEAD_MISUSE
using Element = std::string;
#else
using Element = float;
#endif

void make_buffer() {
  multihead::detail::AlignedBuffer<Element> buffer(16);
  (void)buffer;
}
