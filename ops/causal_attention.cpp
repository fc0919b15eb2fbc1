// Causal softmax attention with rotary position embedding (baseline layer, spec §1.6).
// Reading order: docs/ops_norms_conv_attention.md → ops/reference/causal_attention.cpp
// (explicit T×T matrices: the tests' oracle) → this file (the tuned CPU kernel) →
// cuda/causal_attention.cu (the CUDA twin).
//
// RoPE, rotate-half convention: for j < dh/2, with angle a = t · base^(−2j/dh),
//   x'_j = x_j cos a − x_{j+dh/2} sin a,   x'_{j+dh/2} = x_{j+dh/2} cos a + x_j sin a.
// Each pair is a plane rotation R(a), so its transpose R(−a) carries gradients back.
// Angles are computed in double (the same on the GPU), then cast.
//
// Attention per (b, h), on the rotated q', k' (scale = 1/√dh):
//   s_ij = scale · q'_i·k'_j (j ≤ i),  P_ij = exp(s_ij − L_i),  L_i = log Σ_{j≤i} exp(s_ij),
//   o_i = Σ_j P_ij v_j.
// The forward keeps L (one value per row) instead of P: no T×T matrix is ever
// stored; the backward recomputes P_ij from q', k', L. With D_i = dO_i·o_i and
// dS_ij = P_ij (dO_i·v_j − D_i):
//   dq'_i = scale Σ_{j≤i} dS_ij k'_j,  dk'_j = scale Σ_{i≥j} dS_ij q'_i,  dv_j = Σ_{i≥j} P_ij dO_i,
// then dq = R(−a) dq', dk = R(−a) dk'.
//
// Both backends compute these formulas; they differ in how they split the work.
// The CUDA kernels (cuda/causal_attention.cu) use the row form: one warp per
// query row for the forward and a query pass (D, dq'), then one warp per key row
// for a key pass (dk', dv), each P_ij recomputed in both passes, so every output
// is written by one thread without atomics. The CPU reference below is blocked
// per (b, h) instead (see "CPU kernel"): one task per (b, h) runs the forward,
// or the whole backward in one pass over blocks of query rows, as small matrix
// products with one exp per pair and pass. It sums in a different order than
// the GPU, so the two agree to rounding, not bitwise.
#include "ops/causal_attention.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

#include "ops/common.h"
#include "ops/exp_poly.h"
#include "ops/runner.h"
#if ECHO_HAVE_CUDA
#include "cuda/causal_attention.cuh"
#endif

