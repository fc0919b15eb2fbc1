// Matrix products (OpenBLAS on the CPU, cuBLAS on CUDA).
#pragma once
#include "autograd/tensor.h"

namespace echo {
// a [..., m, k] · b [k, n] -> [..., m, n]   (leading dims of a flattened into rows)
Tensor matmul(const Tensor& a, const Tensor& b);
// y = x Wᵀ (+ bias): x [..., in], weight [out, in], bias [out] or undefined -> [..., out]
Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias = Tensor());
// Batched: op(a) [B, m, k] · op(b) [B, k, n] -> [B, m, n], op = transpose when the flag is set
// (a is stored [B,k,m] when trans_a, b is stored [B,n,k] when trans_b).
Tensor bmm(const Tensor& a, const Tensor& b, bool trans_a = false, bool trans_b = false);
}  // namespace echo
