// matmul, linear and bmm on OpenBLAS (CPU, f32 and f64) and cuBLAS (CUDA, f32).
//
// For C = op(A)·op(B) with upstream gradient dC:
//   d op(A) = dC · op(B)ᵀ        d op(B) = op(A)ᵀ · dC
// and when A is stored transposed its gradient is the transpose of that
// (d Aₛ = op(B) · dCᵀ, d Bₛ = dCᵀ · op(A)). Every backward gemm runs with
// beta = 1, so it adds into the gradient buffer as the tape contract asks.
// linear: y = x Wᵀ + b gives dx += dy W, dW += dyᵀ x, db += dyᵀ·1 (column sums).
//
// Threads and determinism: OpenBLAS splits a product over its threads by the
// thread count, and its edge kernels add in another order than its main kernel,
// so the same product can differ in the last bits between thread counts
// (OpenBLAS 0.3.21 dgemm, 384×512·512×320: 1709 of the outputs differ with 3
// threads from 1 thread; tests/reliability/test_determinism.cpp). So every CPU
// product here uses a partition of its own that depends on the shape alone: C
// cut into at most 16 blocks of rows (of columns when C is wider than tall), each
// at least 64 long, one single-threaded BLAS call per block, the blocks spread
// over threads by parallel_for. Results are then bit-identical for any thread
// count. Cost (docs/reliability.md): on one thread within ~5% of a single call
// (B is packed once per block); on two threads within the noise of OpenBLAS's
// own threading; a product under 2·64 rows and columns runs on one thread.
// These calls are made from the calling thread, never from inside parallel_for.
#include "ops/matmul.h"

#include <cblas.h>

#include <algorithm>
#include <climits>
#include <cstring>
#include <vector>

#include "autograd/parallel.h"
#include "ops/common.h"
#if ECHO_HAVE_CUDA
#include "cuda/matmul.cuh"
#endif

namespace echo {
namespace {

void check_blas_size(const char* op, int64_t v) {
  if (v > INT_MAX) op_error(op, "dimension " + std::to_string(v) + " exceeds the BLAS index range");
}

// Block length for `extent` rows (or columns): ≥ 64, at most 16 blocks.
int64_t blas_block(int64_t extent) { return std::max<int64_t>(64, (extent + 15) / 16); }

// OpenBLAS on one thread for the scope (the blocks are the parallelism); the
// count set_num_threads() chose is restored for other BLAS users.
class SingleThreadedBlas {
 public:
  SingleThreadedBlas() : saved_(openblas_get_num_threads()) {
    if (saved_ != 1) openblas_set_num_threads(1);
  }
  ~SingleThreadedBlas() {
    if (saved_ != 1) openblas_set_num_threads(saved_);
  }
  SingleThreadedBlas(const SingleThreadedBlas&) = delete;
  SingleThreadedBlas& operator=(const SingleThreadedBlas&) = delete;

