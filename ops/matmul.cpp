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
//
// Mixed precision (ops/matmul.h): every product reads its operands through
// gemm_operand(), which under BF16 swaps an f32 tensor for its bf16 rounding
// (a bf16 buffer for cublasGemmEx on CUDA, bf16 values held in f32 on the CPU).
// bf16 × bf16 products are exact in fp32 (8-bit significands), so the two
// devices differ only by summation order, as in f32.
#include "autograd/random.h"
#include "ops/runner.h"
#include "ops/matmul.h"

#include <cblas.h>

#include <algorithm>
#include <climits>
#include <cmath>
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
  if (M == 1) {
    // One row (a decode step): C = alpha·a·op(B) + beta·C is a matrix-vector
    // product. sgemm would first pack (copy) all of B — the whole weight matrix,
    // every token — so gemv reads B once instead: y = op(B)ᵀ·a over blocks of C's
    // columns. The partition is fixed by the shape, as below.
    const int64_t step = blas_block(N);
    const int64_t a_stride = ta ? lda : 1;  // a's K elements: a row of A, or a column of Aᵀ
    SingleThreadedBlas single;
    parallel_for((N + step - 1) / step, [&](int64_t block) {
      const int64_t j0 = block * step, len = std::min(step, N - j0);
      // tb: B is stored [N,K], rows j0.. give y = B_rows·a (NoTrans);
      // else B is stored [K,N], columns j0.. give y = B_colsᵀ·a (Trans).
      const T* b = B + (tb ? j0 * ldb : j0);
      const auto trans = tb ? CblasNoTrans : CblasTrans;
      const int rows = tb ? (int)len : (int)K, cols = tb ? (int)K : (int)len;
      // Some OpenBLAS versions scale y by beta = 0 by multiplying, which keeps
      // a NaN-poisoned output NaN: clear it instead.
      if (beta == T(0)) std::memset(C + j0, 0, sizeof(T) * len);
      if constexpr (std::is_same_v<T, float>)
        cblas_sgemv(CblasRowMajor, trans, rows, cols, alpha, b, (int)ldb, A, (int)a_stride, beta, C + j0, 1);
      else
        cblas_dgemv(CblasRowMajor, trans, rows, cols, alpha, b, (int)ldb, A, (int)a_stride, beta, C + j0, 1);
    });
    return;
  }
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

thread_local MatmulPrecision g_precision = MatmulPrecision::F32;

// x rounded to the nearest bf16 (ties to even), returned as the f32 holding that
// value. bf16 is the top 16 bits of an f32; adding 0x7fff to the bits (0x8000
// when the kept part is odd) carries into the kept part exactly when the dropped
// 16 bits are above half, or equal to half with an odd kept part. NaN stays NaN;
// overflow goes to ±inf, as with __float2bfloat16_rn.
float round_to_bf16(float x) {
  if (std::isnan(x)) return x;
  uint32_t u;
  std::memcpy(&u, &x, 4);
  u += 0x7fffu + ((u >> 16) & 1u);
  u &= 0xffff0000u;
  std::memcpy(&x, &u, 4);
  return x;
}

// Does an op on these inputs run its products with bf16 operands?
bool bf16_products(const Tensor& t) { return g_precision == MatmulPrecision::BF16 && t.dtype() == DType::F32; }

// What a gemm reads for t: t itself, or (bf16) its rounding: on CUDA a bf16
// buffer, on the CPU an f32 copy holding the rounded values.
Tensor gemm_operand(const Tensor& t, bool bf16) {
  if (!bf16) return t;
  if (on_cuda(t)) return t.detach().to(DType::BF16);
  Tensor r = Tensor::empty(t.shape(), DType::F32, Device::CPU);
  const float* src = t.data<float>();
  float* dst = r.data<float>();
  constexpr int64_t kBlock = 4096;
  const int64_t n = t.numel();
  parallel_for((n + kBlock - 1) / kBlock, [&](int64_t blk) {
    for (int64_t i = blk * kBlock; i < std::min(n, (blk + 1) * kBlock); ++i) dst[i] = round_to_bf16(src[i]);
  });
  return r;
}

