// Benchmarks of attention kernels on the shape table, each read against the machine's peaks.
//
// Adding a kernel is one call in main.cpp:
//   register_attention("fused", [](const AttentionViews& a, const multihead::KernelOptions& o) {
//     multihead::fused_attention(a.q, a.k, a.v, a.o, o);
//   });
#pragma once

#include <multihead/multihead.hpp>

#include <functional>
#include <string>
#include <vector>

#include "attention_buffers.hpp"
#include "shapes.hpp"

namespace bench {

// A kernel under test: runs attention over `views` with `options` (causal from the shape,
// threads from the benchmark name).
using AttentionKernel =
    std::function<void(const AttentionViews& views, const multihead::KernelOptions& options)>;

// Registers <path>/<shape>/threads:<n> for every shape of `shapes` and every n of
// thread_counts(), in that order. Each reports the counters of report_roofline() (flops,
// bytes, roofline and the binding roof) for Shape::flops and Shape::bytes.
void register_attention(const std::string& path, AttentionKernel kernel,
                        const std::vector<Shape>& shapes = prefill_shapes());

// <path>/<shape>/threads:<n>: fused_attention with Q, K, V and O in bf16 (the shapes' values
// rounded), its roofline read against the bf16 dot product's peak where the CPU has one.
void register_bf16_attention(const std::string& path, const std::vector<Shape>& shapes);

}  // namespace bench