 private:
  int saved_;
};

// Row-major C[M,N] = alpha·op(A)·op(B) + beta·C (cblas_?gemm with CblasRowMajor).
// K = 0 is handled here (C = beta·C; only beta 0 or 1 occur) so BLAS never sees it.
template <typename T>
void gemm_cpu(const char* op, bool ta, bool tb, int64_t M, int64_t N, int64_t K, T alpha, const T* A,
              int64_t lda, const T* B, int64_t ldb, T beta, T* C, int64_t ldc) {
  if (M == 0 || N == 0) return;
  if (K == 0) {
    if (beta == T(0))
      for (int64_t r = 0; r < M; ++r) std::memset(C + r * ldc, 0, sizeof(T) * N);
    return;
  }
  for (int64_t v : {M, N, K, lda, ldb, ldc}) check_blas_size(op, v);
  const auto opa = ta ? CblasTrans : CblasNoTrans, opb = tb ? CblasTrans : CblasNoTrans;
  auto call = [&](int64_t m, int64_t n, const T* a, const T* b, T* c) {
    if constexpr (std::is_same_v<T, float>)
      cblas_sgemm(CblasRowMajor, opa, opb, (int)m, (int)n, (int)K, alpha, a, (int)lda, b, (int)ldb, beta, c, (int)ldc);
    else
      cblas_dgemm(CblasRowMajor, opa, opb, (int)m, (int)n, (int)K, alpha, a, (int)lda, b, (int)ldb, beta, c, (int)ldc);
  };
  // Rows i0.. of C come from rows i0.. of op(A) (columns of A when stored
  // transposed); columns j0.. of C from columns j0.. of op(B).
  const bool by_rows = M >= N;
  const int64_t extent = by_rows ? M : N;
  const int64_t step = blas_block(extent);
  SingleThreadedBlas single;
  parallel_for((extent + step - 1) / step, [&](int64_t block) {
    const int64_t i0 = block * step, len = std::min(step, extent - i0);
    if (by_rows) call(len, N, A + (ta ? i0 : i0 * lda), B, C + i0 * ldc);
    else call(M, len, A, B + (tb ? i0 * ldb : i0), C + i0);
  });
}

// dbias[o] += Σ_r dy[r, o] as dyᵀ·ones (gemv, beta = 1).
template <typename T> void column_sums_cpu(const char* op, const T* dy, T* dbias, int64_t rows, int64_t cols) {
  if (rows == 0 || cols == 0) return;
  check_blas_size(op, rows);
  check_blas_size(op, cols);
  std::vector<T> ones(static_cast<size_t>(rows), T(1));
  const int64_t step = blas_block(cols);
  SingleThreadedBlas single;  // column blocks fixed by the shape, as in gemm_cpu
  parallel_for((cols + step - 1) / step, [&](int64_t block) {
    const int64_t j0 = block * step, len = std::min(step, cols - j0);
    if constexpr (std::is_same_v<T, float>)
      cblas_sgemv(CblasRowMajor, CblasTrans, (int)rows, (int)len, 1.f, dy + j0, (int)cols, ones.data(), 1, 1.f,
                  dbias + j0, 1);
    else
      cblas_dgemv(CblasRowMajor, CblasTrans, (int)rows, (int)len, 1.0, dy + j0, (int)cols, ones.data(), 1, 1.0,
                  dbias + j0, 1);
  });
}

// One gemm on either device; T is float on CUDA.
template <typename T>
void gemm_any(const char* op, bool cuda, bool ta, bool tb, int64_t M, int64_t N, int64_t K, const T* A,
              int64_t lda, const T* B, int64_t ldb, T beta, T* C, int64_t ldc) {
  lda = std::max<int64_t>(lda, 1);
  ldb = std::max<int64_t>(ldb, 1);
  ldc = std::max<int64_t>(ldc, 1);
  if (cuda) {
#if ECHO_HAVE_CUDA
    if constexpr (std::is_same_v<T, float>) gpu::gemm(ta, tb, M, N, K, 1.f, A, lda, B, ldb, beta, C, ldc);
#else
    no_cuda_build(op);
#endif
  } else {
    gemm_cpu<T>(op, ta, tb, M, N, K, T(1), A, lda, B, ldb, beta, C, ldc);
  }
}

// Calls f(T{}) for the floating dtype of a CPU tensor, f(float{}) on CUDA.
template <typename F> void dispatch_device(const Tensor& t, const char* op, F&& f) {
  if (on_cuda(t)) f(float{});
  else dispatch_floating(t.dtype(), op, f);
}

}  // namespace

Tensor matmul(const Tensor& a, const Tensor& b) {
  const char* op = "matmul";
  op_check(a.defined() && b.defined(), op, "both inputs must be defined tensors");
  check_floating_same(op, {&a, &b});
  op_check(a.ndim() >= 1, op, "a must have rank >= 1, got " + a.describe());
  check_rank(op, "b", b, 2);
  if (a.size(-1) != b.size(0))
    op_error(op, "a's last dim must equal b's first dim, got a " + a.describe() + " and b " + b.describe());
  const int64_t K = b.size(0), N = b.size(1), M = K ? a.numel() / K : shape_numel(Shape(a.shape().begin(), a.shape().end() - 1));
  Shape out_shape(a.shape().begin(), a.shape().end() - 1);
  out_shape.push_back(N);
  Tensor y = Tensor::empty(out_shape, a.dtype(), a.device());
  const bool cuda = on_cuda(a);
  dispatch_device(a, op, [&](auto t) {
    using T = decltype(t);
    gemm_any<T>(op, cuda, false, false, M, N, K, a.data<T>(), K, b.data<T>(), N, T(0), y.data<T>(), N);
  });
  if (any_requires_grad({&a, &b})) {
    record(op, {a, b}, {y}, {a, b}, [M, N, K, cuda](Node& node, const std::vector<Tensor>& gy, std::vector<Tensor>& gx) {
      const Tensor &A = node.saved(0), &B = node.saved(1), &dY = gy[0];
      dispatch_device(dY, "matmul", [&](auto t) {
        using T = decltype(t);
        // dA[M,K] += dY[M,N]·Bᵀ ;  dB[K,N] += Aᵀ·dY
        if (gx[0].defined())
          gemm_any<T>("matmul", cuda, false, true, M, K, N, dY.data<T>(), N, B.data<T>(), N, T(1), gx[0].data<T>(), K);
        if (gx[1].defined())
          gemm_any<T>("matmul", cuda, true, false, K, N, M, A.data<T>(), K, dY.data<T>(), N, T(1), gx[1].data<T>(), N);
      });
    });
  }
  return y;
}

Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias) {
  const char* op = "linear";
  op_check(x.defined() && weight.defined(), op, "x and weight must be defined tensors");
  check_floating_same(op, {&x, &weight, &bias});
  op_check(x.ndim() >= 1, op, "x must have rank >= 1, got " + x.describe());
  check_rank(op, "weight", weight, 2);
  const int64_t in = weight.size(1), out = weight.size(0);
  if (x.size(-1) != in)
    op_error(op, "x's last dim must equal weight's in-features (weight is [out, in]), got x " + x.describe() +
                     " and weight " + weight.describe());
  if (bias.defined()) check_shape(op, "bias", bias, {out});
  const int64_t R = in ? x.numel() / in : shape_numel(Shape(x.shape().begin(), x.shape().end() - 1));
  Shape out_shape(x.shape().begin(), x.shape().end() - 1);
  out_shape.push_back(out);
  Tensor y = Tensor::empty(out_shape, x.dtype(), x.device());
  const bool cuda = on_cuda(x);
  dispatch_device(x, op, [&](auto t) {
    using T = decltype(t);
    // y = bias (broadcast over rows), then y = x·Wᵀ + 1·y.
    T beta = T(0);
    if (bias.defined()) {
      beta = T(1);
      if (cuda) {
#if ECHO_HAVE_CUDA
        gpu::broadcast_rows(bias.data<float>(), y.data<float>(), R, out);
#endif
      } else {
        const T* bp = bias.data<T>();
        T* yp = y.data<T>();
        parallel_for(R, [&](int64_t r) { std::memcpy(yp + r * out, bp, sizeof(T) * out); });
      }
    }
    gemm_any<T>(op, cuda, false, true, R, out, in, x.data<T>(), in, weight.data<T>(), in, beta, y.data<T>(), out);
  });
  if (any_requires_grad({&x, &weight, &bias})) {
    record(op, {x, weight, bias}, {y}, {x, weight},
           [R, in, out, cuda](Node& node, const std::vector<Tensor>& gy, std::vector<Tensor>& gx) {
      const Tensor &X = node.saved(0), &W = node.saved(1), &dY = gy[0];
      dispatch_device(dY, "linear", [&](auto t) {
        using T = decltype(t);
        // dX[R,in] += dY[R,out]·W[out,in] ;  dW[out,in] += dYᵀ·X ;  db[out] += dYᵀ·1
        if (gx[0].defined())
          gemm_any<T>("linear", cuda, false, false, R, in, out, dY.data<T>(), out, W.data<T>(), in, T(1), gx[0].data<T>(), in);
        if (gx[1].defined())
          gemm_any<T>("linear", cuda, true, false, out, in, R, dY.data<T>(), out, X.data<T>(), in, T(1), gx[1].data<T>(), in);
        if (gx[2].defined()) {
          if (cuda) {
#if ECHO_HAVE_CUDA
            if (R > 0 && out > 0) {
              Tensor ones = Tensor::full({R}, 1.0, DType::F32, Device::CUDA);
              gpu::column_sums_accumulate(dY.data<float>(), ones.data<float>(), gx[2].data<float>(), R, out);
            }
#endif
          } else {
            column_sums_cpu<T>("linear", dY.data<T>(), gx[2].data<T>(), R, out);
          }
        }
      });
    });
  }
  return y;
}