namespace echo {
namespace {

constexpr const char* kOp = "causal_attention";
constexpr const char* kRopeOp = "rope";

// inverse: apply R(−a) (the transpose); accumulate: y += instead of y =.
template <typename T>
void rope_cpu(const T* x, T* y, int64_t B, int64_t T_len, int64_t H, int64_t dh, double base, int64_t pos_offset,
              bool inverse, bool accumulate) {
  const int64_t half = dh / 2;
  parallel_for(B * T_len * H, [&](int64_t row) {
    const int64_t t = (row / H) % T_len + pos_offset;
    const T* xr = x + row * dh;
    T* yr = y + row * dh;
    for (int64_t j = 0; j < half; ++j) {
      const double angle = static_cast<double>(t) * std::pow(base, -2.0 * static_cast<double>(j) / static_cast<double>(dh));
      const T c = static_cast<T>(std::cos(angle));
      const T s = static_cast<T>(inverse ? -std::sin(angle) : std::sin(angle));
      const T a = xr[j], b = xr[j + half];
      const T ya = a * c - b * s, yb = b * c + a * s;
      if (accumulate) {
        yr[j] += ya;
        yr[j + half] += yb;
      } else {
        yr[j] = ya;
        yr[j + half] = yb;
      }
    }
  });
}

// ---- CPU kernel ------------------------------------------------------------------
// Element (b,t,h,·) of q/k/v/o sits at ((b·T + t)·H + h)·dh, row n = (b·H + h)·T + i
// of lse/D. One task per (b, h): it copies its q', k', v (and dO, o) into
// contiguous scratch, so every product below reads unit-stride memory, and owns
// every output element of that (b, h), so the result does not depend on the
// thread count. With q̂ = scale·q' (scale folded into the copy), s_ij = q̂_i·k'_j,
// and per block of kBlock query rows i ∈ [i0, i1):
//   forward : S = Q̂ K'ᵀ (j ≤ i), m_i = max_j s_ij, P_ij = exp(s_ij − m_i), l_i = Σ_j P_ij,
//             o_i = (Σ_j P_ij v_j) / l_i, L_i = m_i + log l_i;
//   backward: S again, P_ij = exp(s_ij − L_i) (one exp per pair), dP = dO Vᵀ,
//             dS = P ∘ (dP − D), dq'_i = scale Σ_j dS_ij k'_j,
//             dk'_j += Σ_i dS_ij q̂_i (= scale Σ_i dS_ij q'_i), dv_j += Σ_i P_ij dO_i,
// with dk', dv summed over the blocks in the task's scratch and written once at
// the end. Only a kBlock × T block of S/P (and dS) exists at a time.
//
// Every product has the form C[r][c] = Σ_k A[r][k]·B[k][c] with B's row k
// contiguous in c, computed by micro_tile on R × kLanes<T> pieces of C held in
// registers: the c loop has a fixed length, so -O2 vectorises it (kLanes<T> is
// 64 bytes, four SSE registers), and the R rows share each load of B. The
// operands are laid out for that: K'ᵀ and Vᵀ as dh × Tp (key j contiguous) for
// S and dP, k' and v as T × dhp (head dim contiguous, zero-padded to a multiple
// of kLanes) for P V and dS K', and q̂ᵀ, dOᵀ of the block as dh × kBlock for dk'
// and dv (Tp, dhp: T and dh rounded up to a multiple of kLanes). The fixed-length
// loops of micro_tile are unrolled by pragma: at -O2 GCC would otherwise keep
// acc in memory, a load and a store per multiply-add. Tile columns past the
// causal limit are computed and then zeroed (P_ij = dS_ij = 0 for j > i), which
// makes the partial tiles on the diagonal exact and lets the products with P and
// dS run over whole tiles; k ranges stop where P or dS is known to be zero. At
// T ≈ 1000, dh = 16..32 this runs 15-18 GFLOP/s on one core, about 6× the scalar
// row-at-a-time loops it replaced (echo-lm bench causal_attention). Each C
// element sums its k terms in increasing k, whatever the thread count.
template <typename T> constexpr int64_t kLanes = 64 / static_cast<int64_t>(sizeof(T));  // 16 f32, 8 f64
constexpr int64_t kBlock = 64;  // query rows per block

int64_t round_up(int64_t n, int64_t m) { return (n + m - 1) / m * m; }

// C[r·ldc + c] (+)= Σ_{k0 ≤ k < k1} A[r·lda + k] · B[k·ldb + c] for r < R, c < kLanes<T>.
template <int R, typename T>
inline void micro_tile(const T* A, int64_t lda, const T* B, int64_t ldb, int64_t k0, int64_t k1, T* C, int64_t ldc,
                       bool accumulate) {
  constexpr int W = static_cast<int>(kLanes<T>);
  T acc[R][W] = {};  // R·W/4 SSE registers (f32) once the loops below are unrolled
  for (int64_t k = k0; k < k1; ++k) {
    const T* bk = B + k * ldb;
#pragma GCC unroll 2
    for (int r = 0; r < R; ++r) {
      const T a = A[r * lda + k];
#pragma GCC unroll 16
      for (int c = 0; c < W; ++c) acc[r][c] += a * bk[c];
    }
  }
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < W; ++c) C[r * ldc + c] = accumulate ? C[r * ldc + c] + acc[r][c] : acc[r][c];
}

// f(R, r) for the row groups r, r+1 (R = 2) of [0, m), and a last single row (R = 1).
template <typename F> void row_pairs(int64_t m, F&& f) {
  int64_t r = 0;
  for (; r + 2 <= m; r += 2) f(std::integral_constant<int, 2>(), r);
  if (r < m) f(std::integral_constant<int, 1>(), r);
}

// Rows i0 + r of C (ldc) = A (lda) · Bᵀ-panel B (ldb), for the keys j of the
// causal range of each row group (tiles up to its last row), over k < kdim.
// Used for S = Q̂ K'ᵀ and dP = dO Vᵀ.
template <typename T>
void causal_rows_times_panel(int64_t rows, int64_t i0, const T* A, int64_t lda, const T* B, int64_t ldb,
                             int64_t kdim, T* C, int64_t ldc) {
  row_pairs(rows, [&](auto R, int64_t r) {
    const int64_t cols = round_up(i0 + r + R, kLanes<T>);  // keys j ≤ i0 + r + R − 1
    for (int64_t c0 = 0; c0 < cols; c0 += kLanes<T>)
      micro_tile<R>(A + (i0 + r) * lda, lda, B + c0, ldb, 0, kdim, C + r * ldc + c0, ldc, false);
  });
}

// C[r][·] = Σ_{j ≤ i0+r} A[r][j] · B[j][·] over the dhp padded columns of B: O = P V, dq' = dS K'.
template <typename T>
void causal_block_times_rows(int64_t rows, int64_t i0, const T* A, int64_t lda, const T* B, int64_t dhp, T* C) {
  row_pairs(rows, [&](auto R, int64_t r) {
    for (int64_t d0 = 0; d0 < dhp; d0 += kLanes<T>)
      micro_tile<R>(A + r * lda, lda, B + d0, dhp, 0, i0 + r + R, C + r * dhp + d0, dhp, false);
  });
}

// Cᵀ[d][j] += Σ_{r: i0+r ≥ j} Xᵀ[d][r] · M[r][j] for j < cols: dk'ᵀ += Q̂ᵀ dS, dvᵀ += dOᵀ P.
// Rows r with i0 + r < c0 hold zeros in key tile c0 and are skipped.
template <typename T>
void accumulate_keys(int64_t rows, int64_t i0, int64_t dh, const T* Xt, const T* M, int64_t ldm, int64_t cols, T* Ct,
                     int64_t ldc) {
  row_pairs(dh, [&](auto R, int64_t d) {
    for (int64_t c0 = 0; c0 < cols; c0 += kLanes<T>)
      micro_tile<R>(Xt + d * kBlock, kBlock, M + c0, ldm, std::max<int64_t>(0, c0 - i0), rows, Ct + d * ldc + c0, ldc,
                    true);
  });
}

// Per-task copies of one (b, h): rows t of x → dst[t·ld + d] (·factor), or
// transposed → dst[d·ld + t]. Padding stays zero.
struct HeadView {
  int64_t B, T, H, dh;
  int64_t at(int64_t bh, int64_t t) const { return ((bh / H * T + t) * H + bh % H) * dh; }
  template <typename T_>
  void gather_rows(const T_* x, int64_t bh, T_* dst, int64_t ld, T_ factor = T_(1)) const {
    for (int64_t t = 0; t < T; ++t)
      for (int64_t d = 0; d < dh; ++d) dst[t * ld + d] = factor * x[at(bh, t) + d];
  }
  template <typename T_> void gather_cols(const T_* x, int64_t bh, T_* dst, int64_t ld) const {
    for (int64_t t = 0; t < T; ++t)
      for (int64_t d = 0; d < dh; ++d) dst[d * ld + t] = x[at(bh, t) + d];
  }
};

// Σ_{j<n} x_j for n a multiple of kLanes<T>, as kLanes partial sums (lane c adds
// x_c, x_{c+kLanes}, …) then added in lane order: a fixed order that the compiler
// can vectorise, which a single running sum (each add waiting on the last) is not.
template <typename T> T lane_sum(const T* x, int64_t n) {
  constexpr int W = static_cast<int>(kLanes<T>);
  T part[W] = {};
  for (int64_t j0 = 0; j0 < n; j0 += W)
#pragma GCC unroll 16
    for (int c = 0; c < W; ++c) part[c] += x[j0 + c];
  T total = 0;
  for (int c = 0; c < W; ++c) total += part[c];
  return total;
}

// x_j ← exp(x_j − shift) for j < n, where x_j − shift ≤ 0 up to rounding (shift is
// the row max, or L_i ≥ max_j s_ij). Arguments below ExpConst<T>::kLo (−87 f32,
// −708 f64) are raised to it, so such weights come out as ~1e-38 (f32) or ~1e-308
// (f64) instead of 0: an absolute change far below the rounding of Σ_j P_ij ≥ 1.
// Two loops, each of which the compiler vectorises (see exp_poly_in_range); the
// libm exp is a call per element and cost as much as all the products at dh = 16.
template <typename T> void clamped_exp(T* x, int64_t n, T shift) {
  const T lo = ExpConst<T>::kLo;
#pragma omp simd
  for (int64_t j = 0; j < n; ++j) {
    const T a = x[j] - shift;
    x[j] = a < lo ? lo : a;
  }
#pragma omp simd
  for (int64_t j = 0; j < n; ++j) x[j] = exp_poly_in_range(x[j]);
}

template <typename T> std::vector<T> zeros(int64_t n) { return std::vector<T>(static_cast<size_t>(n), T(0)); }

template <typename T>
void forward_cpu(const T* q, const T* k, const T* v, T* o, T* lse, const HeadView& L) {
  const T scale = T(1) / std::sqrt(T(L.dh));
  const int64_t n = L.T, dh = L.dh, Tp = round_up(n, kLanes<T>), dhp = round_up(dh, kLanes<T>);
  parallel_for(L.B * L.H, [&](int64_t bh) {
    std::vector<T> Qh = zeros<T>(n * dh), Kt = zeros<T>(dh * Tp), Vp = zeros<T>(n * dhp);
    std::vector<T> S = zeros<T>(kBlock * Tp), Ob = zeros<T>(kBlock * dhp);
    L.gather_rows(q, bh, Qh.data(), dh, scale);
    L.gather_cols(k, bh, Kt.data(), Tp);
    L.gather_rows(v, bh, Vp.data(), dhp);
    for (int64_t i0 = 0; i0 < n; i0 += kBlock) {
      const int64_t rows = std::min(kBlock, n - i0), cols = round_up(i0 + rows, kLanes<T>);
      causal_rows_times_panel(rows, i0, Qh.data(), dh, Kt.data(), Tp, dh, S.data(), Tp);
      std::vector<T> row_sum(rows);
      for (int64_t r = 0; r < rows; ++r) {
        const int64_t i = i0 + r;
        T* s = S.data() + r * Tp;
        T m = -std::numeric_limits<T>::infinity();
#pragma omp simd reduction(max : m)
        for (int64_t j = 0; j <= i; ++j) m = s[j] > m ? s[j] : m;
        clamped_exp(s, i + 1, m);
        std::fill(s + i + 1, s + cols, T(0));
        const T l = lane_sum(s, round_up(i + 1, kLanes<T>));
        row_sum[r] = l;
        lse[bh * n + i] = m + std::log(l);
      }
      causal_block_times_rows(rows, i0, S.data(), Tp, Vp.data(), dhp, Ob.data());
      for (int64_t r = 0; r < rows; ++r) {
        T* oi = o + L.at(bh, i0 + r);
        for (int64_t d = 0; d < dh; ++d) oi[d] = Ob[r * dhp + d] / row_sum[r];
      }
    }
  });
}

// q, k rotated; writes D (always), dq_rot and dk_rot (when non-null, overwritten),
// adds into dv (when non-null).
template <typename T>
void backward_cpu(const T* q, const T* k, const T* v, const T* o, const T* lse, const T* dout, T* D, T* dq_rot,
                  T* dk_rot, T* dv, const HeadView& L) {
  const T scale = T(1) / std::sqrt(T(L.dh));
  const int64_t n = L.T, dh = L.dh, Tp = round_up(n, kLanes<T>), dhp = round_up(dh, kLanes<T>);
  parallel_for(L.B * L.H, [&](int64_t bh) {
    T* Dh = D + bh * n;
    const T* lse_h = lse + bh * n;
    for (int64_t i = 0; i < n; ++i) {
      T Di = 0;
      for (int64_t d = 0; d < dh; ++d) Di += dout[L.at(bh, i) + d] * o[L.at(bh, i) + d];
      Dh[i] = Di;
    }
    if (!dq_rot && !dk_rot && !dv) return;
    std::vector<T> Qh = zeros<T>(n * dh), Kt = zeros<T>(dh * Tp), Vt = zeros<T>(dh * Tp), dO = zeros<T>(n * dh);
    std::vector<T> Kp = zeros<T>(dq_rot ? n * dhp : 0), dQb = zeros<T>(dq_rot ? kBlock * dhp : 0);
    std::vector<T> dKt = zeros<T>(dk_rot ? dh * Tp : 0), dVt = zeros<T>(dv ? dh * Tp : 0);
    std::vector<T> P = zeros<T>(kBlock * Tp), dS = zeros<T>(kBlock * Tp);
    std::vector<T> Qt = zeros<T>(dh * kBlock), dOt = zeros<T>(dh * kBlock);
    L.gather_rows(q, bh, Qh.data(), dh, scale);
    L.gather_cols(k, bh, Kt.data(), Tp);
    L.gather_cols(v, bh, Vt.data(), Tp);
    L.gather_rows(dout, bh, dO.data(), dh);
    if (dq_rot) L.gather_rows(k, bh, Kp.data(), dhp);
    for (int64_t i0 = 0; i0 < n; i0 += kBlock) {
      const int64_t rows = std::min(kBlock, n - i0), cols = round_up(i0 + rows, kLanes<T>);
      causal_rows_times_panel(rows, i0, Qh.data(), dh, Kt.data(), Tp, dh, P.data(), Tp);
      causal_rows_times_panel(rows, i0, dO.data(), dh, Vt.data(), Tp, dh, dS.data(), Tp);
      for (int64_t r = 0; r < rows; ++r) {
        const int64_t i = i0 + r;
        T *p = P.data() + r * Tp, *ds = dS.data() + r * Tp;
        clamped_exp(p, i + 1, lse_h[i]);
        const T Di = Dh[i];
#pragma omp simd
        for (int64_t j = 0; j <= i; ++j) ds[j] = p[j] * (ds[j] - Di);
        std::fill(p + i + 1, p + cols, T(0));
        std::fill(ds + i + 1, ds + cols, T(0));
      }
      if (dq_rot) {
        causal_block_times_rows(rows, i0, dS.data(), Tp, Kp.data(), dhp, dQb.data());
        for (int64_t r = 0; r < rows; ++r) {
          T* dqi = dq_rot + L.at(bh, i0 + r);
          for (int64_t d = 0; d < dh; ++d) dqi[d] = dQb[r * dhp + d] * scale;
        }
      }
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t d = 0; d < dh; ++d) {
          Qt[d * kBlock + r] = Qh[(i0 + r) * dh + d];
          dOt[d * kBlock + r] = dO[(i0 + r) * dh + d];
        }
      if (dk_rot) accumulate_keys(rows, i0, dh, Qt.data(), dS.data(), Tp, cols, dKt.data(), Tp);
      if (dv) accumulate_keys(rows, i0, dh, dOt.data(), P.data(), Tp, cols, dVt.data(), Tp);
    }
    for (int64_t j = 0; j < n; ++j)
      for (int64_t d = 0; d < dh; ++d) {
        if (dk_rot) dk_rot[L.at(bh, j) + d] = dKt[d * Tp + j];
        if (dv) dv[L.at(bh, j) + d] += dVt[d * Tp + j];
      }
  });
}