// C = op(A)·op(B) + beta·C for `batch` products at element strides sa, sb, sc (batch 1:
// a plain gemm) on either device. A and B come from gemm_operand: f32/f64 tensors, or
// bf16 buffers (CUDA under BF16). T is float on CUDA.
template <typename T>
void gemm_any(const char* op, bool cuda, bool ta, bool tb, int64_t M, int64_t N, int64_t K, const Tensor& A,
              int64_t lda, int64_t sa, const Tensor& B, int64_t ldb, int64_t sb, T beta, T* C, int64_t ldc,
              int64_t sc, int64_t batch = 1) {
  lda = std::max<int64_t>(lda, 1);
  ldb = std::max<int64_t>(ldb, 1);
  ldc = std::max<int64_t>(ldc, 1);
  if (cuda) {
#if ECHO_HAVE_CUDA
    if constexpr (std::is_same_v<T, float>) {
      if (A.dtype() == DType::BF16 && batch == 1)
        gpu::gemm_bf16(ta, tb, M, N, K, 1.f, A.data<uint16_t>(), lda, B.data<uint16_t>(), ldb, beta, C, ldc);
      else if (A.dtype() == DType::BF16)
        gpu::gemm_strided_batched_bf16(ta, tb, M, N, K, 1.f, A.data<uint16_t>(), lda, sa, B.data<uint16_t>(), ldb, sb,
                                       beta, C, ldc, sc, batch);
      else if (batch == 1)
        gpu::gemm(ta, tb, M, N, K, 1.f, A.data<float>(), lda, B.data<float>(), ldb, beta, C, ldc);
      else
        gpu::gemm_strided_batched(ta, tb, M, N, K, 1.f, A.data<float>(), lda, sa, B.data<float>(), ldb, sb, beta, C,
                                  ldc, sc, batch);
    }
#else
    no_cuda_build(op);
#endif
  } else {
    const T *pa = A.data<T>(), *pb = B.data<T>();
    for (int64_t i = 0; i < batch; ++i)
      gemm_cpu<T>(op, ta, tb, M, N, K, T(1), pa + i * sa, lda, pb + i * sb, ldb, beta, C + i * sc, ldc);
  }
}

// Calls f(T{}) for the floating dtype of a CPU tensor, f(float{}) on CUDA.
template <typename F> void dispatch_device(const Tensor& t, const char* op, F&& f) {
  if (on_cuda(t)) f(float{});
  else dispatch_floating(t.dtype(), op, f);
}

}  // namespace

