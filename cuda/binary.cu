// CUDA twin of ops/binary.cpp: the same formulas, and for the broadcast
// operand's gradient the same two-pass reduction over fixed row chunks
// (pass 1: one thread per (chunk, column) sums its chunk's rows in order;
// pass 2: one thread per column adds the partials in chunk order). No atomics,
// so the result is the same on every run.
#include "cuda/binary.cuh"
#include "cuda/common.cuh"

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
// Pass 1: partial[c, j] = Σ_{r in chunk c} dy[r, j] · ∂f/∂b, rows in order.
// With a single chunk the sum goes straight into db.
__global__ void backward_b_chunks_kernel(int kind, const float* a, const float* b, const float* dy,
                                         float* out, bool accumulate, int64_t rows, int64_t m,
                                         int64_t chunks, int64_t rows_per_chunk) {
  ECHO_GRID_STRIDE(idx, chunks * m) {
    const int64_t c = idx / m, j = idx % m;
    const int64_t r_end = min(rows, (c + 1) * rows_per_chunk);
    float acc = 0.f;
    for (int64_t r = c * rows_per_chunk; r < r_end; ++r) {
      const int64_t i = r * m + j;
      acc += dy[i] * d_db(kind, a, b, i, j);
    }
    if (accumulate) out[idx] += acc;
    else out[idx] = acc;
  }
}
// Pass 2: db[j] += Σ_c partial[c, j], chunks in order.
__global__ void backward_b_combine_kernel(const float* partial, float* db, int64_t chunks, int64_t m) {
  ECHO_GRID_STRIDE(j, m) {
    float total = 0.f;
    for (int64_t c = 0; c < chunks; ++c) total += partial[c * m + j];
    db[j] += total;
  }
}

__global__ void affine_forward_kernel(const float* x, float* y, int64_t n, float alpha, float beta) {
  ECHO_GRID_STRIDE(i, n) y[i] = alpha * x[i] + beta;
}
__global__ void affine_backward_kernel(const float* dy, float* dx, int64_t n, float alpha) {
  ECHO_GRID_STRIDE(i, n) dx[i] += alpha * dy[i];
}

}  // namespace

void binary_forward(int kind, const float* a, const float* b, float* y, int64_t n, int64_t m) {
  if (n == 0) return;
  forward_kernel<<<grid_for(n), kThreads>>>(kind, a, b, y, n, m);
  check_launch("binary_forward");
}
void binary_backward_a(int kind, const float* a, const float* b, const float* dy, float* da,
                       int64_t n, int64_t m) {
  if (n == 0 || !da) return;
  backward_a_kernel<<<grid_for(n), kThreads>>>(kind, a, b, dy, da, n, m);
  check_launch("binary_backward_a");
}
void binary_backward_b(int kind, const float* a, const float* b, const float* dy, float* db,
                       float* partial, int64_t n, int64_t m, int64_t rows_per_chunk) {
  if (n == 0 || m == 0 || !db) return;
  const int64_t rows = n / m;
  const int64_t chunks = (rows + rows_per_chunk - 1) / rows_per_chunk;
  if (chunks == 1) {
    backward_b_chunks_kernel<<<grid_for(m), kThreads>>>(kind, a, b, dy, db, true, rows, m, 1, rows_per_chunk);
    check_launch("binary_backward_b");
    return;
  }
  backward_b_chunks_kernel<<<grid_for(chunks * m), kThreads>>>(kind, a, b, dy, partial, false, rows, m, chunks,
                                                                rows_per_chunk);
  check_launch("binary_backward_b (chunks)");
  backward_b_combine_kernel<<<grid_for(m), kThreads>>>(partial, db, chunks, m);
  check_launch("binary_backward_b (combine)");
}
void affine_forward(const float* x, float* y, int64_t n, float alpha, float beta) {
  if (n == 0) return;
  affine_forward_kernel<<<grid_for(n), kThreads>>>(x, y, n, alpha, beta);
  check_launch("affine_forward");
}
void affine_backward(const float* dy, float* dx, int64_t n, float alpha) {
  if (n == 0) return;
  affine_backward_kernel<<<grid_for(n), kThreads>>>(dy, dx, n, alpha);
  check_launch("affine_backward");
}

}  // namespace echo::gpu
