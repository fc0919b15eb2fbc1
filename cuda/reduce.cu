// CUDA twin of ops/reduce.cpp. Deterministic reductions without atomics:
//   sum_all: pass 1, G blocks (G from n only) each sum a grid-stride subset and
//   reduce it with a fixed shared-memory tree into partial[b]; pass 2, one block
//   reduces the G partials the same way. sum_last: one block per row.
// Summation order differs from the CPU's sequential chunks, so f32 results
// agree to rounding, not bitwise.
#include "cuda/block_reduce.cuh"
#include "cuda/reduce.cuh"

namespace echo::gpu {
namespace {

constexpr int64_t kMaxPartials = 1024;
constexpr int64_t kItemsPerThread = 8;

// Every kernel here runs kThreads threads a block and sums them with block_sum
// (cuda/block_reduce.cuh) in a kThreads-float shared buffer.
__global__ void sum_pass1_kernel(const float* x, float* partial, int64_t n) {
  float acc = 0.f;
  for (int64_t i = blockIdx.x * (int64_t)kThreads + threadIdx.x; i < n; i += (int64_t)gridDim.x * kThreads)
    acc += x[i];
  ECHO_SHARED(float, shared, [kThreads]);
  const float total = block_sum(acc, shared);
  if (threadIdx.x == 0) partial[blockIdx.x] = total;
}
__global__ void sum_pass2_kernel(const float* partial, float* out, int64_t count, float scale) {
  float acc = 0.f;
  for (int64_t i = threadIdx.x; i < count; i += kThreads) acc += partial[i];
  ECHO_SHARED(float, shared, [kThreads]);
  const float total = block_sum(acc, shared);
  if (threadIdx.x == 0) out[0] = total * scale;
}
__global__ void sum_all_backward_kernel(const float* dy, float* dx, int64_t n, float scale) {
  const float g = dy[0] * scale;
  ECHO_GRID_STRIDE(i, n) dx[i] += g;
}
__global__ void sum_last_kernel(const float* x, float* y, int64_t cols) {
  const float* row = x + blockIdx.x * cols;
  float acc = 0.f;
  for (int64_t j = threadIdx.x; j < cols; j += kThreads) acc += row[j];
  ECHO_SHARED(float, shared, [kThreads]);
  const float total = block_sum(acc, shared);
  if (threadIdx.x == 0) y[blockIdx.x] = total;
}
__global__ void sum_last_backward_kernel(const float* dy, float* dx, int64_t rows, int64_t cols) {
  ECHO_GRID_STRIDE(i, rows * cols) dx[i] += dy[i / cols];
}

}  // namespace

int64_t sum_all_partials(int64_t n) {
  int64_t g = (n + kThreads * kItemsPerThread - 1) / (kThreads * kItemsPerThread);
  if (g < 1) g = 1;
  if (g > kMaxPartials) g = kMaxPartials;
  return g;
}
void sum_all(const float* x, float* out, float* partial, int64_t n, float scale) {
  const int64_t g = sum_all_partials(n);
  ECHO_LAUNCH(sum_pass1_kernel, static_cast<int>(g), kThreads)(x, partial, n);
  check_launch("sum (pass 1)");
  ECHO_LAUNCH(sum_pass2_kernel, 1, kThreads)(partial, out, g, scale);
  check_launch("sum (pass 2)");
}
void sum_all_backward(const float* dy, float* dx, int64_t n, float scale) {
  if (n == 0) return;
  ECHO_LAUNCH(sum_all_backward_kernel, grid_for(n), kThreads)(dy, dx, n, scale);
  check_launch("sum_backward");
}
void sum_last(const float* x, float* y, int64_t rows, int64_t cols) {
  if (rows == 0) return;
  if (rows > 0x7fffffffLL) throw std::runtime_error("sum_last: too many rows for one grid");
  ECHO_LAUNCH(sum_last_kernel, static_cast<unsigned>(rows), kThreads)(x, y, cols);
  check_launch("sum_last");
}
void sum_last_backward(const float* dy, float* dx, int64_t rows, int64_t cols) {
  if (rows * cols == 0) return;
  ECHO_LAUNCH(sum_last_backward_kernel, grid_for(rows * cols), kThreads)(dy, dx, rows, cols);
  check_launch("sum_last_backward");
}

}  // namespace echo::gpu
