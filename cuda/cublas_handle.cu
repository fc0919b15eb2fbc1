#include "cuda/common.cuh"

namespace echo::gpu {
cublasHandle_t cublas_handle() {
  static cublasHandle_t handle = [] {
    cublasHandle_t h;
    check_cublas(cublasCreate(&h), "cublasCreate");
    return h;
  }();
  return handle;
}
}  // namespace echo::gpu
