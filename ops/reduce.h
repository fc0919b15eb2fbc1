#pragma once
#include "autograd/tensor.h"

namespace echo {
Tensor sum(const Tensor& x);   // all elements -> [1]
Tensor mean(const Tensor& x);  // all elements -> [1]
// Sum over the last dimension: [..., n] -> [...]
Tensor sum_last(const Tensor& x);
}  // namespace echo
