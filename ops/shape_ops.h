// Layout ops. Tensors are always contiguous, so these copy (reshape is the view:
// Tensor::reshape).
#pragma once
#include <vector>
#include "autograd/tensor.h"

namespace echo {
Tensor transpose(const Tensor& x, int dim0, int dim1);
Tensor slice(const Tensor& x, int dim, int64_t start, int64_t end);  // [start, end)
Tensor concat(const std::vector<Tensor>& xs, int dim);
// x cut along dim into consecutive parts of the given sizes (they must add up
// to x.size(dim)): the slices as one op, whose backward writes the whole
// gradient in one pass (no zero-filled buffer to add the parts into).
std::vector<Tensor> split(const Tensor& x, int dim, const std::vector<int64_t>& sizes);
}  // namespace echo
