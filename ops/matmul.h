// Matrix products (OpenBLAS on the CPU, cuBLAS on CUDA).
#pragma once
#include <string>

#include "autograd/tensor.h"

namespace echo {
// a [..., m, k] · b [k, n] -> [..., m, n]   (leading dims of a flattened into rows)
Tensor matmul(const Tensor& a, const Tensor& b);
// y = x Wᵀ (+ bias): x [..., in], weight [out, in], bias [out] or undefined -> [..., out]
Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias = Tensor());
// Batched: op(a) [B, m, k] · op(b) [B, k, n] -> [B, m, n], op = transpose when the flag is set
// (a is stored [B,k,m] when trans_a, b is stored [B,n,k] when trans_b).
Tensor bmm(const Tensor& a, const Tensor& b, bool trans_a = false, bool trans_b = false);

// Row-major C[M,N] = alpha·op(A)·op(B) + beta·C on the CPU through the same
// fixed, shape-only partition as matmul (ops/matmul.cpp): bit-identical for any
// thread count. For ops that drive the products themselves; call it from the
// calling thread, never from inside parallel_for.
void cpu_gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
              const float* B, int64_t ldb, float beta, float* C, int64_t ldc);
void cpu_gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, double alpha, const double* A,
              int64_t lda, const double* B, int64_t ldb, double beta, double* C, int64_t ldc);

// ---- mixed precision (spec §0) ------------------------------------------------
// Under BF16, the f32 products of matmul, linear and bmm round both operands to
// bf16 (round to nearest even) and accumulate in fp32: cublasGemmEx with bf16
// inputs on CUDA, the same numbers emulated on the CPU (bf16 values held in f32,
// then sgemm). Outputs, biases, parameters (the master weights) and gradients stay
// f32. The backward products of an op run under BF16 round their operands (dY, X,
// W) the same way; the setting is read when the forward runs and kept for its
// backward, as autocast does. f64 ignores it. Other ops (the SSD scan, the
// Koopman fit, norms, ...) are not matmuls here and always run in fp32.
// The setting is per thread and starts as F32.
enum class MatmulPrecision { F32, BF16 };
void set_matmul_precision(MatmulPrecision precision);
MatmulPrecision matmul_precision();
const char* matmul_precision_name(MatmulPrecision precision);  // "f32" or "bf16"
MatmulPrecision parse_matmul_precision(const std::string& name);  // "f32" | "bf16", else throws

// Sets the precision for a scope and restores the previous one on exit.
class MatmulPrecisionGuard {
 public:
  explicit MatmulPrecisionGuard(MatmulPrecision precision) : previous_(matmul_precision()) {
    set_matmul_precision(precision);
  }
  ~MatmulPrecisionGuard() { set_matmul_precision(previous_); }
  MatmulPrecisionGuard(const MatmulPrecisionGuard&) = delete;
  MatmulPrecisionGuard& operator=(const MatmulPrecisionGuard&) = delete;

 private:
  MatmulPrecision previous_;
};
}  // namespace echo
