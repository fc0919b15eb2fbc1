// The language-model head fused with its loss, computed in row chunks.
#pragma once
#include "autograd/tensor.h"

namespace echo {
// x [..., d], weight [V, d], targets (i32/i64) [...] -> [1]:
//   cross_entropy(linear(x, weight), targets, ignore_index)
// without ever holding the logits [rows, V] or their gradient whole. The rows
// are processed `chunk_rows` at a time (0 = automatic: about 8M logits per
// chunk); for each chunk the logits are formed, turned into the row losses and
// into the gradient of the mean loss with respect to themselves, pushed through
// to dx (chunk rows) and dW (accumulated), then discarded. The gradients dx
// [rows, d] and dW [V, d] are kept for the backward, which only scales them by
// the incoming gradient. Equal to the unfused path to rounding.
//
// The fused path runs on the CPU under f32 or f64 matmul precision. On CUDA, and
// for f32 under bf16 matmul precision, it is the unfused pair (linear, then
// cross_entropy), so those keep their numbers exactly.
Tensor linear_cross_entropy(const Tensor& x, const Tensor& weight, const Tensor& targets,
                            int64_t ignore_index = -100, int64_t chunk_rows = 0);

// The automatic chunk: max(1, 2^23 / V) rows.
int64_t linear_cross_entropy_chunk_rows(int64_t vocab);
}  // namespace echo
