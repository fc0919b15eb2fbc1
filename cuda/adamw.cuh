#pragma once
#include <cstdint>

namespace echo::gpu {
// Fused AdamW update of one parameter tensor (see train/optimizer.h for the math).
// bias1 = 1 − β₁ᵗ, bias2 = 1 − β₂ᵗ, decay_factor = 1 − lr·wd (1 when no decay).
void adamw_step(float* p, const float* g, float* m, float* v, int64_t n, float lr, float beta1,
                float beta2, float eps, float bias1, float bias2, float decay_factor);
// Σ g² of one tensor (in double) and whether every element is finite, in one
// deterministic two-pass reduction (blocks on the device, then in order on the
// host). workspace: sum_squares_workspace_doubles() doubles on the device (from
// the caching allocator: no cudaMalloc/cudaFree per call).
int64_t sum_squares_workspace_doubles();
double sum_squares(const float* g, int64_t n, double* workspace, bool* finite);
}  // namespace echo::gpu
