#pragma once
#include "autograd/tensor.h"

namespace echo {
// x / sqrt(Σ x² + eps) over the last axis (eps = 1e-6 in the spec).
Tensor l2norm(const Tensor& x, double eps = 1e-6);
}  // namespace echo
