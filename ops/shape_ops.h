// Layout ops. Tensors are always contiguous, so these copy (reshape is the view:
// Tensor::reshape).
#pragma once
#include <vector>
#include "autograd/tensor.h"

namespace echo {
Tensor transpose(const Tensor& x, int dim0, int dim1);
Tensor slice(const Tensor& x, int dim, int64_t start, int64_t end);  // [start, end)
Tensor concat(const std::vector<Tensor>& xs, int dim);
}  // namespace echo
