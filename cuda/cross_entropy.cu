// CUDA twin of ops/cross_entropy.cpp.
//   forward:  one block per row; a block max, then a block sum of exp(x − max)
//             (both fixed shared-memory trees), lse = max + log(sum), the row's
//             loss; then one block sums the row losses in a fixed tree order.
//   backward: one thread per logit, softmax recomputed from the saved lse.
// No atomics anywhere, so the loss and gradients are the same on every run.
#include "cuda/common.cuh"
#include "cuda/cross_entropy.cuh"

namespace echo::gpu {
namespace {

// Block-wide reductions (blockDim.x == kThreads) in a fixed tree order; every
// thread gets the result.
template <bool kMax> __device__ float block_reduce(float v) {
  ECHO_SHARED(float, shared, [kThreads]);
  __syncthreads();  // the buffer may still be read from a previous call
  shared[threadIdx.x] = v;
  __syncthreads();
  for (int stride = kThreads / 2; stride > 0; stride >>= 1) {
    if (threadIdx.x < stride) {
      const float other = shared[threadIdx.x + stride];
      shared[threadIdx.x] = kMax ? fmaxf(shared[threadIdx.x], other) : shared[threadIdx.x] + other;
    }
    __syncthreads();
  }
  return shared[0];
}

template <typename Id>
__global__ void row_kernel(const float* logits, const Id* targets, float* lse, float* row_loss, int64_t V,
                           int64_t ignore_index) {
  const int64_t r = blockIdx.x;
  const float* x = logits + r * V;
  float m = -INFINITY;
  for (int64_t j = threadIdx.x; j < V; j += kThreads) m = fmaxf(m, x[j]);
  m = block_reduce<true>(m);
  float s = 0.f;
  for (int64_t j = threadIdx.x; j < V; j += kThreads) s += expf(x[j] - m);
  s = block_reduce<false>(s);
  if (threadIdx.x == 0) {
    const float l = m + logf(s);
    const int64_t t = static_cast<int64_t>(targets[r]);
    lse[r] = l;
    row_loss[r] = t == ignore_index ? 0.f : l - x[t];
  }
}

__global__ void mean_kernel(const float* row_loss, float* loss, int64_t rows, float inv_scored) {
  float acc = 0.f;
  for (int64_t r = threadIdx.x; r < rows; r += kThreads) acc += row_loss[r];
  acc = block_reduce<false>(acc);
  if (threadIdx.x == 0) loss[0] = acc * inv_scored;
}

template <typename Id>
__global__ void backward_kernel(const float* logits, const Id* targets, const float* lse, const float* dloss,
                                float* dlogits, int64_t rows, int64_t V, int64_t ignore_index, float inv_scored) {
  const float g = dloss[0] * inv_scored;
  ECHO_GRID_STRIDE(e, rows * V) {
    const int64_t r = e / V, j = e % V;
    const int64_t t = static_cast<int64_t>(targets[r]);
    if (t == ignore_index) continue;
    const float p = expf(logits[e] - lse[r]);
    dlogits[e] += g * (p - (j == t ? 1.f : 0.f));
  }
}

}  // namespace

void cross_entropy_forward(const float* logits, const void* targets, bool targets_i64, float* lse,
                           float* row_loss, float* loss, int64_t rows, int64_t V, int64_t ignore_index,
                           float inv_scored) {
  if (rows > 0x7fffffffLL) throw std::runtime_error("cross_entropy: too many rows for one grid");
  if (rows > 0) {
    if (targets_i64)
      ECHO_LAUNCH(row_kernel, static_cast<unsigned>(rows), kThreads)(logits, static_cast<const int64_t*>(targets), lse,
                                                            row_loss, V, ignore_index);
    else
      ECHO_LAUNCH(row_kernel, static_cast<unsigned>(rows), kThreads)(logits, static_cast<const int32_t*>(targets), lse,
                                                            row_loss, V, ignore_index);
    check_launch("cross_entropy (rows)");
  }
  ECHO_LAUNCH(mean_kernel, 1, kThreads)(row_loss, loss, rows, inv_scored);
  check_launch("cross_entropy (mean)");
}

void cross_entropy_backward(const float* logits, const void* targets, bool targets_i64, const float* lse,
                            const float* dloss, float* dlogits, int64_t rows, int64_t V, int64_t ignore_index,
                            float inv_scored) {
  if (rows * V == 0 || inv_scored == 0.f) return;
  if (targets_i64)
    ECHO_LAUNCH(backward_kernel, grid_for(rows * V), kThreads)(logits, static_cast<const int64_t*>(targets), lse, dloss,
                                                      dlogits, rows, V, ignore_index, inv_scored);
  else
    ECHO_LAUNCH(backward_kernel, grid_for(rows * V), kThreads)(logits, static_cast<const int32_t*>(targets), lse, dloss,
                                                      dlogits, rows, V, ignore_index, inv_scored);
  check_launch("cross_entropy_backward");
}

}  // namespace echo::gpu
