#pragma once
#include <cstdint>

namespace echo::gpu {
// x, y [rows, d]; rnorm [rows] = (Σx² + eps)^(−1/2).
void l2norm_forward(const float* x, float* y, float* rnorm, int64_t rows, int64_t d, float eps);
// dx [rows, d] += r·dy − x·r³·(dy·x)
void l2norm_backward(const float* x, const float* rnorm, const float* dy, float* dx, int64_t rows, int64_t d);
}  // namespace echo::gpu
