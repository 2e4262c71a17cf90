// The kernels library that multihead_link() builds once per ISA (include/multihead/core/compiled.hpp):
// every MULTIHEAD_INSTANCE of the headers, instantiated here with the flags of the programs that
// link it.
#define MULTIHEAD_COMPILING_KERNELS
#include <multihead/multihead.hpp>
