// cuBLAS side of ops/matmul.cpp. cuBLAS is column-major, and a row-major
// buffer of X [r, c] with leading dimension ld is, read column-major, the
// matrix Xᵀ [c, r] with the same ld. So the row-major product
//   C = op(A)·op(B)            (what cblas_sgemm(CblasRowMajor, ...) computes)
// is the column-major product
//   Cᵀ = op(B)ᵀ·op(A)ᵀ  =  cublasSgemm(op_b, op_a, N, M, K, B, ldb, A, lda, C, ldc)
// with the transpose flags passed through unchanged. The default math mode is
// kept (full fp32, no TF32), so results match the CPU to summation order.
//
// Mixed precision: cublasGemmEx with bf16 A and B (CUDA_R_16BF), an f32 C
// (CUDA_R_32F) and CUBLAS_COMPUTE_32F, the same operand swap as above. A
// product of two bf16 values is exact in fp32, so this equals the CPU's
// emulation (bf16-rounded values in f32, then sgemm) to summation order.
#include <climits>

#include "cuda/common.cuh"
#include "cuda/matmul.cuh"

namespace echo::gpu {
namespace {

void check_int(int64_t v, const char* what) {
  if (v > INT_MAX) throw std::runtime_error(std::string(what) + ": dimension exceeds cuBLAS's int range");
}
// C = beta·C for K = 0 (only beta 0 or 1 occur): zero the M rows of N floats.
void zero_rows(float* C, int64_t ldc, int64_t N, int64_t rows) {
  check_cuda(cudaMemset2DAsync(C, ldc * sizeof(float), 0, N * sizeof(float), rows), "gemm (K = 0)");
}

// The cases cuBLAS is not called for: an empty C, or K = 0 (C = beta·C).
// Returns true when they leave nothing more to do.
bool gemm_done_without_cublas(int64_t M, int64_t N, int64_t K, float beta, float* C, int64_t ldc,
                              int64_t stride_c, int64_t batch) {
  if (M == 0 || N == 0 || batch == 0) return true;
  if (K == 0) {
    if (beta == 0.f)
      for (int64_t i = 0; i < batch; ++i) zero_rows(C + i * stride_c, ldc, N, M);
    return true;
  }
  return false;
}

__global__ void broadcast_rows_kernel(const float* bias, float* y, int64_t rows, int64_t cols) {
  ECHO_GRID_STRIDE(i, rows * cols) y[i] = bias[i % cols];
}

}  // namespace

void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
          int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  if (gemm_done_without_cublas(M, N, K, beta, C, ldc, 0, 1)) return;
  for (int64_t v : {M, N, K, lda, ldb, ldc}) check_int(v, "gemm");
  const cublasOperation_t op_a = trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t op_b = trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
  check_cublas(cublasSgemm(cublas_handle(), op_b, op_a, (int)N, (int)M, (int)K, &alpha, B, (int)ldb, A, (int)lda,
                           &beta, C, (int)ldc),
               "cublasSgemm");
}

void gemm_strided_batched(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                          const float* A, int64_t lda, int64_t stride_a, const float* B, int64_t ldb,
                          int64_t stride_b, float beta, float* C, int64_t ldc, int64_t stride_c,
                          int64_t batch) {
  if (gemm_done_without_cublas(M, N, K, beta, C, ldc, stride_c, batch)) return;
  for (int64_t v : {M, N, K, lda, ldb, ldc, batch}) check_int(v, "gemm_strided_batched");
  const cublasOperation_t op_a = trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t op_b = trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
  check_cublas(cublasSgemmStridedBatched(cublas_handle(), op_b, op_a, (int)N, (int)M, (int)K, &alpha, B, (int)ldb,
                                         stride_b, A, (int)lda, stride_a, &beta, C, (int)ldc, stride_c, (int)batch),
               "cublasSgemmStridedBatched");
}

void gemm_bf16(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const uint16_t* A,
               int64_t lda, const uint16_t* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  if (gemm_done_without_cublas(M, N, K, beta, C, ldc, 0, 1)) return;
  for (int64_t v : {M, N, K, lda, ldb, ldc}) check_int(v, "gemm (bf16)");
  const cublasOperation_t op_a = trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t op_b = trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
  check_cublas(cublasGemmEx(cublas_handle(), op_b, op_a, (int)N, (int)M, (int)K, &alpha, B, CUDA_R_16BF, (int)ldb, A,
                            CUDA_R_16BF, (int)lda, &beta, C, CUDA_R_32F, (int)ldc, CUBLAS_COMPUTE_32F,
                            CUBLAS_GEMM_DEFAULT),
               "cublasGemmEx (bf16)");
}

void gemm_strided_batched_bf16(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                               const uint16_t* A, int64_t lda, int64_t stride_a, const uint16_t* B, int64_t ldb,
                               int64_t stride_b, float beta, float* C, int64_t ldc, int64_t stride_c,
                               int64_t batch) {
  if (gemm_done_without_cublas(M, N, K, beta, C, ldc, stride_c, batch)) return;
  for (int64_t v : {M, N, K, lda, ldb, ldc, batch}) check_int(v, "gemm_strided_batched (bf16)");
  const cublasOperation_t op_a = trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t op_b = trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
  check_cublas(cublasGemmStridedBatchedEx(cublas_handle(), op_b, op_a, (int)N, (int)M, (int)K, &alpha, B, CUDA_R_16BF,
                                          (int)ldb, stride_b, A, CUDA_R_16BF, (int)lda, stride_a, &beta, C, CUDA_R_32F,
                                          (int)ldc, stride_c, (int)batch, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
               "cublasGemmStridedBatchedEx (bf16)");
}

void broadcast_rows(const float* bias, float* y, int64_t rows, int64_t cols) {
  if (rows * cols == 0) return;
  ECHO_LAUNCH(broadcast_rows_kernel, grid_for(rows * cols), kThreads)(bias, y, rows, cols);
  check_launch("linear (bias)");
}

void column_sums_accumulate(const float* dy, const float* ones, float* dbias, int64_t rows, int64_t cols) {
  if (rows == 0 || cols == 0) return;
  check_int(rows, "linear (bias grad)");
  check_int(cols, "linear (bias grad)");
  const float one = 1.f;
  // Column-major, dy is dyᵀ [cols, rows] with ld cols: dbias = dyᵀ·ones + dbias.
  check_cublas(cublasSgemv(cublas_handle(), CUBLAS_OP_N, (int)cols, (int)rows, &one, dy, (int)cols, ones, 1, &one,
                           dbias, 1),
               "cublasSgemv");
}

}  // namespace echo::gpu
