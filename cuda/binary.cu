// CUDA twin of ops/binary.cpp: the same formulas, and for the broadcast
// operand's gradient the same two-pass reduction over fixed row chunks
// (cuda/block_reduce.cuh: pass 1, one thread per (chunk, column) sums its
// chunk's rows in order; pass 2, one thread per column adds the partials in
// chunk order). No atomics, so the result is the same on every run.
#include "cuda/binary.cuh"
#include "cuda/block_reduce.cuh"

namespace echo::gpu {
namespace {

__device__ inline float value(int kind, float a, float b) {
  switch (kind) {
    case 0: return a + b;
    case 1: return a - b;
    case 2: return a * b;
    default: return a / b;
  }
}
// a and b are null for add/sub (not saved); only mul/div read them.
__device__ inline float d_da(int kind, const float* a, const float* b, int64_t i, int64_t j) {
  switch (kind) {
    case 0: case 1: return 1.f;
    case 2: return b[j];
    default: return 1.f / b[j];
  }
}
__device__ inline float d_db(int kind, const float* a, const float* b, int64_t i, int64_t j) {
  switch (kind) {
    case 0: return 1.f;
    case 1: return -1.f;
    case 2: return a[i];
    default: return -a[i] / (b[j] * b[j]);
  }
}

__global__ void forward_kernel(int kind, const float* a, const float* b, float* y, int64_t n, int64_t m) {
  ECHO_GRID_STRIDE(i, n) y[i] = value(kind, a[i], b[i % m]);
}
__global__ void backward_a_kernel(int kind, const float* a, const float* b, const float* dy, float* da,
                                  int64_t n, int64_t m) {
  ECHO_GRID_STRIDE(i, n) da[i] += dy[i] * d_da(kind, a, b, i, i % m);
}
// The db term of row r, column j: dy[r, j] · ∂f/∂b.
struct DbTerm {
  int kind;
  const float *a, *b, *dy;
  int64_t m;
  __device__ float operator()(int64_t r, int64_t j) const {
    const int64_t i = r * m + j;
    return dy[i] * d_db(kind, a, b, i, j);
  }
};

__global__ void affine_forward_kernel(const float* x, float* y, int64_t n, float alpha, float beta) {
  ECHO_GRID_STRIDE(i, n) y[i] = alpha * x[i] + beta;
}
__global__ void affine_backward_kernel(const float* dy, float* dx, int64_t n, float alpha) {
  ECHO_GRID_STRIDE(i, n) dx[i] += alpha * dy[i];
}

}  // namespace

void binary_forward(int kind, const float* a, const float* b, float* y, int64_t n, int64_t m) {
  if (n == 0) return;
  ECHO_LAUNCH(forward_kernel, grid_for(n), kThreads)(kind, a, b, y, n, m);
  check_launch("binary_forward");
}
void binary_backward_a(int kind, const float* a, const float* b, const float* dy, float* da,
                       int64_t n, int64_t m) {
  if (n == 0 || !da) return;
  ECHO_LAUNCH(backward_a_kernel, grid_for(n), kThreads)(kind, a, b, dy, da, n, m);
  check_launch("binary_backward_a");
}
void binary_backward_b(int kind, const float* a, const float* b, const float* dy, float* db,
                       float* partial, int64_t n, int64_t m) {
  if (n == 0 || m == 0 || !db) return;
  add_column_sums(n / m, m, DbTerm{kind, a, b, dy, m}, db, partial, "binary_backward_b");
}
void affine_forward(const float* x, float* y, int64_t n, float alpha, float beta) {
  if (n == 0) return;
  ECHO_LAUNCH(affine_forward_kernel, grid_for(n), kThreads)(x, y, n, alpha, beta);
  check_launch("affine_forward");
}
void affine_backward(const float* dy, float* dx, int64_t n, float alpha) {
  if (n == 0) return;
  ECHO_LAUNCH(affine_backward_kernel, grid_for(n), kThreads)(dy, dx, n, alpha);
  check_launch("affine_backward");
}

}  // namespace echo::gpu
