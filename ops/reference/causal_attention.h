// Causal softmax attention with rotary positions as its definition, in float64
// on plain vectors: explicit T×T score matrices, the mask, the softmax, P·V, and
// the backward from the same matrices. The oracle of the tests.
//
// Reading order: docs/ops_norms_conv_attention.md → this file →
// ops/causal_attention.cpp (the blocked CPU kernel with an online softmax) →
// cuda/causal_attention.cu (the CUDA twin).
#pragma once

#include <cstdint>
#include <vector>

namespace echo::reference {

// q, k, v, y: [B, T, H, dh] row-major.
struct AttentionShape {
  int64_t B, T, H, dh;
};

// RoPE: pairs (j, j + dh/2) rotated by θ = sign·(t + offset)·base^(−2j/dh), i.e.
// x·cos θ + rotate_half(x)·sin θ with rotate_half(x) = [−x₂, x₁]. sign = −1 is
// the transpose of the rotation, which carries gradients back.
std::vector<double> rope(const std::vector<double>& x, const AttentionShape& s, double base, int64_t offset,
                         double sign = 1.0);

// y_i = Σ_{j≤i} softmax_j(q'_i·k'_j/√dh) v_j with q', k' = rope(q), rope(k).
std::vector<double> causal_attention(const std::vector<double>& q, const std::vector<double>& k,
                                     const std::vector<double>& v, const AttentionShape& s, double base);

// Gradients of Σ dy∘y: with P the masked softmax, dv = Pᵀ dy, dP = dy vᵀ,
// dS = P∘(dP − rowsum(P∘dP)), dq' = dS k'/√dh, dk' = dSᵀ q'/√dh, then dq, dk =
// rope(dq', dk') with sign −1.
struct AttentionGrads {
  std::vector<double> dq, dk, dv;
};
AttentionGrads causal_attention_backward(const std::vector<double>& q, const std::vector<double>& k,
                                         const std::vector<double>& v, const std::vector<double>& dy,
                                         const AttentionShape& s, double base);

}  // namespace echo::reference
