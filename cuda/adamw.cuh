#pragma once
#include <cstdint>

namespace echo::gpu {
// Fused AdamW update of one parameter tensor (see train/optimizer.h for the math).
// bias1 = 1 − β₁ᵗ, bias2 = 1 − β₂ᵗ, decay_factor = 1 − lr·wd (1 when no decay).
void adamw_step(float* p, const float* g, float* m, float* v, int64_t n, float lr, float beta1,
                float beta2, float eps, float bias1, float bias2, float decay_factor);
// Σ g² of one tensor into *out_host (double), deterministic two-pass reduction.
double sum_squares(const float* g, int64_t n);
// 1 when every element is finite.
bool all_finite(const float* g, int64_t n);
}  // namespace echo::gpu
