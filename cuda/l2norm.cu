// CUDA twin of ops/l2norm.cpp: one block per row, tree sum in shared memory
// (fixed order). Rows are short (a head's rank), so the block is sized to d.
#include "cuda/block_reduce.cuh"
#include "cuda/l2norm.cuh"

namespace echo::gpu {
namespace {

__global__ void forward_kernel(const float* x, float* y, float* rnorm, int64_t d, float eps) {
  ECHO_DYNAMIC_SHARED(float, shared);
  const int64_t r = blockIdx.x;
  const float* xr = x + r * d;
  float* yr = y + r * d;
  float sum_sq = 0;
  for (int64_t j = threadIdx.x; j < d; j += blockDim.x) sum_sq += xr[j] * xr[j];
  sum_sq = block_sum(sum_sq, shared);
  const float inv = 1.f / sqrtf(sum_sq + eps);
  if (threadIdx.x == 0) rnorm[r] = inv;
  for (int64_t j = threadIdx.x; j < d; j += blockDim.x) yr[j] = xr[j] * inv;
}

__global__ void backward_kernel(const float* x, const float* rnorm, const float* dy, float* dx, int64_t d) {
  ECHO_DYNAMIC_SHARED(float, shared);
  const int64_t r = blockIdx.x;
  const float *xr = x + r * d, *dyr = dy + r * d;
  float* dxr = dx + r * d;
  const float inv = rnorm[r];
  float dot = 0;
  for (int64_t j = threadIdx.x; j < d; j += blockDim.x) dot += dyr[j] * xr[j];
  dot = block_sum(dot, shared);
  const float coef = dot * inv * inv * inv;
  for (int64_t j = threadIdx.x; j < d; j += blockDim.x) dxr[j] += inv * dyr[j] - coef * xr[j];
}

}  // namespace

void l2norm_forward(const float* x, float* y, float* rnorm, int64_t rows, int64_t d, float eps) {
  if (rows == 0) return;
  const int threads = row_threads(d);
  const unsigned blocks = row_blocks(rows, "l2norm_forward");
  ECHO_LAUNCH(forward_kernel, blocks, threads, threads * sizeof(float))(x, y, rnorm, d, eps);
  check_launch("l2norm_forward");
}

void l2norm_backward(const float* x, const float* rnorm, const float* dy, float* dx, int64_t rows, int64_t d) {
  if (rows == 0) return;
  const int threads = row_threads(d);
  const unsigned blocks = row_blocks(rows, "l2norm_backward");
  ECHO_LAUNCH(backward_kernel, blocks, threads, threads * sizeof(float))(x, rnorm, dy, dx, d);
  check_launch("l2norm_backward");
}

}  // namespace echo::gpu
