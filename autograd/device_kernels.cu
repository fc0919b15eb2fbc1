#include "autograd/device_kernels.h"

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

#include "autograd/cuda_launch.h"

namespace echo::devk {
namespace {

constexpr int kThreads = 256;
inline int blocks_for(int64_t n) {
  int64_t b = (n + kThreads - 1) / kThreads;
  return static_cast<int>(b < 65535 * 16 ? (b > 0 ? b : 1) : 65535 * 16);
}
inline void check_launch(const char* what) {
  cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(e));
}

template <typename T> __global__ void fill_kernel(T* dst, int64_t n, T v) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) dst[i] = v;
}
template <typename T> __global__ void axpy_kernel(T* dst, const T* src, int64_t n, T a) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) dst[i] += a * src[i];
}
template <typename D, typename S> __global__ void cast_kernel(D* dst, const S* src, int64_t n) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) dst[i] = static_cast<D>(src[i]);
}
__global__ void f32_to_bf16_kernel(uint16_t* dst, const float* src, int64_t n) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    __nv_bfloat16 b = __float2bfloat16_rn(src[i]);
    dst[i] = *reinterpret_cast<uint16_t*>(&b);
  }
}
__global__ void bf16_to_f32_kernel(float* dst, const uint16_t* src, int64_t n) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
    dst[i] = __uint_as_float(static_cast<uint32_t>(src[i]) << 16);
}

}  // namespace

void fill_f32(float* d, int64_t n, float v) { if (n) { ECHO_LAUNCH(fill_kernel, blocks_for(n), kThreads)(d, n, v); check_launch("fill_f32"); } }
void fill_f64(double* d, int64_t n, double v) { if (n) { ECHO_LAUNCH(fill_kernel, blocks_for(n), kThreads)(d, n, v); check_launch("fill_f64"); } }
void fill_bytes_zero(void* d, int64_t bytes) {
  if (bytes == 0) return;
  cudaError_t e = cudaMemsetAsync(d, 0, bytes, 0);
  if (e != cudaSuccess) {
    cudaGetLastError();  // clear it, so the next launch check does not blame another kernel
    throw std::runtime_error(std::string("cudaMemset: ") + cudaGetErrorString(e));
  }
}
void axpy_f32(float* d, const float* s, int64_t n, float a) { if (n) { ECHO_LAUNCH(axpy_kernel, blocks_for(n), kThreads)(d, s, n, a); check_launch("axpy_f32"); } }
void axpy_f64(double* d, const double* s, int64_t n, double a) { if (n) { ECHO_LAUNCH(axpy_kernel, blocks_for(n), kThreads)(d, s, n, a); check_launch("axpy_f64"); } }
void cast_f32_to_f64(double* d, const float* s, int64_t n) { if (n) { ECHO_LAUNCH(cast_kernel, blocks_for(n), kThreads)(d, s, n); check_launch("cast"); } }
void cast_f64_to_f32(float* d, const double* s, int64_t n) { if (n) { ECHO_LAUNCH(cast_kernel, blocks_for(n), kThreads)(d, s, n); check_launch("cast"); } }
void cast_f32_to_bf16(uint16_t* d, const float* s, int64_t n) { if (n) { ECHO_LAUNCH(f32_to_bf16_kernel, blocks_for(n), kThreads)(d, s, n); check_launch("cast"); } }
void cast_bf16_to_f32(float* d, const uint16_t* s, int64_t n) { if (n) { ECHO_LAUNCH(bf16_to_f32_kernel, blocks_for(n), kThreads)(d, s, n); check_launch("cast"); } }

}  // namespace echo::devk
