// CUDA twin of ops/causal_conv1d.cpp: one thread per output element for y and
// dx; dw/dbias as per-chunk partials (thread per channel, rows of the chunk in
// order) summed over chunks in order — the CPU's split (ops/reductions.h), no atomics.
#include "cuda/block_reduce.cuh"
#include "cuda/causal_conv1d.cuh"

namespace echo::gpu {
namespace {

__global__ void forward_kernel(const float* x, const float* w, const float* bias, float* y, int64_t n, int64_t T,
                               int64_t C, int64_t W) {
  ECHO_GRID_STRIDE(i, n) {
    const int64_t c = i % C, row = i / C;
    const int64_t b = row / T, t = row % T;
    float acc = bias ? bias[c] : 0.f;
    for (int64_t k = 0; k < W; ++k) {
      const int64_t s = t - (W - 1) + k;
      if (s >= 0) acc += w[c * W + k] * x[(b * T + s) * C + c];
    }
    y[i] = acc;
  }
}

__global__ void backward_dx_kernel(const float* w, const float* dy, float* dx, int64_t n, int64_t T, int64_t C,
                                   int64_t W) {
  ECHO_GRID_STRIDE(i, n) {
    const int64_t c = i % C, row = i / C;
    const int64_t b = row / T, s = row % T;
    float acc = 0;
    for (int64_t k = 0; k < W; ++k) {
      const int64_t t = s + (W - 1) - k;
      if (t < T) acc += w[c * W + k] * dy[(b * T + t) * C + c];
    }
    dx[i] += acc;
  }
}

// partial[chunk][c][k]: k < W the dw term, k = W the dbias term.
__global__ void dw_partial_kernel(const float* x, const float* dy, float* partial, int64_t rows, int64_t T,
                                  int64_t C, int64_t W) {
  const int64_t chunk = blockIdx.x;
  const int64_t c = blockIdx.y * (int64_t)blockDim.x + threadIdx.x;
  if (c >= C) return;
  const int64_t slots = W + 1;
  const int64_t end = min(rows, (chunk + 1) * kRowsPerChunk);
  float* p = partial + (chunk * C + c) * slots;
  for (int64_t k = 0; k < W; ++k) {
    float acc = 0;
    for (int64_t row = chunk * kRowsPerChunk; row < end; ++row) {
      const int64_t b = row / T, t = row % T;
      const int64_t s = t - (W - 1) + k;
      if (s >= 0) acc += dy[row * C + c] * x[(b * T + s) * C + c];
    }
    p[k] = acc;
  }
  float acc = 0;
  for (int64_t row = chunk * kRowsPerChunk; row < end; ++row) acc += dy[row * C + c];
  p[W] = acc;
}

__global__ void sum_chunks_kernel(const float* partial, float* dw, float* dbias, int64_t chunks, int64_t C,
                                  int64_t W) {
  const int64_t slots = W + 1;
  ECHO_GRID_STRIDE(i, C * slots) {
    float sum = 0;
    for (int64_t chunk = 0; chunk < chunks; ++chunk) sum += partial[chunk * C * slots + i];
    const int64_t c = i / slots, k = i % slots;
    if (k < W && dw) dw[c * W + k] += sum;
    if (k == W && dbias) dbias[c] += sum;
  }
}

__global__ void step_kernel(const float* x_t, float* state, const float* w, const float* bias, float* y, int64_t n,
                            int64_t C, int64_t W) {
  ECHO_GRID_STRIDE(i, n) {
    const int64_t c = i % C;
    float* st = state + i * (W - 1);
    float acc = bias ? bias[c] : 0.f;
    for (int64_t k = 0; k < W - 1; ++k) acc += w[c * W + k] * st[k];
    acc += w[c * W + W - 1] * x_t[i];
    y[i] = acc;
    for (int64_t k = 0; k + 1 < W - 1; ++k) st[k] = st[k + 1];
    if (W > 1) st[W - 2] = x_t[i];
  }
}

}  // namespace

int64_t causal_conv1d_workspace_floats(int64_t b, int64_t T, int64_t C, int64_t W) {
  return row_chunks(b * T) * C * (W + 1) + 1;
}

void causal_conv1d_forward(const float* x, const float* w, const float* bias, float* y, int64_t b, int64_t T,
                           int64_t C, int64_t W) {
  const int64_t n = b * T * C;
  if (n == 0) return;
  ECHO_LAUNCH(forward_kernel, grid_for(n), kThreads)(x, w, bias, y, n, T, C, W);
  check_launch("causal_conv1d_forward");
}

void causal_conv1d_backward(const float* x, const float* w, const float* dy, float* dx, float* dw, float* dbias,
                            float* workspace, int64_t b, int64_t T, int64_t C, int64_t W) {
  const int64_t rows = b * T, n = rows * C;
  if (n == 0) return;
  if (dx) {
    ECHO_LAUNCH(backward_dx_kernel, grid_for(n), kThreads)(w, dy, dx, n, T, C, W);
    check_launch("causal_conv1d_backward (dx)");
  }
  if (dw || dbias) {
    const int64_t chunks = row_chunks(rows);
    const int64_t grid_y = (C + kThreads - 1) / kThreads;
    if (grid_y > 65535)
      throw std::runtime_error("causal_conv1d_backward: " + std::to_string(C) + " columns need more than 65535 blocks in y");
    dim3 grid(row_blocks(chunks, "causal_conv1d_backward"), (unsigned)grid_y);
    ECHO_LAUNCH(dw_partial_kernel, grid, kThreads)(x, dy, workspace, rows, T, C, W);
    check_launch("causal_conv1d_backward (dw partials)");
    ECHO_LAUNCH(sum_chunks_kernel, grid_for(C * (W + 1)), kThreads)(workspace, dw, dbias, chunks, C, W);
    check_launch("causal_conv1d_backward (dw, dbias)");
  }
}

void causal_conv1d_step(const float* x_t, float* state, const float* w, const float* bias, float* y, int64_t b,
                        int64_t C, int64_t W) {
  const int64_t n = b * C;
  if (n == 0) return;
  ECHO_LAUNCH(step_kernel, grid_for(n), kThreads)(x_t, state, w, bias, y, n, C, W);
  check_launch("causal_conv1d_step");
}

}  // namespace echo::gpu
