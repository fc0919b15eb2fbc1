#pragma once
#include <cstdint>

namespace echo::gpu {
// x, y [rows, d], w [d], rstd [rows] = (mean(x²)+eps)^(−1/2).
void rmsnorm_forward(const float* x, const float* w, float* y, float* rstd, int64_t rows, int64_t d, float eps);
// Adds into dx [rows, d] and dw [d]; either may be null. workspace: rmsnorm_workspace_floats(rows, d)
// floats (needed only when dw is given).
void rmsnorm_backward(const float* x, const float* w, const float* rstd, const float* dy, float* dx, float* dw,
                      float* workspace, int64_t rows, int64_t d);
int64_t rmsnorm_workspace_floats(int64_t rows, int64_t d);
}  // namespace echo::gpu
