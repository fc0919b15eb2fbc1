// CUDA twin of ops/rmsnorm.cpp. Row reductions: one block per row, tree sum in
// shared memory (fixed order). dw: per-chunk column partials, then an in-order
// sum over the chunks — the same split as the CPU, no atomics.
#include "cuda/common.cuh"
#include "cuda/rmsnorm.cuh"

namespace echo::gpu {
namespace {

constexpr int64_t kRowsPerChunk = 64;  // = ops/rmsnorm.cpp

// Sum of v over the block (blockDim.x a power of two); every thread gets it.
__device__ float block_sum(float v, float* shared) {
  shared[threadIdx.x] = v;
  __syncthreads();
  for (int s = blockDim.x / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s) shared[threadIdx.x] += shared[threadIdx.x + s];
    __syncthreads();
  }
  const float total = shared[0];
  __syncthreads();  // shared is reused by the next call
  return total;
}

int row_threads(int64_t d) {
  int t = 32;
  while (t < d && t < 256) t *= 2;
  return t;
}

__global__ void forward_kernel(const float* x, const float* w, float* y, float* rstd, int64_t d, float eps) {
  extern __shared__ float shared[];
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
  extern __shared__ float shared[];
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

// partial[c, j] = Σ_{rows r of chunk c} dy[r,j] · x[r,j] · rstd[r]
__global__ void dw_partial_kernel(const float* x, const float* rstd, const float* dy, float* partial, int64_t rows,
                                  int64_t d) {
  const int64_t c = blockIdx.x;
  const int64_t j = blockIdx.y * (int64_t)blockDim.x + threadIdx.x;
  if (j >= d) return;
  const int64_t end = min(rows, (c + 1) * kRowsPerChunk);
  float p = 0;
  for (int64_t r = c * kRowsPerChunk; r < end; ++r) p += dy[r * d + j] * x[r * d + j] * rstd[r];
  partial[c * d + j] = p;
}

__global__ void sum_chunks_kernel(const float* partial, float* out, int64_t chunks, int64_t cols) {
  ECHO_GRID_STRIDE(j, cols) {
    float s = 0;
    for (int64_t c = 0; c < chunks; ++c) s += partial[c * cols + j];
    out[j] += s;
  }
}

int64_t num_chunks(int64_t rows) { return (rows + kRowsPerChunk - 1) / kRowsPerChunk; }

}  // namespace

int64_t rmsnorm_workspace_floats(int64_t rows, int64_t d) { return num_chunks(rows) * d + 1; }

void rmsnorm_forward(const float* x, const float* w, float* y, float* rstd, int64_t rows, int64_t d, float eps) {
  if (rows == 0) return;
  const int threads = row_threads(d);
  const unsigned blocks = row_blocks(rows, "rmsnorm_forward");
  forward_kernel<<<blocks, threads, threads * sizeof(float)>>>(x, w, y, rstd, d, eps);
  check_launch("rmsnorm_forward");
}

void rmsnorm_backward(const float* x, const float* w, const float* rstd, const float* dy, float* dx, float* dw,
                      float* workspace, int64_t rows, int64_t d) {
  if (rows == 0) return;
  if (dx) {
    const int threads = row_threads(d);
    const unsigned blocks = row_blocks(rows, "rmsnorm_backward (dx)");
    backward_dx_kernel<<<blocks, threads, threads * sizeof(float)>>>(x, w, rstd, dy, dx, d);
    check_launch("rmsnorm_backward (dx)");
  }
  if (dw) {
    const int64_t chunks = num_chunks(rows);
    dim3 grid((unsigned)chunks, (unsigned)((d + kThreads - 1) / kThreads));
    dw_partial_kernel<<<grid, kThreads>>>(x, rstd, dy, workspace, rows, d);
    check_launch("rmsnorm_backward (dw partials)");
    sum_chunks_kernel<<<grid_for(d), kThreads>>>(workspace, dw, chunks, d);
    check_launch("rmsnorm_backward (dw)");
  }
}

}  // namespace echo::gpu
