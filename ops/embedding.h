#pragma once
#include "autograd/tensor.h"

namespace echo {
// weight [V, d], ids (i32/i64, any shape S) -> [S..., d]. Backward scatter-adds
// into the rows of dweight. An id outside [0, V) is an error naming it.
Tensor embedding(const Tensor& weight, const Tensor& ids);
}  // namespace echo
