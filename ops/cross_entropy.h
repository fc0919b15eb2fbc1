#pragma once
#include "autograd/tensor.h"

namespace echo {
// logits [..., V], targets (i32/i64) [...] -> [1]: mean over positions whose
// target is not ignore_index of logsumexp(logits) − logits[target]. Fused and
// stable (max-subtracted); with no scored position the loss is 0.
Tensor cross_entropy(const Tensor& logits, const Tensor& targets, int64_t ignore_index = -100);
}  // namespace echo
