// multihead: CPU attention kernels for MHA, GQA, MQA and MLA. The public header: everything but
// layer/latent_from_dense.hpp (MHA → MLA by a truncated SVD), which brings Eigen's SVD and is
// included by the programs that convert layers. Each finer header may also be included alone.
//
// The layers, each folder including only from those before it:
//   core/       isa (the one reader of compiler feature macros), errors, TensorView, threads,
//               scratch and aligned buffers, the kernels-library switch (compiled.hpp)
//   storage/    bf16 / fp16 and their scalar conversions; the storage codec contract
//   simd/       every intrinsic: per-ISA primitives (Ops) and bulk conversions
//   attention/  the kernels and what they share: options, shape, modifiers, score pass, state,
//               merge, KV sources, tile paths; reference, fused, decode, varlen
//   cache/      contiguous and paged caches, dense and latent, and decode over them
//   layer/      configs, RoPE, projections, Attention<Variant> (MHA/GQA/MQA) and MLA
#pragma once

#include "build_info.hpp"
#include "version.hpp"

#include "core/aligned_buffer.hpp"
#include "core/error.hpp"
#include "core/executor.hpp"
#include "core/isa.hpp"
#include "core/parallel.hpp"
#include "core/tensor_view.hpp"

#include "storage/codec.hpp"
#include "storage/half.hpp"

#include "simd/convert.hpp"
#include "simd/ops.hpp"

#include "attention/decode.hpp"
#include "attention/fused.hpp"
#include "attention/merge.hpp"
#include "attention/modifiers.hpp"
#include "attention/options.hpp"
#include "attention/reference.hpp"
#include "attention/state.hpp"
#include "attention/varlen.hpp"

#include "cache/batch.hpp"
#include "cache/decode.hpp"
#include "cache/kv_cache.hpp"
#include "cache/latent_cache.hpp"
#include "cache/paged_kv_cache.hpp"
#include "cache/paged_latent_cache.hpp"
#include "cache/paged_view.hpp"

#include "layer/attention.hpp"
#include "layer/config.hpp"
#include "layer/latent_attention.hpp"
#include "layer/latent_config.hpp"
#include "layer/rope.hpp"
#include "layer/rope_scaling.hpp"
#include "layer/variant.hpp"
