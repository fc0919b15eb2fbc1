#pragma once
#include "autograd/tensor.h"

namespace echo {
// x [..., d], w [d]: x / sqrt(mean(x²) + eps) · w over the last axis.
Tensor rmsnorm(const Tensor& x, const Tensor& w, double eps = 1e-5);
}  // namespace echo