void set_matmul_precision(MatmulPrecision precision) { g_precision = precision; }
MatmulPrecision matmul_precision() { return g_precision; }
const char* matmul_precision_name(MatmulPrecision precision) {
  return precision == MatmulPrecision::BF16 ? "bf16" : "f32";
}
MatmulPrecision parse_matmul_precision(const std::string& name) {
  if (name == "f32") return MatmulPrecision::F32;
  if (name == "bf16") return MatmulPrecision::BF16;
  throw std::runtime_error("matmul precision must be f32 or bf16, got '" + name + "'");
}

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
  const bool cuda = on_cuda(a), bf16 = bf16_products(a);
  dispatch_device(a, op, [&](auto t) {
    using T = decltype(t);
    gemm_any<T>(op, cuda, false, false, M, N, K, gemm_operand(a, bf16), K, 0, gemm_operand(b, bf16), N, 0, T(0),
                y.data<T>(), N, 0);
  });
  if (any_requires_grad({&a, &b})) {
    record(op, {a, b}, {y}, {a, b}, [M, N, K, cuda, bf16](Node& node, const std::vector<Tensor>& gy, std::vector<Tensor>& gx) {
      const Tensor dY = gemm_operand(gy[0], bf16);
      dispatch_device(gy[0], "matmul", [&](auto t) {
        using T = decltype(t);
        // dA[M,K] += dY[M,N]·Bᵀ ;  dB[K,N] += Aᵀ·dY
        if (gx[0].defined())
          gemm_any<T>("matmul", cuda, false, true, M, K, N, dY, N, 0, gemm_operand(node.saved(1), bf16), N, 0,
                      grad_beta<T>(node, 0), gx[0].data<T>(), K, 0);
        if (gx[1].defined())
          gemm_any<T>("matmul", cuda, true, false, K, N, M, gemm_operand(node.saved(0), bf16), K, 0, dY, N, 0,
                      grad_beta<T>(node, 1), gx[1].data<T>(), N, 0);
      });
    }).writes_fresh_grads = true;
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
  const bool cuda = on_cuda(x), bf16 = bf16_products(x);
  dispatch_device(x, op, [&](auto t) {
    using T = decltype(t);
    // y = bias (broadcast over rows), then y = x·Wᵀ + 1·y. The bias is added in
    // full precision (fp32 under BF16: it is not a matmul operand).
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
    gemm_any<T>(op, cuda, false, true, R, out, in, gemm_operand(x, bf16), in, 0, gemm_operand(weight, bf16), in, 0,
                beta, y.data<T>(), out, 0);
  });
  if (any_requires_grad({&x, &weight, &bias})) {
    record(op, {x, weight, bias}, {y}, {x, weight},
           [R, in, out, cuda, bf16](Node& node, const std::vector<Tensor>& gy, std::vector<Tensor>& gx) {
      const Tensor& dY = gy[0];
      const Tensor dY_op = gemm_operand(dY, bf16);
      dispatch_device(dY, "linear", [&](auto t) {
        using T = decltype(t);
        // dX[R,in] += dY[R,out]·W[out,in] ;  dW[out,in] += dYᵀ·X ;  db[out] += dYᵀ·1
        // (db sums the unrounded dY: under BF16 only the products round.)
        if (gx[0].defined())
          gemm_any<T>("linear", cuda, false, false, R, in, out, dY_op, out, 0, gemm_operand(node.saved(1), bf16), in, 0,
                      grad_beta<T>(node, 0), gx[0].data<T>(), in, 0);
        if (gx[1].defined())
          gemm_any<T>("linear", cuda, true, false, out, in, R, dY_op, out, 0, gemm_operand(node.saved(0), bf16), in, 0,
                      grad_beta<T>(node, 1), gx[1].data<T>(), in, 0);
        zero_if_fresh(node, gx, 2);  // db: a column sum, added
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
    }).writes_fresh_grads = true;
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
  const bool cuda = on_cuda(a), bf16 = bf16_products(a);

  dispatch_device(a, op, [&](auto t) {
    using T = decltype(t);
    gemm_any<T>(op, cuda, trans_a, trans_b, M, N, K, gemm_operand(a, bf16), lda, M * K, gemm_operand(b, bf16), ldb,
                K * N, T(0), y.data<T>(), N, M * N, batch);
  });
  if (any_requires_grad({&a, &b})) {
    record(op, {a, b}, {y}, {a, b},
           [=](Node& node, const std::vector<Tensor>& gy, std::vector<Tensor>& gx) {
      const Tensor A = gemm_operand(node.saved(0), bf16), B = gemm_operand(node.saved(1), bf16);
      const Tensor dC = gemm_operand(gy[0], bf16);
      dispatch_device(gy[0], "bmm", [&](auto t) {
        using T = decltype(t);
        if (gx[0].defined()) {
          T* da = gx[0].data<T>();
          const T beta = grad_beta<T>(node, 0);
          if (!trans_a)  // dA[m,k] += dC[m,n]·op(B)ᵀ
            gemm_any<T>("bmm", cuda, false, !trans_b, M, K, N, dC, N, M * N, B, ldb, K * N, beta, da, K, M * K, batch);
          else           // dAₛ[k,m] += op(B)[k,n]·dCᵀ
            gemm_any<T>("bmm", cuda, trans_b, true, K, M, N, B, ldb, K * N, dC, N, M * N, beta, da, M, M * K, batch);
        }
        if (gx[1].defined()) {
          T* db = gx[1].data<T>();
          const T beta = grad_beta<T>(node, 1);
          if (!trans_b)  // dB[k,n] += op(A)ᵀ[k,m]·dC
            gemm_any<T>("bmm", cuda, !trans_a, false, K, N, M, A, lda, M * K, dC, N, M * N, beta, db, N, K * N, batch);
          else           // dBₛ[n,k] += dCᵀ[n,m]·op(A)
            gemm_any<T>("bmm", cuda, true, trans_a, N, K, M, dC, N, M * N, A, lda, M * K, beta, db, K, K * N, batch);
        }
      });
    }).writes_fresh_grads = true;
  }
  return y;
}

// Runner entries: matmul (a [M,K], b [K,N]), linear (x [.., in], weight [out, in],
// bias [out]) and bmm (a, b [batch, ..]; trans_a, trans_b).
std::vector<RunnerOp> runner_ops_matmul() {
  auto matmul_op = make_runner_op(
      "matmul", {"a", "b"}, {},
      [](const std::vector<Tensor>& in, const OpAttrs&) { return matmul(in[0], in[1]); },
      [](Rng& rng, OpAttrs&, int v) {
        const int64_t M[] = {3, 67, 1}, K[] = {4, 33, 130}, N[] = {5, 129, 7};
        if (v > 2) return NamedTensors{};
        return NamedTensors{{"a", randn({M[v], K[v]}, rng, DType::F64)}, {"b", randn({K[v], N[v]}, rng, DType::F64)}};
      });
  auto linear_op = make_runner_op(
      "linear", {"x", "weight", "bias"}, {},
      [](const std::vector<Tensor>& in, const OpAttrs&) { return linear(in[0], in[1], in[2]); },
      [](Rng& rng, OpAttrs&, int v) {
        const int64_t rows[] = {2, 77, 1}, in_f[] = {3, 48, 200}, out_f[] = {4, 65, 9};
        if (v > 2) return NamedTensors{};
        return NamedTensors{{"x", randn({1, rows[v], in_f[v]}, rng, DType::F64)},
                            {"weight", randn({out_f[v], in_f[v]}, rng, DType::F64)},
                            {"bias", randn({out_f[v]}, rng, DType::F64)}};
      });
  auto bmm_op = make_runner_op(
      "bmm", {"a", "b"}, {{"trans_a", 0}, {"trans_b", 0}},
      [](const std::vector<Tensor>& in, const OpAttrs& a) {
        return bmm(in[0], in[1], a.at("trans_a") != 0, a.at("trans_b") != 0);
      },
      [](Rng& rng, OpAttrs& attrs, int v) {
        if (v > 2) return NamedTensors{};
        const int64_t B = v == 1 ? 5 : 2, M = v == 1 ? 33 : 3, K = v == 1 ? 17 : 4, N = v == 2 ? 70 : 5;
        attrs["trans_a"] = v == 1;
        attrs["trans_b"] = v >= 1;
        return NamedTensors{{"a", randn(v == 1 ? Shape{B, K, M} : Shape{B, M, K}, rng, DType::F64)},
                            {"b", randn(v >= 1 ? Shape{B, N, K} : Shape{B, K, N}, rng, DType::F64)}};
      });
  return {matmul_op, linear_op, bmm_op};
}

void cpu_gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
              const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  gemm_cpu("cpu_gemm", ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}
void cpu_gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, double alpha, const double* A, int64_t lda,
              const double* B, int64_t ldb, double beta, double* C, int64_t ldc) {
  gemm_cpu("cpu_gemm", ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

}  // namespace echo