void check_rope_input(const char* op, const char* name, const Tensor& x) {
  check_rank(op, name, x, 4);
  op_check(x.size(3) > 0 && x.size(3) % 2 == 0, op,
           std::string(name) + " must have an even, non-zero head_dim (RoPE pairs j, j+dh/2), got " + x.describe());
}

// RoPE without recording (used by the forward and by the public rope()).
Tensor rope_apply(const Tensor& x, double base, int64_t pos_offset, bool inverse) {
  const int64_t B = x.size(0), T_len = x.size(1), H = x.size(2), dh = x.size(3);
  Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
  if (on_cuda(x)) {
#if ECHO_HAVE_CUDA
    Tensor table = Tensor::empty({std::max<int64_t>(1, gpu::rope_table_floats(T_len, dh))}, DType::F32, x.device());
    gpu::causal_attention_rope(x.data<float>(), y.data<float>(), B, T_len, H, dh, base, pos_offset, inverse, false,
                               table.data<float>());
#else
    no_cuda_build(kRopeOp);
#endif
  } else {
    dispatch_floating(x.dtype(), kRopeOp, [&](auto t) {
      using T = decltype(t);
      rope_cpu<T>(x.data<T>(), y.data<T>(), B, T_len, H, dh, base, pos_offset, inverse, false);
    });
  }
  return y;
}

}  // namespace

