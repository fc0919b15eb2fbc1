// Launchers for ops/reduce.cpp. All reductions are deterministic: a fixed
// partition (it depends on the sizes only, never on the GPU) and a fixed-order
// tree inside each block; no atomics.
#pragma once
#include <cstdint>

namespace echo::gpu {
// Number of partial sums the first pass of sum_all writes (depends on n only).
int64_t sum_all_partials(int64_t n);
// out[0] = scale · Σ x; partial holds sum_all_partials(n) floats.
void sum_all(const float* x, float* out, float* partial, int64_t n, float scale);
// dx[i] += scale · dy[0]  (dy stays on the device)
void sum_all_backward(const float* dy, float* dx, int64_t n, float scale);
// y[r] = Σ_j x[r, j], x is [rows, cols]
void sum_last(const float* x, float* y, int64_t rows, int64_t cols);
// dx[r, j] += dy[r]
void sum_last_backward(const float* dy, float* dx, int64_t rows, int64_t cols);
}  // namespace echo::gpu