Tensor bmm(const Tensor& a, const Tensor& b, bool trans_a, bool trans_b) {
  const char* op = "bmm";
  op_check(a.defined() && b.defined(), op, "both inputs must be defined tensors");
  check_floating_same(op, {&a, &b});
  check_rank(op, "a", a, 3);
  check_rank(op, "b", b, 3);
  const int64_t batch = a.size(0);
  const int64_t M = trans_a ? a.size(2) : a.size(1), K = trans_a ? a.size(1) : a.size(2);
  const int64_t Kb = trans_b ? b.size(2) : b.size(1), N = trans_b ? b.size(1) : b.size(2);
  if (b.size(0) != batch || Kb != K)
    op_error(op, std::string("op(a) [B,m,k] and op(b) [B,k,n] do not match (trans_a=") + (trans_a ? "1" : "0") +
                     ", trans_b=" + (trans_b ? "1" : "0") + "), got a " + a.describe() + " and b " + b.describe());
  const int64_t lda = trans_a ? M : K, ldb = trans_b ? K : N;
  Tensor y = Tensor::empty({batch, M, N}, a.dtype(), a.device());
  const bool cuda = on_cuda(a);

  // C_i = alpha·op(A_i)·op(B_i) + beta·C_i for every batch entry i.
  auto batched = [cuda](auto t, bool ta, bool tb, int64_t M, int64_t N, int64_t K, const auto* A, int64_t lda,
                        int64_t sa, const auto* B, int64_t ldb, int64_t sb, auto beta, auto* C, int64_t ldc,
                        int64_t sc, int64_t batch) {
    using T = decltype(t);
    lda = std::max<int64_t>(lda, 1);
    ldb = std::max<int64_t>(ldb, 1);
    ldc = std::max<int64_t>(ldc, 1);
    if (cuda) {
#if ECHO_HAVE_CUDA
      if constexpr (std::is_same_v<T, float>)
        gpu::gemm_strided_batched(ta, tb, M, N, K, 1.f, A, lda, sa, B, ldb, sb, beta, C, ldc, sc, batch);
#endif
    } else {
      for (int64_t i = 0; i < batch; ++i)
        gemm_cpu<T>("bmm", ta, tb, M, N, K, T(1), A + i * sa, lda, B + i * sb, ldb, beta, C + i * sc, ldc);
    }
  };

  dispatch_device(a, op, [&](auto t) {
    using T = decltype(t);
    batched(t, trans_a, trans_b, M, N, K, a.data<T>(), lda, M * K, b.data<T>(), ldb, K * N, T(0), y.data<T>(), N,
            M * N, batch);
  });
  if (any_requires_grad({&a, &b})) {
    record(op, {a, b}, {y}, {a, b},
           [=](Node& node, const std::vector<Tensor>& gy, std::vector<Tensor>& gx) {
      const Tensor &A = node.saved(0), &B = node.saved(1), &dC = gy[0];
      dispatch_device(dC, "bmm", [&](auto t) {
        using T = decltype(t);
        const T *pa = A.data<T>(), *pb = B.data<T>(), *pc = dC.data<T>();
        if (gx[0].defined()) {
          T* da = gx[0].data<T>();
          if (!trans_a)  // dA[m,k] += dC[m,n]·op(B)ᵀ
            batched(t, false, !trans_b, M, K, N, pc, N, M * N, pb, ldb, K * N, T(1), da, K, M * K, batch);
          else           // dAₛ[k,m] += op(B)[k,n]·dCᵀ
            batched(t, trans_b, true, K, M, N, pb, ldb, K * N, pc, N, M * N, T(1), da, M, M * K, batch);
        }
        if (gx[1].defined()) {
          T* db = gx[1].data<T>();
          if (!trans_b)  // dB[k,n] += op(A)ᵀ[k,m]·dC
            batched(t, !trans_a, false, K, N, M, pa, lda, M * K, pc, N, M * N, T(1), db, N, K * N, batch);
          else           // dBₛ[n,k] += dCᵀ[n,m]·op(A)
            batched(t, true, trans_a, N, K, M, pc, N, M * N, pa, lda, M * K, T(1), db, K, K * N, batch);
        }
      });
    });
  }
  return y;
}

}  // namespace echo
