#pragma once
#include "autograd/tensor.h"

namespace echo {
// g [..., d_k] (d_k even), rot_gamma/rot_omega [d_k/2]. Per pair i:
// ρ = max(sqrt(γ²+ω²), 1e-8), s = min(ρ,1)/ρ, γ' = sγ, ω' = sω,
// z_{2i} = γ' g_{2i} + ω' g_{2i+1},  z_{2i+1} = −ω' g_{2i} + γ' g_{2i+1}.
Tensor koopman_rotate(const Tensor& g, const Tensor& rot_gamma, const Tensor& rot_omega);
}  // namespace echo
