// cuBLAS on the emulated device: the column-major products of cublas_v2.h on
// OpenBLAS (cblas, CblasColMajor), with cuBLAS's argument checks and its rule
// that C is not read when beta is 0.
#include <cblas.h>

#include <cmath>
#include <cstring>
#include <vector>

#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

struct echo_emu_cublas {
  cublasMath_t math = CUBLAS_DEFAULT_MATH;
};

namespace {

// TF32 keeps 10 of f32's 23 mantissa bits; the GPU rounds to nearest, ties away.
float round_to_tf32(float x) {
  uint32_t u;
  std::memcpy(&u, &x, 4);
  if ((u & 0x7f800000u) == 0x7f800000u) return x;  // Inf, NaN
  u = (u + 0x1000u) & ~0x1fffu;
  float r;
  std::memcpy(&r, &u, 4);
  return r;
}

bool valid_shape(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, int lda, int ldb, int ldc) {
  if (m < 0 || n < 0 || k < 0) return false;
  if (ta > CUBLAS_OP_C || tb > CUBLAS_OP_C) return false;
  const int rows_a = ta == CUBLAS_OP_N ? m : k, rows_b = tb == CUBLAS_OP_N ? k : n;
  return lda >= (rows_a > 1 ? rows_a : 1) && ldb >= (rows_b > 1 ? rows_b : 1) && ldc >= (m > 1 ? m : 1);
}

// An operand as f32 in column-major [rows, cols] with leading dimension ld.
const float* widen(const void* src, cudaDataType type, int rows, int cols, int ld, bool tf32,
                   std::vector<float>& buffer) {
  if (type == CUDA_R_32F && !tf32) return static_cast<const float*>(src);
  buffer.assign(static_cast<size_t>(ld) * (cols > 0 ? cols - 1 : 0) + rows, 0.f);
  for (int c = 0; c < cols; ++c)
    for (int r = 0; r < rows; ++r) {
      const size_t i = static_cast<size_t>(c) * ld + r;
      float v;
      if (type == CUDA_R_16BF) v = __bfloat162float(static_cast<const __nv_bfloat16*>(src)[i]);
      else if (type == CUDA_R_16F) v = __half2float(static_cast<const __half*>(src)[i]);
      else v = static_cast<const float*>(src)[i];
      buffer[i] = tf32 ? round_to_tf32(v) : v;
    }
  return buffer.data();
}

cublasStatus_t gemm(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, float alpha,
                    const void* A, cudaDataType at, int lda, const void* B, cudaDataType bt, int ldb, float beta,
                    float* C, int ldc, bool tf32) {
  if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
  if (!valid_shape(ta, tb, m, n, k, lda, ldb, ldc)) return CUBLAS_STATUS_INVALID_VALUE;
  if (m == 0 || n == 0) return CUBLAS_STATUS_SUCCESS;
  if (beta == 0.f)  // C may hold anything, NaN included: it is not read
    for (int c = 0; c < n; ++c) std::memset(C + static_cast<size_t>(c) * ldc, 0, sizeof(float) * m);
  if (k == 0 || alpha == 0.f) {
    if (beta != 0.f && beta != 1.f)
      for (int c = 0; c < n; ++c)
        for (int r = 0; r < m; ++r) C[static_cast<size_t>(c) * ldc + r] *= beta;
    return CUBLAS_STATUS_SUCCESS;
  }
  std::vector<float> abuf, bbuf;
  const int a_rows = ta == CUBLAS_OP_N ? m : k, a_cols = ta == CUBLAS_OP_N ? k : m;
  const int b_rows = tb == CUBLAS_OP_N ? k : n, b_cols = tb == CUBLAS_OP_N ? n : k;
  const float* a = widen(A, at, a_rows, a_cols, lda, tf32, abuf);
  const float* b = widen(B, bt, b_rows, b_cols, ldb, tf32, bbuf);
  cblas_sgemm(CblasColMajor, ta == CUBLAS_OP_N ? CblasNoTrans : CblasTrans, tb == CUBLAS_OP_N ? CblasNoTrans : CblasTrans,
              m, n, k, alpha, a, lda, b, ldb, beta == 0.f ? 0.f : beta, C, ldc);
  return CUBLAS_STATUS_SUCCESS;
}

bool supported(cudaDataType t) { return t == CUDA_R_32F || t == CUDA_R_16BF || t == CUDA_R_16F; }
size_t element_size(cudaDataType t) { return t == CUDA_R_32F ? 4 : 2; }
bool tf32_for(cublasHandle_t h, cublasComputeType_t compute) {
  return compute == CUBLAS_COMPUTE_32F_FAST_TF32 || (h && h->math == CUBLAS_TF32_TENSOR_OP_MATH);
}

}  // namespace

