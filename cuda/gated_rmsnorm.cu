// CUDA twin of ops/gated_rmsnorm.cpp: one block per row for the row reductions
// (tree sum in shared memory), u = x·silu(z) recomputed where needed, dw as
// per-chunk column partials summed in chunk order (no atomics, cuda/block_reduce.cuh).
#include "cuda/block_reduce.cuh"
#include "cuda/gated_rmsnorm.cuh"

namespace echo::gpu {
namespace {

__device__ inline float sigmoid_of(float z) { return 1.f / (1.f + expf(-z)); }

__global__ void forward_kernel(const float* x, const float* z, const float* w, float* y, float* rstd, int64_t d,
                               float eps) {
  ECHO_DYNAMIC_SHARED(float, shared);
  const int64_t r = blockIdx.x;
  const float *xr = x + r * d, *zr = z + r * d;
  float* yr = y + r * d;
  float sum_sq = 0;
  for (int64_t j = threadIdx.x; j < d; j += blockDim.x) {
    const float u = xr[j] * zr[j] * sigmoid_of(zr[j]);
    sum_sq += u * u;
  }
  sum_sq = block_sum(sum_sq, shared);
  const float inv = 1.f / sqrtf(sum_sq / (float)d + eps);
  if (threadIdx.x == 0) rstd[r] = inv;
  for (int64_t j = threadIdx.x; j < d; j += blockDim.x) yr[j] = xr[j] * zr[j] * sigmoid_of(zr[j]) * inv * w[j];
}

__global__ void backward_dxdz_kernel(const float* x, const float* z, const float* w, const float* rstd,
                                     const float* dy, float* dx, float* dz, int64_t d) {
  ECHO_DYNAMIC_SHARED(float, shared);
  const int64_t r = blockIdx.x;
  const float *xr = x + r * d, *zr = z + r * d, *dyr = dy + r * d;
  const float inv = rstd[r];
  float dot = 0;  // Σ_k dy_k w_k u_k
  for (int64_t j = threadIdx.x; j < d; j += blockDim.x) dot += dyr[j] * w[j] * (xr[j] * zr[j] * sigmoid_of(zr[j]));
  dot = block_sum(dot, shared);
  const float coef = dot * inv * inv * inv / (float)d;
  for (int64_t j = threadIdx.x; j < d; j += blockDim.x) {
    const float s = sigmoid_of(zr[j]);
    const float silu_z = zr[j] * s;
    const float du = inv * w[j] * dyr[j] - coef * (xr[j] * silu_z);
    if (dx) dx[r * d + j] += du * silu_z;
    if (dz) dz[r * d + j] += du * xr[j] * (s * (1.f + zr[j] * (1.f - s)));
  }
}

// The dw term of row r, column j: dy[r,j] · u[r,j] · rstd[r].
struct DwTerm {
  const float *x, *z, *rstd, *dy;
  int64_t d;
  __device__ float operator()(int64_t r, int64_t j) const {
    const float zj = z[r * d + j];
    return dy[r * d + j] * (x[r * d + j] * zj * sigmoid_of(zj)) * rstd[r];
  }
};

}  // namespace

int64_t gated_rmsnorm_workspace_floats(int64_t rows, int64_t d) { return row_chunks(rows) * d + 1; }

void gated_rmsnorm_forward(const float* x, const float* z, const float* w, float* y, float* rstd, int64_t rows,
                           int64_t d, float eps) {
  if (rows == 0) return;
  const int threads = row_threads(d);
  const unsigned blocks = row_blocks(rows, "gated_rmsnorm_forward");
  ECHO_LAUNCH(forward_kernel, blocks, threads, threads * sizeof(float))(x, z, w, y, rstd, d, eps);
  check_launch("gated_rmsnorm_forward");
}

void gated_rmsnorm_backward(const float* x, const float* z, const float* w, const float* rstd, const float* dy,
                            float* dx, float* dz, float* dw, float* workspace, int64_t rows, int64_t d) {
  if (rows == 0) return;
  if (dx || dz) {
    const int threads = row_threads(d);
    const unsigned blocks = row_blocks(rows, "gated_rmsnorm_backward (dx, dz)");
    ECHO_LAUNCH(backward_dxdz_kernel, blocks, threads, threads * sizeof(float))(x, z, w, rstd, dy, dx, dz, d);
    check_launch("gated_rmsnorm_backward (dx, dz)");
  }
  if (dw) add_column_sums(rows, d, DwTerm{x, z, rstd, dy, d}, dw, workspace, "gated_rmsnorm_backward (dw)");
}

}  // namespace echo::gpu
