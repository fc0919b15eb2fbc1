#pragma once
#include <cstdint>

namespace echo::gpu {
// g, z [rows, 2·half]; gamma, omega [half].
void koopman_rotate_forward(const float* g, const float* gamma, const float* omega, float* z, int64_t rows,
                            int64_t half);
// Adds into dg [rows, 2·half], dgamma, domega [half]; any may be null. workspace:
// koopman_rotate_workspace_floats(rows, half) floats (when dgamma or domega is given).
void koopman_rotate_backward(const float* g, const float* gamma, const float* omega, const float* dz, float* dg,
                             float* dgamma, float* domega, float* workspace, int64_t rows, int64_t half);
int64_t koopman_rotate_workspace_floats(int64_t rows, int64_t half);
}  // namespace echo::gpu