cublasStatus_t cublasCreate(cublasHandle_t* handle) {
  *handle = new echo_emu_cublas();
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasDestroy(cublasHandle_t handle) {
  delete handle;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSetStream(cublasHandle_t, cudaStream_t) { return CUBLAS_STATUS_SUCCESS; }
cublasStatus_t cublasSetMathMode(cublasHandle_t handle, cublasMath_t mode) {
  if (!handle) return CUBLAS_STATUS_NOT_INITIALIZED;
  handle->math = mode;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasGetMathMode(cublasHandle_t handle, cublasMath_t* mode) {
  if (!handle) return CUBLAS_STATUS_NOT_INITIALIZED;
  *mode = handle->math;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSgemm(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                           const float* alpha, const float* A, int lda, const float* B, int ldb, const float* beta,
                           float* C, int ldc) {
  const bool tf32 = h && h->math == CUBLAS_TF32_TENSOR_OP_MATH;
  return gemm(h, ta, tb, m, n, k, *alpha, A, CUDA_R_32F, lda, B, CUDA_R_32F, ldb, *beta, C, ldc, tf32);
}

cublasStatus_t cublasSgemmStridedBatched(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n,
                                         int k, const float* alpha, const float* A, int lda, long long sa,
                                         const float* B, int ldb, long long sb, const float* beta, float* C, int ldc,
                                         long long sc, int batch) {
  if (batch < 0) return CUBLAS_STATUS_INVALID_VALUE;
  for (int i = 0; i < batch; ++i)
    if (cublasStatus_t s = cublasSgemm(h, ta, tb, m, n, k, alpha, A + i * sa, lda, B + i * sb, ldb, beta, C + i * sc, ldc))
      return s;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasGemmEx(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                            const void* alpha, const void* A, cudaDataType at, int lda, const void* B,
                            cudaDataType bt, int ldb, const void* beta, void* C, cudaDataType ct, int ldc,
                            cublasComputeType_t compute, cublasGemmAlgo_t) {
  if (!supported(at) || !supported(bt) || ct != CUDA_R_32F ||
      (compute != CUBLAS_COMPUTE_32F && compute != CUBLAS_COMPUTE_32F_FAST_TF32))
    return CUBLAS_STATUS_NOT_SUPPORTED;
  return gemm(h, ta, tb, m, n, k, *static_cast<const float*>(alpha), A, at, lda, B, bt, ldb,
              *static_cast<const float*>(beta), static_cast<float*>(C), ldc, tf32_for(h, compute));
}

cublasStatus_t cublasGemmStridedBatchedEx(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n,
                                          int k, const void* alpha, const void* A, cudaDataType at, int lda,
                                          long long sa, const void* B, cudaDataType bt, int ldb, long long sb,
                                          const void* beta, void* C, cudaDataType ct, int ldc, long long sc, int batch,
                                          cublasComputeType_t compute, cublasGemmAlgo_t algo) {
  if (batch < 0) return CUBLAS_STATUS_INVALID_VALUE;
  if (!supported(at) || !supported(bt)) return CUBLAS_STATUS_NOT_SUPPORTED;
  for (int i = 0; i < batch; ++i) {
    const char* a = static_cast<const char*>(A) + i * sa * element_size(at);
    const char* b = static_cast<const char*>(B) + i * sb * element_size(bt);
    float* c = static_cast<float*>(C) + i * sc;
    if (cublasStatus_t s = cublasGemmEx(h, ta, tb, m, n, k, alpha, a, at, lda, b, bt, ldb, beta, c, ct, ldc, compute, algo))
      return s;
  }
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSgemv(cublasHandle_t h, cublasOperation_t trans, int m, int n, const float* alpha, const float* A,
                           int lda, const float* x, int incx, const float* beta, float* y, int incy) {
  if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
  if (m < 0 || n < 0 || lda < (m > 1 ? m : 1) || incx == 0 || incy == 0) return CUBLAS_STATUS_INVALID_VALUE;
  const int ylen = trans == CUBLAS_OP_N ? m : n;
  if (*beta == 0.f)
    for (int i = 0; i < ylen; ++i) y[static_cast<long long>(i) * (incy > 0 ? incy : -incy)] = 0.f;
  if (m == 0 || n == 0) return CUBLAS_STATUS_SUCCESS;
  cblas_sgemv(CblasColMajor, trans == CUBLAS_OP_N ? CblasNoTrans : CblasTrans, m, n, *alpha, A, lda, x, incx, *beta, y,
              incy);
  return CUBLAS_STATUS_SUCCESS;
}
