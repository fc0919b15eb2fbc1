// CUDA twin of ops/unary.cpp: one grid-stride kernel per direction, the same
// formulas as the CPU reference (see unary_value / unary_derivative there).
#include "cuda/common.cuh"
#include "cuda/unary.cuh"

namespace echo::gpu {
namespace {

__device__ inline float value(int kind, float x) {
  switch (kind) {
    case 0: return 1.f / (1.f + expf(-x));
    case 1: return x / (1.f + expf(-x));
    case 2: return x > 20.f ? x : log1pf(expf(x));
    case 3: return expf(x);
    case 4: return x > 0.f ? x : 0.f;
    default: return tanhf(x);
  }
}
__device__ inline float derivative(int kind, float x, float y) {
  switch (kind) {
    case 0: return y * (1.f - y);
    case 1: { float s = 1.f / (1.f + expf(-x)); return s * (1.f + x * (1.f - s)); }
    case 2: return x > 20.f ? 1.f : 1.f / (1.f + expf(-x));
    case 3: return y;
    case 4: return x > 0.f ? 1.f : 0.f;
    default: return 1.f - y * y;
  }
}

__global__ void forward_kernel(int kind, const float* x, float* y, int64_t n) {
  ECHO_GRID_STRIDE(i, n) y[i] = value(kind, x[i]);
}
__global__ void backward_kernel(int kind, const float* x, const float* y, const float* dy, float* dx, int64_t n) {
  ECHO_GRID_STRIDE(i, n) dx[i] += dy[i] * derivative(kind, x[i], y[i]);
}

}  // namespace

void unary_forward(int kind, const float* x, float* y, int64_t n) {
  if (n == 0) return;
  ECHO_LAUNCH(forward_kernel, grid_for(n), kThreads)(kind, x, y, n);
  check_launch("unary_forward");
}
void unary_backward(int kind, const float* x, const float* y, const float* dy, float* dx, int64_t n) {
  if (n == 0) return;
  ECHO_LAUNCH(backward_kernel, grid_for(n), kThreads)(kind, x, y, dy, dx, n);
  check_launch("unary_backward");
}

}  // namespace echo::gpu
