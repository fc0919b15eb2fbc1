// Deterministic reductions shared by the CUDA kernels: warp and block sums in a
// fixed order, and the chunked sum over rows that mirrors ops/reductions.h.
// No atomics anywhere, so every run gives the same bits. Included only by .cu files.
#pragma once

#include "cuda/common.cuh"
#include "ops/reductions.h"  // kRowsPerChunk, row_chunks: the CPU's split

namespace echo::gpu {

// Butterfly sum over the 32 lanes of a full warp; every lane ends with the total.
template <typename Real> __device__ inline Real warp_sum(Real v) {
  for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
  return v;
}

// Sum of v over the block in a fixed tree order (blockDim.x a power of two);
// shared: blockDim.x elements of shared memory. Every thread gets the total, and
// shared may be reused as soon as it returns.
template <typename Real> __device__ inline Real block_sum(Real v, Real* shared) {
  shared[threadIdx.x] = v;
  __syncthreads();
  for (int s = blockDim.x / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s) shared[threadIdx.x] += shared[threadIdx.x + s];
    __syncthreads();
  }
  const Real total = shared[0];
  __syncthreads();
  return total;
}

// Threads for one block per row of length d (a power of two in [32, 256]), with
// row_threads(d) floats of dynamic shared memory for block_sum.
inline int row_threads(int64_t d) {
  int t = 32;
  while (t < d && t < 256) t *= 2;
  return t;
}

// ---- sums over rows in fixed chunks (ops/reductions.h) ---------------------------
// Pass 1, one thread per (chunk c, column j): Σ_{rows r of chunk c, in order} term(r, j),
// stored into out[c, j] or, with accumulate, added to it.
template <typename Term>
__global__ void chunk_column_sums_kernel(Term term, float* out, bool accumulate, int64_t rows, int64_t cols,
                                         int64_t chunks) {
  ECHO_GRID_STRIDE(idx, chunks * cols) {
    const int64_t c = idx / cols, j = idx % cols;
    const int64_t end = min(rows, (c + 1) * kRowsPerChunk);
    float acc = 0.f;
    for (int64_t r = c * kRowsPerChunk; r < end; ++r) acc += term(r, j);
    if (accumulate) out[idx] += acc;
    else out[idx] = acc;
  }
}

// Pass 2: out[k] += Σ_c partial[c, k], chunks in order (T = float; a template so
// that every .cu file may include this header).
template <typename T>
__global__ void add_chunk_sums_kernel(const T* partial, T* out, int64_t chunks, int64_t cols) {
  ECHO_GRID_STRIDE(k, cols) {
    T s = 0;
    for (int64_t c = 0; c < chunks; ++c) s += partial[c * cols + k];
    out[k] += s;
  }
}

// out[j] += Σ_r term(r, j) for j < cols: the twin of echo::add_column_sums, with
// term a __device__ functor. workspace: row_chunks(rows)·cols floats, unused (may
// be null) when the rows fit one chunk, whose sum goes straight into out.
template <typename Term>
void add_column_sums(int64_t rows, int64_t cols, Term term, float* out, float* workspace, const char* op) {
  const int64_t chunks = row_chunks(rows);
  if (chunks == 0 || cols == 0) return;
  if (chunks == 1) {
    ECHO_LAUNCH(chunk_column_sums_kernel, grid_for(cols), kThreads)(term, out, true, rows, cols, 1);
    check_launch(op);
    return;
  }
  ECHO_LAUNCH(chunk_column_sums_kernel, grid_for(chunks * cols), kThreads)(term, workspace, false, rows, cols, chunks);
  check_launch(op);
  ECHO_LAUNCH(add_chunk_sums_kernel, grid_for(cols), kThreads)(workspace, out, chunks, cols);
  check_launch(op);
}

}  // namespace echo::gpu
