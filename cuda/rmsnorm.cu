// CUDA twin of ops/rmsnorm.cpp. Row reductions: one block per row, tree sum in
// shared memory (fixed order). dw: per-chunk column partials, then an in-order
// sum over the chunks — the same split as the CPU, no atomics (cuda/block_reduce.cuh).
#include "cuda/block_reduce.cuh"
#include "cuda/rmsnorm.cuh"

namespace echo::gpu {
namespace {

__global__ void forward_kernel(const float* x, const float* w, float* y, float* rstd, int64_t d, float eps) {
  ECHO_DYNAMIC_SHARED(float, shared);
  const int64_t r = blockIdx.x;
  const float* xr = x + r * d;
  float* yr = y + r * d;
  float sum_sq = 0;
  for (int64_t j = threadIdx.x; j < d; j += blockDim.x) sum_sq += xr[j] * xr[j];
  sum_sq = block_sum(sum_sq, shared);
  const float inv = 1.f / sqrtf(sum_sq / (float)d + eps);
  if (threadIdx.x == 0) rstd[r] = inv;
  for (int64_t j = threadIdx.x; j < d; j += blockDim.x) yr[j] = xr[j] * inv * w[j];
}

// dx_j += r·w_j·dy_j − x_j · r³/d · Σ_k dy_k w_k x_k
__global__ void backward_dx_kernel(const float* x, const float* w, const float* rstd, const float* dy, float* dx,
                                   int64_t d) {
  ECHO_DYNAMIC_SHARED(float, shared);
  const int64_t r = blockIdx.x;
  const float *xr = x + r * d, *dyr = dy + r * d;
  float* dxr = dx + r * d;
  const float inv = rstd[r];
  float dot = 0;
  for (int64_t j = threadIdx.x; j < d; j += blockDim.x) dot += dyr[j] * w[j] * xr[j];
  dot = block_sum(dot, shared);
  const float coef = dot * inv * inv * inv / (float)d;
  for (int64_t j = threadIdx.x; j < d; j += blockDim.x) dxr[j] += inv * w[j] * dyr[j] - coef * xr[j];
}

// The dw term of row r, column j: dy[r,j] · x[r,j] · rstd[r].
struct DwTerm {
  const float *x, *rstd, *dy;
  int64_t d;
  __device__ float operator()(int64_t r, int64_t j) const { return dy[r * d + j] * x[r * d + j] * rstd[r]; }
};

}  // namespace

int64_t rmsnorm_workspace_floats(int64_t rows, int64_t d) { return row_chunks(rows) * d + 1; }

void rmsnorm_forward(const float* x, const float* w, float* y, float* rstd, int64_t rows, int64_t d, float eps) {
  if (rows == 0) return;
  const int threads = row_threads(d);
  const unsigned blocks = row_blocks(rows, "rmsnorm_forward");
  ECHO_LAUNCH(forward_kernel, blocks, threads, threads * sizeof(float))(x, w, y, rstd, d, eps);
  check_launch("rmsnorm_forward");
}

void rmsnorm_backward(const float* x, const float* w, const float* rstd, const float* dy, float* dx, float* dw,
                      float* workspace, int64_t rows, int64_t d) {
  if (rows == 0) return;
  if (dx) {
    const int threads = row_threads(d);
    const unsigned blocks = row_blocks(rows, "rmsnorm_backward (dx)");
    ECHO_LAUNCH(backward_dx_kernel, blocks, threads, threads * sizeof(float))(x, w, rstd, dy, dx, d);
    check_launch("rmsnorm_backward (dx)");
  }
  if (dw) add_column_sums(rows, d, DwTerm{x, rstd, dy, d}, dw, workspace, "rmsnorm_backward (dw)");
}

}  // namespace echo::gpu