Tensor rope(const Tensor& x, double rope_base, int64_t pos_offset) {
  check_floating_same(kRopeOp, {&x});
  check_rope_input(kRopeOp, "x", x);
  op_check(rope_base > 0, kRopeOp, "rope_base must be > 0, got " + std::to_string(rope_base));
  op_check(pos_offset >= 0, kRopeOp, "pos_offset must be >= 0, got " + std::to_string(pos_offset));
  op_check(!any_requires_grad({&x}), kRopeOp,
           "has no backward (decode path); call it under NoGrad or on a tensor that does not require grad");
  return rope_apply(x, rope_base, pos_offset, false);
}

Tensor causal_attention(const Tensor& q, const Tensor& k, const Tensor& v, double rope_base) {
  check_floating_same(kOp, {&q, &k, &v});
  check_rope_input(kOp, "q", q);
  check_shape(kOp, "k", k, q.shape());
  check_shape(kOp, "v", v, q.shape());
  op_check(rope_base > 0, kOp, "rope_base must be > 0, got " + std::to_string(rope_base));
  const HeadView L{q.size(0), q.size(1), q.size(2), q.size(3)};
  Tensor q_rot = rope_apply(q, rope_base, 0, false), k_rot = rope_apply(k, rope_base, 0, false);
  Tensor y = Tensor::empty(q.shape(), q.dtype(), q.device());
  Tensor lse = Tensor::empty({L.B, L.H, L.T}, q.dtype(), q.device());
  if (on_cuda(q)) {
#if ECHO_HAVE_CUDA
    op_check(L.dh <= gpu::kAttentionMaxHeadDim, kOp,
             "the CUDA kernel supports head_dim <= " + std::to_string(gpu::kAttentionMaxHeadDim) + ", got " +
                 q.describe());
    gpu::causal_attention_forward(q_rot.data<float>(), k_rot.data<float>(), v.data<float>(), y.data<float>(),
                                  lse.data<float>(), L.B, L.T, L.H, L.dh);
#else
    no_cuda_build(kOp);
#endif
  } else {
    dispatch_floating(q.dtype(), kOp, [&](auto t) {
      using T = decltype(t);
      forward_cpu<T>(q_rot.data<T>(), k_rot.data<T>(), v.data<T>(), y.data<T>(), lse.data<T>(), L);
    });
  }
  if (any_requires_grad({&q, &k, &v})) {
    record(kOp, {q, k, v}, {y}, {q_rot, k_rot, v, y.detach(), lse},
           [rope_base](Node& node, const std::vector<Tensor>& gy, std::vector<Tensor>& g) {
             const Tensor &q_rot = node.saved(0), &k_rot = node.saved(1), &v = node.saved(2), &y = node.saved(3),
                          &lse = node.saved(4);
             const HeadView L{q_rot.size(0), q_rot.size(1), q_rot.size(2), q_rot.size(3)};
             const Device dev = q_rot.device();
             const DType dt = q_rot.dtype();
             Tensor D = Tensor::empty({L.B, L.H, L.T}, dt, dev);
             Tensor dq_rot = g[0].defined() ? Tensor::empty(q_rot.shape(), dt, dev) : Tensor();
             Tensor dk_rot = g[1].defined() ? Tensor::empty(q_rot.shape(), dt, dev) : Tensor();
             if (dev == Device::CUDA) {
#if ECHO_HAVE_CUDA
               gpu::causal_attention_backward(q_rot.data<float>(), k_rot.data<float>(), v.data<float>(),
                                              y.data<float>(), lse.data<float>(), gy[0].data<float>(),
                                              D.data<float>(), ptr<float>(dq_rot), ptr<float>(dk_rot),
                                              ptr<float>(g[2]), L.B, L.T, L.H, L.dh);
               Tensor table =
                   Tensor::empty({std::max<int64_t>(1, gpu::rope_table_floats(L.T, L.dh))}, DType::F32, dev);
               if (g[0].defined())
                 gpu::causal_attention_rope(dq_rot.data<float>(), g[0].data<float>(), L.B, L.T, L.H, L.dh,
                                            rope_base, 0, true, true, table.data<float>());
               if (g[1].defined())
                 gpu::causal_attention_rope(dk_rot.data<float>(), g[1].data<float>(), L.B, L.T, L.H, L.dh,
                                            rope_base, 0, true, true, table.data<float>());
#endif
             } else {
               dispatch_floating(dt, kOp, [&](auto t) {
                 using T = decltype(t);
                 backward_cpu<T>(q_rot.data<T>(), k_rot.data<T>(), v.data<T>(), y.data<T>(), lse.data<T>(),
                                 gy[0].data<T>(), D.data<T>(), ptr<T>(dq_rot), ptr<T>(dk_rot), ptr<T>(g[2]), L);
                 if (g[0].defined())
                   rope_cpu<T>(dq_rot.data<T>(), g[0].data<T>(), L.B, L.T, L.H, L.dh, rope_base, 0, true, true);
                 if (g[1].defined())
                   rope_cpu<T>(dk_rot.data<T>(), g[1].data<T>(), L.B, L.T, L.H, L.dh, rope_base, 0, true, true);
               });
             }
           });
  }
  return y;
}

