// multihead: CPU attention kernels for MHA, GQA, MQA (and, later, MLA). The one public header.
#pragma once

#include "isa.hpp"
#include "error.hpp"
#include "config.hpp"
#include "tensor_view.hpp"
#include "kernel_args.hpp"
#include "parallel.hpp"
#include "reference.hpp"
#include "simd.hpp"
#include "state.hpp"
#include "microkernel.hpp"
#include "fused.hpp"
#include "variant.hpp"
#include "attention.hpp"
#include "half.hpp"
#include "kv_cache.hpp"
#include "paged_kv_cache.hpp"
