// Shared helpers for the CUDA kernels: error checks, launch geometry, the one
// cuBLAS handle. Included only by .cu files.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

#include "autograd/cuda_launch.h"

namespace echo::gpu {

inline void check_cuda(cudaError_t err, const char* what) {
  if (err != cudaSuccess) {
    cudaGetLastError();
    throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(err));
  }
}
// After a launch: turns a bad launch configuration into an exception naming the op.
inline void check_launch(const char* op) { check_cuda(cudaGetLastError(), op); }

inline void check_cublas(cublasStatus_t s, const char* what) {
  if (s != CUBLAS_STATUS_SUCCESS)
    throw std::runtime_error(std::string(what) + ": cuBLAS status " + std::to_string(static_cast<int>(s)));
}

cublasHandle_t cublas_handle();  // created on first use, on the default stream

constexpr int kThreads = 256;
inline int grid_for(int64_t n, int threads = kThreads) {
  int64_t b = (n + threads - 1) / threads;
  if (b < 1) b = 1;
  if (b > 65535LL * 32) b = 65535LL * 32;
  return static_cast<int>(b);
}

// gridDim.x for one block per row. It is limited to 2³¹ − 1; a bare
// (unsigned)rows cast would silently drop rows past 2³² instead of failing.
inline unsigned row_blocks(int64_t rows, const char* op) {
  if (rows > 0x7fffffffLL)
    throw std::runtime_error(std::string(op) + ": " + std::to_string(rows) + " rows exceed one grid (2^31 - 1 blocks)");
  return static_cast<unsigned>(rows);
}

#define ECHO_GRID_STRIDE(i, n) \
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < (n); i += (int64_t)gridDim.x * blockDim.x)

// Math in a kernel's element type. The float kernels are the ones that train;
// their double instantiations (ssd_scan, koopman_fit) exist so that the CUDA path
// can be checked against finite differences in float64, where float32's ≈1e-7
// rounding would drown the O(h²) truncation error of the central difference.
__device__ inline float real_exp(float x) { return expf(x); }
__device__ inline double real_exp(double x) { return exp(x); }
__device__ inline float real_sqrt(float x) { return sqrtf(x); }
__device__ inline double real_sqrt(double x) { return sqrt(x); }
__device__ inline float real_max(float a, float b) { return fmaxf(a, b); }
__device__ inline double real_max(double a, double b) { return fmax(a, b); }

}  // namespace echo::gpu
