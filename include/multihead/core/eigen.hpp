// Eigen's core, for the headers that use its matrices and products: always through this header,
// which includes isa.hpp first so that GCC 12's intrinsic-header warnings stay silenced there.
#pragma once

#include "isa.hpp"

#include <Eigen/Core>
