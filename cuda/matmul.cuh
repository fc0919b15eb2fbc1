// Launchers for ops/matmul.cpp (cuBLAS: f32, and bf16 inputs with fp32
// accumulation and f32 output for mixed precision). Every matrix is row-major; A is
// stored [M,K] (or [K,M] when trans_a), B [K,N] (or [N,K] when trans_b), C [M,N]
// with leading dimensions lda/ldb/ldc, exactly as cblas_sgemm with CblasRowMajor.
#pragma once
#include <cstdint>

namespace echo::gpu {
// C = alpha·op(A)·op(B) + beta·C
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
          int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc);
// The same for `batch` independent products at the given element strides.
void gemm_strided_batched(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                          const float* A, int64_t lda, int64_t stride_a, const float* B, int64_t ldb,
                          int64_t stride_b, float beta, float* C, int64_t ldc, int64_t stride_c,
                          int64_t batch);
// Mixed precision: the same products with A and B in bf16 (raw uint16 bits, as
// autograd/device_kernels casts them), C and the accumulation in fp32.
void gemm_bf16(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const uint16_t* A,
               int64_t lda, const uint16_t* B, int64_t ldb, float beta, float* C, int64_t ldc);
void gemm_strided_batched_bf16(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                               const uint16_t* A, int64_t lda, int64_t stride_a, const uint16_t* B, int64_t ldb,
                               int64_t stride_b, float beta, float* C, int64_t ldc, int64_t stride_c,
                               int64_t batch);
// y[r, o] = bias[o] for every row r of y [rows, cols]
void broadcast_rows(const float* bias, float* y, int64_t rows, int64_t cols);
// dbias[o] += Σ_r dy[r, o], as dyᵀ·ones (cuBLAS gemv; ones holds rows 1.0s)
void column_sums_accumulate(const float* dy, const float* ones, float* dbias, int64_t rows, int64_t cols);
}  // namespace echo::gpu
