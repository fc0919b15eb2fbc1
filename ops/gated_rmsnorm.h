#pragma once
#include "autograd/tensor.h"

namespace echo {
// rmsnorm(x · silu(z), w): x, z [..., d], w [d] (Mamba-2, norm_before_gate=False, one group).
Tensor gated_rmsnorm(const Tensor& x, const Tensor& z, const Tensor& w, double eps = 1e-5);
}  // namespace echo