RunnerOp runner_op_causal_attention() {
  RunnerOp op;
  op.name = kOp;
  op.inputs = {"q", "k", "v"};
  op.outputs = {"y"};
  op.attr_defaults = {{"rope_base", 10000.0}};
  op.forward = [](const NamedTensors& in, const OpAttrs& attrs) {
    for (const char* name : {"q", "k", "v"})
      op_check(in.count(name) && in.at(name).defined(), kOp, std::string("missing input ") + name);
    auto it = attrs.find("rope_base");
    const double base = it != attrs.end() ? it->second : 10000.0;
    return NamedTensors{{"y", causal_attention(in.at("q"), in.at("k"), in.at("v"), base)}};
  };
  op.cases = [](Rng& rng, OpAttrs& attrs, int variant) {
    // variant 0: the gradcheck example; 1, 2: several key tiles (32) and query
    // blocks (4 rows), T not a multiple of either, head dims 32 and 64.
    const Shape shapes[] = {{2, 7, 2, 8}, {2, 45, 3, 32}, {1, 70, 2, 64}};
    if (variant > 2) return NamedTensors{};
    attrs["rope_base"] = 10000.0;
    return NamedTensors{{"q", randn(shapes[variant], rng, DType::F64)},
                        {"k", randn(shapes[variant], rng, DType::F64)},
                        {"v", randn(shapes[variant], rng, DType::F64)}};
  };
  op.example = [cases = op.cases](Rng& rng, OpAttrs& attrs) { return cases(rng, attrs, 0); };
  return op;
}

}  // namespace echo
