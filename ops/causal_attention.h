#pragma once
#include "autograd/tensor.h"

namespace echo {
// q, k, v [b,T,H,dh] before RoPE. RoPE (rotate-half: pairs (j, j+dh/2), angle
// t·base^(−2j/dh)) on q and k, then softmax(q kᵀ/√dh + causal mask) v -> [b,T,H,dh].
// pos_offset shifts t (for decoding with a KV cache).
Tensor causal_attention(const Tensor& q, const Tensor& k, const Tensor& v, double rope_base = 10000.0);
// Applies RoPE to x [b,T,H,dh] at positions pos_offset.. (no autograd; decode path).
Tensor rope(const Tensor& x, double rope_base, int64_t pos_offset);
}  // namespace echo
