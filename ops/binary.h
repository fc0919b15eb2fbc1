// Element-wise binary ops with broadcasting over leading dimensions: b's shape
// must equal a's shape or be a suffix of it (e.g. [b,T,d] ∘ [d], [b,T,H,P] ∘ [H,P]).
// The gradient of the broadcast operand sums over the leading dimensions.
#pragma once
#include "autograd/tensor.h"

namespace echo {
Tensor add(const Tensor& a, const Tensor& b);
Tensor sub(const Tensor& a, const Tensor& b);
Tensor mul(const Tensor& a, const Tensor& b);
Tensor div(const Tensor& a, const Tensor& b);
Tensor scale(const Tensor& x, double alpha);       // alpha·x
Tensor add_scalar(const Tensor& x, double value);  // x + value
}  // namespace echo
