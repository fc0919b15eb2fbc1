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

// Σ g² and finiteness over every gradient of the model, in two passes and one
// copy back (a reduction per tensor, each ending in a synchronous copy, cost a
// host round trip per parameter tensor and step).
//
// Pass 1: tensor t is cut into blocks_t = ⌈n_t / kSumsqElemsPerBlock⌉ contiguous
// ranges, one block each (the blocks of all tensors form one 1-D grid). A block
// sums its range in double in a fixed tree order and writes a non-finite flag (a
// block-wide OR: no atomics). Pass 2, one block: thread t adds tensor t's
// partials in block order, then thread 0 adds the tensors in parameter order.
// Every addition happens in a fixed order, so the result does not depend on the
// schedule of the blocks or threads: the same bits on every run and GPU.
// (A library reduction, Thrust's or CUB's, leaves its association order to the
// implementation, which may change between versions and devices.)
constexpr int kReduceThreads = 256;
constexpr int64_t kSumsqElemsPerBlock = 16 * kReduceThreads;

__global__ void sumsq_partial_kernel(const GradSlice* slices, int count, double* partial, int* nonfinite) {
  ECHO_SHARED(double, buf, [kReduceThreads]);
  // The slice that owns this block: the last one whose first_block ≤ blockIdx.x.
  int lo = 0, hi = count - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) / 2;
    if (slices[mid].first_block <= blockIdx.x) lo = mid;
    else hi = mid - 1;
  }
  const GradSlice sl = slices[lo];
  const int64_t begin = (blockIdx.x - sl.first_block) * kSumsqElemsPerBlock;
  const int64_t end = min(sl.n, begin + kSumsqElemsPerBlock);
  double s = 0;
  int bad = 0;
  for (int64_t i = begin + threadIdx.x; i < end; i += blockDim.x) {
    const float x = sl.data[i];
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
    nonfinite[blockIdx.x] = block_bad;
  }
}

// out[0] = Σ_t Σ_b partial, out[1] = 1 when any block saw a NaN/Inf, else 0.
// per_tensor: count doubles of scratch.
__global__ void sumsq_finish_kernel(const GradSlice* slices, int count, const double* partial,
                                    const int* nonfinite, double* per_tensor, double* out) {
  ECHO_SHARED(int, any_bad, [kReduceThreads]);
  int bad = 0;
  for (int t = threadIdx.x; t < count; t += blockDim.x) {
    const int64_t b0 = slices[t].first_block, b1 = b0 + slices[t].blocks;
    double s = 0;
    for (int64_t b = b0; b < b1; ++b) {
      s += partial[b];
      bad |= nonfinite[b];
    }
    per_tensor[t] = s;
  }
  any_bad[threadIdx.x] = bad;
  __syncthreads();
  if (threadIdx.x == 0) {
    double s = 0;
    int flag = 0;
    for (int t = 0; t < count; ++t) s += per_tensor[t];
    for (int i = 0; i < (int)blockDim.x; ++i) flag |= any_bad[i];
    out[0] = s;
    out[1] = flag ? 1.0 : 0.0;
  }
}

}  // namespace

void adamw_step(float* p, const float* g, float* m, float* v, int64_t n, float lr, float beta1,
                float beta2, float eps, float bias1, float bias2, float decay_factor) {
  if (n == 0) return;
  ECHO_LAUNCH(adamw_kernel, grid_for(n), kThreads)(p, g, m, v, n, lr, beta1, beta2, eps, bias1, bias2, decay_factor);
  check_launch("adamw_step");
}

int64_t plan_sum_squares(std::vector<GradSlice>& slices) {
  int64_t blocks = 0;
  for (auto& sl : slices) {
    sl.first_block = blocks;
    sl.blocks = (sl.n + kSumsqElemsPerBlock - 1) / kSumsqElemsPerBlock;
    blocks += sl.blocks;
  }
  // Layout in doubles: the slice table, partials, flags (as ints, rounded up),
  // per-tensor sums, the two results.
  const int64_t table = (static_cast<int64_t>(slices.size() * sizeof(GradSlice)) + 7) / 8;
  return table + blocks + (blocks + 1) / 2 + static_cast<int64_t>(slices.size()) + 2;
}

double sum_squares(const std::vector<GradSlice>& slices, double* workspace, bool* finite) {
  if (finite) *finite = true;
  int64_t blocks = 0;
  for (const auto& sl : slices) blocks += sl.blocks;
  if (blocks == 0) return 0.0;
  const int count = static_cast<int>(slices.size());
  const int64_t table = (static_cast<int64_t>(slices.size() * sizeof(GradSlice)) + 7) / 8;
  auto* d_slices = reinterpret_cast<GradSlice*>(workspace);
  double* partial = workspace + table;
  int* nonfinite = reinterpret_cast<int*>(partial + blocks);
  double* per_tensor = partial + blocks + (blocks + 1) / 2;
  double* out = per_tensor + count;
  check_cuda(cudaMemcpy(d_slices, slices.data(), slices.size() * sizeof(GradSlice), cudaMemcpyHostToDevice),
             "sum_squares table");
  ECHO_LAUNCH(sumsq_partial_kernel, row_blocks(blocks, "sum_squares"), kReduceThreads)(d_slices, count, partial,
                                                                                      nonfinite);
  check_launch("sum_squares");
  ECHO_LAUNCH(sumsq_finish_kernel, 1, kReduceThreads)(d_slices, count, partial, nonfinite, per_tensor, out);
  check_launch("sum_squares finish");
  double host[2];
  note_device_to_host_copy();
  check_cuda(cudaMemcpy(host, out, sizeof(host), cudaMemcpyDeviceToHost), "sum_squares copy");
  if (finite) *finite = host[1] == 0.0;
  return host[0];
}

}  // namespace echo::gpu
