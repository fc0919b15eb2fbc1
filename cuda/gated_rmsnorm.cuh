#pragma once
#include <cstdint>

namespace echo::gpu {
// x, z, y [rows, d], w [d]; u = x·silu(z); rstd [rows] = (mean(u²)+eps)^(−1/2).
void gated_rmsnorm_forward(const float* x, const float* z, const float* w, float* y, float* rstd, int64_t rows,
                           int64_t d, float eps);
// Adds into dx, dz [rows, d] and dw [d]; any may be null. workspace:
// gated_rmsnorm_workspace_floats(rows, d) floats (needed only when dw is given).
void gated_rmsnorm_backward(const float* x, const float* z, const float* w, const float* rstd, const float* dy,
                            float* dx, float* dz, float* dw, float* workspace, int64_t rows, int64_t d);
int64_t gated_rmsnorm_workspace_floats(int64_t rows, int64_t d);
}  // namespace echo::gpu
