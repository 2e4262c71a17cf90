// Header-only, or the kernels compiled once.
//
// By default every translation unit that calls a kernel compiles it: the fused and decode
// kernels are instantiated for several head dims and tile paths, so one consumer TU that runs a
// GQA layer over a bf16 cache took 32–40 s of CPU at -O2 (GCC 12, -march=native), most of it
// in those instantiations and Eigen's products.
//
// A build that links the kernels library (CMake: multihead_link(<target>), see
// cmake/MultiheadLink.cmake) defines MULTIHEAD_COMPILED: the heaviest templates, listed with
// MULTIHEAD_INSTANCE beside their definitions, are then declared `extern template` and taken from
// that library, compiled once per ISA with the consumer's own flags (the same TU: 6.3 s).
// The library's one source defines MULTIHEAD_COMPILING_KERNELS, which turns the same lines into
// the explicit instantiations. Nothing else changes: the code is the same, only where it is
// compiled moves.
//
// Both sides must agree on the ISA and on OpenMP (everything lives in an ISA-named namespace, so
// a mismatch in ISA fails to link; multihead_link gives both the same flags).
#pragma once

#if defined(MULTIHEAD_COMPILING_KERNELS)
#define MULTIHEAD_INSTANCE(...) template __VA_ARGS__;
#elif defined(MULTIHEAD_COMPILED)
#define MULTIHEAD_INSTANCE(...) extern template __VA_ARGS__;
#else
#define MULTIHEAD_INSTANCE(...)
#endif
