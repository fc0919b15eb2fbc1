// CUDA twin of the AdamW update in train/optimizer.cpp, plus the deterministic
// reductions used by gradient clipping.
#include <vector>

#include "cuda/adamw.cuh"

#include "autograd/device.h"
#include "cuda/common.cuh"

namespace echo::gpu {
namespace {

__global__ void adamw_kernel(float* p, const float* g, float* m, float* v, int64_t n, float lr,
                             float b1, float b2, float eps, float bias1, float bias2, float decay) {
  ECHO_GRID_STRIDE(i, n) {
    float gi = g[i];
    float mi = b1 * m[i] + (1.f - b1) * gi;
    float vi = b2 * v[i] + (1.f - b2) * gi * gi;
    m[i] = mi;
    v[i] = vi;
    float pi = p[i] * decay;
    p[i] = pi - lr * (mi / bias1) / (sqrtf(vi / bias2) + eps);
  }
}

// Pass 1: each block reduces a fixed, contiguous range into partial[block] (in
// double, tree order fixed by the thread index), so the result does not depend
// on scheduling, and writes nonfinite[block] = 1 when its range holds a NaN/Inf
// (a block-wide OR, no atomics). Pass 2 on the host adds the partials in order.
constexpr int kReduceThreads = 256;
constexpr int kReduceBlocks = 256;
__global__ void sumsq_kernel(const float* g, int64_t n, double* partial, double* nonfinite) {
  ECHO_SHARED(double, buf, [kReduceThreads]);
  int64_t per_block = (n + gridDim.x - 1) / gridDim.x;
  int64_t begin = blockIdx.x * per_block, end = min(n, begin + per_block);
  double s = 0;
  int bad = 0;
  for (int64_t i = begin + threadIdx.x; i < end; i += blockDim.x) {
    float x = g[i];
    if (!isfinite(x)) bad = 1;
    s += double(x) * double(x);
  }
  buf[threadIdx.x] = s;
  const int block_bad = __syncthreads_or(bad);  // also the barrier before the tree
  for (int w = blockDim.x / 2; w > 0; w >>= 1) {
    if (threadIdx.x < w) buf[threadIdx.x] += buf[threadIdx.x + w];
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    partial[blockIdx.x] = buf[0];
    nonfinite[blockIdx.x] = block_bad ? 1.0 : 0.0;
  }
}

}  // namespace

void adamw_step(float* p, const float* g, float* m, float* v, int64_t n, float lr, float beta1,
                float beta2, float eps, float bias1, float bias2, float decay_factor) {
  if (n == 0) return;
  ECHO_LAUNCH(adamw_kernel, grid_for(n), kThreads)(p, g, m, v, n, lr, beta1, beta2, eps, bias1, bias2, decay_factor);
  check_launch("adamw_step");
}

int64_t sum_squares_workspace_doubles() { return 2 * kReduceBlocks; }

double sum_squares(const float* g, int64_t n, double* workspace, bool* finite) {
  if (finite) *finite = true;
  if (n == 0) return 0.0;
  // workspace[0, B): partial sums; workspace[B, 2B): per-block non-finite flags.
  ECHO_LAUNCH(sumsq_kernel, kReduceBlocks, kReduceThreads)(g, n, workspace, workspace + kReduceBlocks);
  check_launch("sum_squares");
  std::vector<double> host(2 * kReduceBlocks);
  note_device_to_host_copy();
  check_cuda(cudaMemcpy(host.data(), workspace, host.size() * sizeof(double), cudaMemcpyDeviceToHost),
             "sum_squares copy");
  double s = 0;
  bool ok = true;
  for (int b = 0; b < kReduceBlocks; ++b) {
    s += host[b];
    ok = ok && host[kReduceBlocks + b] == 0.0;
  }
  if (finite) *finite = ok;
  return s;
}

}  // namespace echo::gpu
