// Mamba-2 chunked selective scan (state-space duality), spec §1.1.
// Reading order: docs/ssd.md → ops/reference/ssd_scan.cpp (the recurrence, step by
// step: the tests' oracle) → this file (the tuned CPU kernel: chunks, small GEMMs)
// → cuda/ssd_scan.cu (the CUDA twin, kernel by kernel against the loops here).
// docs/ssd.md derives every formula below; cuda/ssd_scan.cu is the GPU twin.
//
// Per batch element b and head h, with a_t = dt_t·A_h:
//   h_t = exp(a_t) h_{t-1} + dt_t x_t ⊗ B_t        (P×N)
//   y_t = h_t C_t + D_h x_t                          (P)
// The sequence is cut into chunks of Q steps. Inside chunk c, with local steps
// i, j ∈ [0, len) and the state h_c entering the chunk:
//   y_i     = Σ_{j≤i} L_ij (C_i·B_j) dt_j x_j  +  exp(cin_i) h_c C_i  +  D x_i
//   h_{c+1} = exp(cin_{len-1}) h_c  +  Σ_j exp(cout_j) dt_j x_j ⊗ B_j
// where L_ij = exp(seg_ij), seg_ij = Σ_{k=j+1..i} a_k, cin_i = Σ_{k=0..i} a_k,
// cout_j = Σ_{k=j+1..len-1} a_k. Every one of these is a direct sum of at most Q
// terms of one sign; none is formed as a difference of cumulative sums, so a
// large |a| early in a chunk cannot wipe out the small ones after it.
//
// Phases (the same on both backends):
//   forward : chunk_cumsum → chunk_state → state_passing → chunk_scan
//   backward: chunk_cumsum → chunk_state_bwd → state_passing_bwd → chunk_scan_bwd
// The CPU runs each phase as a parallel_for over independent (b, chunk, group)
// or (b, head, state row) tasks; every output element has exactly one writer.
#include "ops/ssd_scan.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <type_traits>
#include <vector>

#include "autograd/random.h"
#include "ops/common.h"
#include "ops/exp_poly.h"
#include "ops/runner.h"
#if ECHO_HAVE_CUDA
#include "cuda/ssd_scan.cuh"
#endif

namespace echo {
namespace {

constexpr const char* kOp = "ssd_scan";

// ---- shapes ------------------------------------------------------------------------

// Shapes and offsets (the same names as cuda/ssd_scan.cu's SsdGeometry): x, y are
// [b, T, H, P], dt is [b, T, H], B, C are [b, T, G, N]; per-chunk scratch is
// indexed by chunk_index (b, h, c).
struct SsdGeometry {
  int64_t batch = 0, T = 0, H = 0, P = 0, G = 0, N = 0, Q = 0;
  int64_t chunks = 0, heads_per_group = 1;
  int64_t len(int64_t c) const { return std::min(Q, T - c * Q); }
  int64_t x_step() const { return H * P; }   // one time step in x, y
  int64_t bc_step() const { return G * N; }  // one time step in B, C
  int64_t x_offset(int64_t b, int64_t t, int64_t h) const { return ((b * T + t) * H + h) * P; }
  int64_t dt_offset(int64_t b, int64_t t, int64_t h) const { return (b * T + t) * H + h; }
  int64_t bc_offset(int64_t b, int64_t t, int64_t g) const { return ((b * T + t) * G + g) * N; }
  int64_t chunk_index(int64_t b, int64_t h, int64_t c) const { return (b * H + h) * chunks + c; }
};

SsdGeometry check_inputs(const Tensor& x, const Tensor& dt, const Tensor& A, const Tensor& B,
                  const Tensor& C, const Tensor& D, const Tensor& h0, int64_t chunk_size) {
  check_floating_same(kOp, {&x, &dt, &A, &B, &C, &D, &h0}, /*cuda_float64=*/true);
  op_check(x.defined() && dt.defined() && A.defined() && B.defined() && C.defined(), kOp,
           "x, dt, A, B and C are required");
  op_check(chunk_size > 0, kOp, "chunk_size must be > 0, got " + std::to_string(chunk_size));
  check_rank(kOp, "x", x, 4);
  check_rank(kOp, "B", B, 4);
  SsdGeometry d;
  d.batch = x.size(0), d.T = x.size(1), d.H = x.size(2), d.P = x.size(3);
  // A chunk longer than the sequence is the sequence: clamping changes nothing
  // but keeps T + Q − 1 and the Q×Q workspaces finite for absurd chunk sizes.
  d.G = B.size(2), d.N = B.size(3), d.Q = std::min<int64_t>(chunk_size, std::max<int64_t>(d.T, 1));
  check_shape(kOp, "dt", dt, {d.batch, d.T, d.H});
  check_shape(kOp, "A", A, {d.H});
  check_shape(kOp, "B", B, {d.batch, d.T, d.G, d.N});
  check_shape(kOp, "C", C, {d.batch, d.T, d.G, d.N});
  if (D.defined()) check_shape(kOp, "D", D, {d.H});
  if (h0.defined()) check_shape(kOp, "h0", h0, {d.batch, d.H, d.P, d.N});
  op_check(d.P > 0 && d.N > 0, kOp, "head width P and state size N must be > 0 (x is " + x.describe() +
                                         ", B is " + B.describe() + ")");
  op_check(d.G > 0 && d.H % d.G == 0, kOp,
           "the number of heads H=" + std::to_string(d.H) + " must be a multiple of the number of groups G=" +
               std::to_string(d.G) + " (B is " + B.describe() + ")");
  d.chunks = (d.T + d.Q - 1) / d.Q;
  d.heads_per_group = d.H / d.G;
  return d;
}

// ---- small dense kernels -------------------------------------------------------------
//
// out(i, j) += Σ_k a(i, k) · b(k, j) for i < m, j < n, where a is read through two
// strides (so a transposed operand costs nothing) and b, out are row-major with
// leading dimensions. The chunk matrices are at most Q×Q, so a 4-row × W-column
// register tile over a contiguous row of b is all the blocking they need.
//   kLowerA: a(i, k) = 0 for k > i;  kUpperA: a(i, k) = 0 for k < i. The caller
//            stores those zeros; the band only skips the work on them.
//   lower_out: only out(i, j) with j ≤ i is wanted. Column blocks wholly above the
//            diagonal are skipped; entries above it inside a block get partial sums
//            the caller never reads.
enum Band { kFull, kLowerA, kUpperA };

template <typename Real>
__attribute__((always_inline)) inline void gemm_acc_body(int64_t m, int64_t n, int64_t kdim, const Real* a,
                                                         int64_t a_row, int64_t a_col, const Real* b, int64_t ldb,
                                                         Real* out, int64_t ldo, Band band, bool lower_out) {
  constexpr int kRows = 4, kCols = 128 / static_cast<int>(sizeof(Real));
  for (int64_t i0 = 0; i0 < m; i0 += kRows) {
    const int64_t rows = std::min<int64_t>(kRows, m - i0);
    const int64_t k_lo = band == kUpperA ? i0 : 0;
    const int64_t k_hi = band == kLowerA ? std::min(kdim, i0 + rows) : kdim;
    for (int64_t j0 = 0; j0 < n; j0 += kCols) {
      if (lower_out && j0 > i0 + rows - 1) break;
      const int64_t cols = std::min<int64_t>(kCols, n - j0);
      if (rows == kRows && cols == kCols) {
        Real acc[kRows][kCols] = {};
        for (int64_t k = k_lo; k < k_hi; ++k) {
          const Real* bk = b + k * ldb + j0;
#pragma GCC unroll 4
          for (int r = 0; r < kRows; ++r) {
            const Real ar = a[(i0 + r) * a_row + k * a_col];
#pragma omp simd
            for (int col = 0; col < kCols; ++col) acc[r][col] += ar * bk[col];
          }
        }
        for (int r = 0; r < kRows; ++r) {
          Real* o = out + (i0 + r) * ldo + j0;
#pragma omp simd
          for (int col = 0; col < kCols; ++col) o[col] += acc[r][col];
        }
      } else {
        for (int64_t r = 0; r < rows; ++r) {
          Real acc[kCols] = {};
          for (int64_t k = k_lo; k < k_hi; ++k) {
            const Real ar = a[(i0 + r) * a_row + k * a_col];
            const Real* bk = b + k * ldb + j0;
#pragma omp simd
            for (int64_t col = 0; col < cols; ++col) acc[col] += ar * bk[col];
          }
          Real* o = out + (i0 + r) * ldo + j0;
          for (int64_t col = 0; col < cols; ++col) o[col] += acc[col];
        }
      }
    }
  }
}

// The build targets baseline x86-64; the products (and the exponential below) are
// also compiled for AVX2+FMA and AVX-512 and picked at load time for the CPU at
// hand (about 3× the baseline). Sanitizer builds keep the baseline only.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__SANITIZE_ADDRESS__)
#define ECHO_SSD_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define ECHO_SSD_CLONES
#endif
ECHO_SSD_CLONES void gemm_acc_f32(int64_t m, int64_t n, int64_t k, const float* a, int64_t a_row, int64_t a_col,
                                  const float* b, int64_t ldb, float* out, int64_t ldo, Band band, bool lower_out) {
  gemm_acc_body<float>(m, n, k, a, a_row, a_col, b, ldb, out, ldo, band, lower_out);
}
ECHO_SSD_CLONES void gemm_acc_f64(int64_t m, int64_t n, int64_t k, const double* a, int64_t a_row, int64_t a_col,
                                  const double* b, int64_t ldb, double* out, int64_t ldo, Band band, bool lower_out) {
  gemm_acc_body<double>(m, n, k, a, a_row, a_col, b, ldb, out, ldo, band, lower_out);
}
inline void gemm_acc(int64_t m, int64_t n, int64_t k, const float* a, int64_t a_row, int64_t a_col, const float* b,
                     int64_t ldb, float* out, int64_t ldo, Band band = kFull, bool lower_out = false) {
  gemm_acc_f32(m, n, k, a, a_row, a_col, b, ldb, out, ldo, band, lower_out);
}
inline void gemm_acc(int64_t m, int64_t n, int64_t k, const double* a, int64_t a_row, int64_t a_col, const double* b,
                     int64_t ldb, double* out, int64_t ldo, Band band = kFull, bool lower_out = false) {
  gemm_acc_f64(m, n, k, a, a_row, a_col, b, ldb, out, ldo, band, lower_out);
}

// exp over a contiguous array, vectorised (exp_poly: ops/exp_poly.h): the Q²/2
// decays per chunk and head would otherwise cost as much as the matrix products.
template <typename Real>
__attribute__((always_inline)) inline void exp_inplace_body(Real* v, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) v[i] = exp_poly(v[i]);
}
ECHO_SSD_CLONES void exp_inplace(float* v, int64_t n) { exp_inplace_body(v, n); }
ECHO_SSD_CLONES void exp_inplace(double* v, int64_t n) { exp_inplace_body(v, n); }

// dst[c·ld_dst + r] = src[r·ld_src + c] for r < rows, c < cols.
template <typename Real>
void transpose(int64_t rows, int64_t cols, const Real* src, int64_t ld_src, Real* dst, int64_t ld_dst) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) dst[c * ld_dst + r] = src[r * ld_src + c];
}

// Per-task scratch, reused across the heads of one task.
template <typename Real> struct Scratch {
  std::vector<Real> v;
  Real* take(size_t n) { v.assign(n, Real(0)); return v.data(); }
};

// ---- forward phases ----------------------------------------------------------------

// chunk_cumsum: cin_i = Σ_{k=0..i} a_k and cout_j = Σ_{k=j+1..len-1} a_k per
// (b, h, c), stored [b, H, chunks, Q]. CUDA: chunk_cumsum_kernel.
template <typename Real>
void chunk_cumsum(const SsdGeometry& d, const Real* dt, const Real* A, Real* cin, Real* cout) {
  parallel_for(d.batch * d.H * d.chunks, [&](int64_t idx) {
    const int64_t c = idx % d.chunks, h = (idx / d.chunks) % d.H, b = idx / (d.chunks * d.H);
    const int64_t len = d.len(c);
    const Real* dtc = dt + d.dt_offset(b, c * d.Q, h);
    Real* ci = cin + idx * d.Q;
    Real* co = cout + idx * d.Q;
    Real s = 0;
    for (int64_t i = 0; i < len; ++i) {
      s += dtc[i * d.H] * A[h];
      ci[i] = s;
    }
    s = 0;
    for (int64_t j = len - 1; j >= 0; --j) {
      co[j] = s;
      s += dtc[j * d.H] * A[h];
    }
  });
}

// segsum: L_ij = exp(Σ_{k=j+1..i} a_k) for j ≤ i, 0 above the diagonal; one running
// sum per column j (len×len, leading dimension Q). CUDA: segsum_kernel.
template <typename Real>
void segsum_decay(int64_t len, int64_t Q, const Real* dtc, int64_t dt_step, Real A, Real* L) {
  for (int64_t j = 0; j < len; ++j) {
    Real s = 0;
    L[j * Q + j] = s;
    for (int64_t i = j + 1; i < len; ++i) {
      s += dtc[i * dt_step] * A;
      L[i * Q + j] = s;
    }
  }
  for (int64_t i = 0; i < len; ++i) {
    exp_inplace(L + i * Q, i + 1);
    std::fill(L + i * Q + i + 1, L + i * Q + len, Real(0));
  }
}

// CB_ij = C_i·B_j for j ≤ i (the group's chunk Gram matrix, len×len, leading
// dimension Q); Bt is scratch N×Q. CUDA: bmm_chunk_kernel.
template <typename Real>
void chunk_gram(const SsdGeometry& d, int64_t len, const Real* Cc, const Real* Bc, Real* Bt, Real* CB) {
  transpose(len, d.N, Bc, d.bc_step(), Bt, d.Q);
  std::fill(CB, CB + d.Q * d.Q, Real(0));
  gemm_acc(len, len, d.N, Cc, d.bc_step(), 1, Bt, d.Q, CB, d.Q, kFull, /*lower_out=*/true);
}

// chunk_state: S_c = Σ_j exp(cout_j) dt_j x_j ⊗ B_j (P×N) into states[b, h, c].
// CUDA: chunk_state_kernel.
template <typename Real>
void chunk_state(const SsdGeometry& d, const Real* x, const Real* dt, const Real* B, const Real* cout, Real* states) {
  parallel_for(d.batch * d.chunks * d.G, [&](int64_t task) {
    const int64_t g = task % d.G, c = (task / d.G) % d.chunks, b = task / (d.G * d.chunks);
    const int64_t t0 = c * d.Q, len = d.len(c);
    Scratch<Real> s_xw;
    Real* xw = s_xw.take(len * d.P);
    const Real* Bc = B + d.bc_offset(b, t0, g);
    for (int64_t hh = 0; hh < d.heads_per_group; ++hh) {
      const int64_t h = g * d.heads_per_group + hh, ch = d.chunk_index(b, h, c);
      const Real* xc = x + d.x_offset(b, t0, h);
      const Real* dtc = dt + d.dt_offset(b, t0, h);
      const Real* co = cout + ch * d.Q;
      for (int64_t j = 0; j < len; ++j) {
        const Real w = std::exp(co[j]) * dtc[j * d.H];
#pragma omp simd
        for (int64_t p = 0; p < d.P; ++p) xw[j * d.P + p] = w * xc[j * d.x_step() + p];
      }
      Real* S = states + ch * d.P * d.N;
      std::fill(S, S + d.P * d.N, Real(0));
      // S(p, n) += Σ_j xw(j, p) B(j, n): xw read transposed.
      gemm_acc(d.P, d.N, len, xw, 1, d.P, Bc, d.bc_step(), S, d.N);
    }
  });
}

// state_passing: h_{c+1} = exp(cin_{len-1}) h_c + S_c, from h_0 = h0 (or 0). The
// chunk states are replaced in place by the states entering each chunk; the
// running state is h_final's row. Parallel over (b, h, p). CUDA: state_passing_kernel.
template <typename Real>
void state_passing(const SsdGeometry& d, const Real* cin, const Real* h0, Real* states, Real* h_final) {
  parallel_for(d.batch * d.H * d.P, [&](int64_t idx) {
    const int64_t p = idx % d.P, bh = idx / d.P;
    Real* h = h_final + idx * d.N;
    for (int64_t n = 0; n < d.N; ++n) h[n] = h0 ? h0[idx * d.N + n] : Real(0);
    for (int64_t c = 0; c < d.chunks; ++c) {
      const int64_t ch = bh * d.chunks + c;
      const Real decay = std::exp(cin[ch * d.Q + d.len(c) - 1]);
      Real* s = states + (ch * d.P + p) * d.N;
#pragma omp simd
      for (int64_t n = 0; n < d.N; ++n) {
        const Real local = s[n];
        s[n] = h[n];
        h[n] = decay * h[n] + local;
      }
    }
  });
}

// chunk_scan: y_i = Σ_{j≤i} M_ij x_j + exp(cin_i) h_c C_i + D x_i with
// M_ij = L_ij CB_ij dt_j. CUDA: segsum_kernel, bmm_chunk_kernel, chunk_scan_kernel.
template <typename Real>
void chunk_scan(const SsdGeometry& d, const Real* x, const Real* dt, const Real* A, const Real* B, const Real* C,
                const Real* D, const Real* cin, const Real* states, Real* y) {
  parallel_for(d.batch * d.chunks * d.G, [&](int64_t task) {
    const int64_t g = task % d.G, c = (task / d.G) % d.chunks, b = task / (d.G * d.chunks);
    const int64_t t0 = c * d.Q, len = d.len(c), Q = d.Q, P = d.P, N = d.N, xs = d.x_step();
    Scratch<Real> s_bt, s_cb, s_m, s_cs, s_ht, s_dt;
    Real* dtv = s_dt.take(len);
    Real* Bt = s_bt.take(N * Q);
    Real* CB = s_cb.take(Q * Q);
    Real* M = s_m.take(Q * Q);
    Real* Cs = s_cs.take(len * N);
    Real* hT = s_ht.take(N * P);
    const Real* Bc = B + d.bc_offset(b, t0, g);
    const Real* Cc = C + d.bc_offset(b, t0, g);
    chunk_gram(d, len, Cc, Bc, Bt, CB);
    for (int64_t hh = 0; hh < d.heads_per_group; ++hh) {
      const int64_t h = g * d.heads_per_group + hh, ch = d.chunk_index(b, h, c);
      const Real* xc = x + d.x_offset(b, t0, h);
      const Real* dtc = dt + d.dt_offset(b, t0, h);
      const Real* ci = cin + ch * Q;
      Real* yc = y + d.x_offset(b, t0, h);
      for (int64_t j = 0; j < len; ++j) dtv[j] = dtc[j * d.H];
      segsum_decay(len, Q, dtv, 1, A[h], M);
      for (int64_t i = 0; i < len; ++i)
#pragma omp simd
        for (int64_t j = 0; j <= i; ++j) M[i * Q + j] *= CB[i * Q + j] * dtv[j];
      const Real Dh = D ? D[h] : Real(0);
      for (int64_t i = 0; i < len; ++i)
#pragma omp simd
        for (int64_t p = 0; p < P; ++p) yc[i * xs + p] = Dh * xc[i * xs + p];
      // intra-chunk: y += M X (M lower triangular)
      gemm_acc(len, P, len, M, Q, 1, xc, xs, yc, xs, kLowerA);
      // from the entering state: y_i += Σ_n exp(cin_i) C_i[n] h_c[p][n]
      for (int64_t i = 0; i < len; ++i) {
        const Real e = std::exp(ci[i]);
#pragma omp simd
        for (int64_t n = 0; n < N; ++n) Cs[i * N + n] = e * Cc[i * d.bc_step() + n];
      }
      transpose(P, N, states + ch * P * N, N, hT, P);
      gemm_acc(len, P, N, Cs, N, 1, hT, P, yc, xs);
    }
  });
}

// ---- backward phases ----------------------------------------------------------------

// chunk_state_bwd: the gradient reaching h_c from the outputs of chunk c,
// E_c = Σ_i exp(cin_i) dy_i ⊗ C_i (P×N), into dstates[b, h, c].
// CUDA: chunk_state_bwd_kernel.
template <typename Real>
void chunk_state_bwd(const SsdGeometry& d, const Real* dy, const Real* C, const Real* cin, Real* dstates) {
  parallel_for(d.batch * d.chunks * d.G, [&](int64_t task) {
    const int64_t g = task % d.G, c = (task / d.G) % d.chunks, b = task / (d.G * d.chunks);
    const int64_t t0 = c * d.Q, len = d.len(c);
    Scratch<Real> s_dyw;
    Real* dyw = s_dyw.take(len * d.P);
    const Real* Cc = C + d.bc_offset(b, t0, g);
    for (int64_t hh = 0; hh < d.heads_per_group; ++hh) {
      const int64_t h = g * d.heads_per_group + hh, ch = d.chunk_index(b, h, c);
      const Real* dyc = dy + d.x_offset(b, t0, h);
      const Real* ci = cin + ch * d.Q;
      for (int64_t i = 0; i < len; ++i) {
        const Real e = std::exp(ci[i]);
#pragma omp simd
        for (int64_t p = 0; p < d.P; ++p) dyw[i * d.P + p] = e * dyc[i * d.x_step() + p];
      }
      Real* E = dstates + ch * d.P * d.N;
      std::fill(E, E + d.P * d.N, Real(0));
      gemm_acc(d.P, d.N, len, dyw, 1, d.P, Cc, d.bc_step(), E, d.N);
    }
  });
}

// state_passing_bwd: g_{nc-1} = dh_final; g_{c-1} = exp(cin_{len-1}) g_c + E_c, where
// g_c is the gradient of the state leaving chunk c. E_c is replaced in place by g_c;
// dh0 += g_{-1}. Parallel over (b, h, p). CUDA: state_passing_bwd_kernel.
template <typename Real>
void state_passing_bwd(const SsdGeometry& d, const Real* cin, const Real* dh_final, Real* dstates, Real* dh0) {
  parallel_for(d.batch * d.H * d.P, [&](int64_t idx) {
    const int64_t p = idx % d.P, bh = idx / d.P;
    std::vector<Real> g(dh_final + idx * d.N, dh_final + (idx + 1) * d.N);
    for (int64_t c = d.chunks - 1; c >= 0; --c) {
      const int64_t ch = bh * d.chunks + c;
      const Real decay = std::exp(cin[ch * d.Q + d.len(c) - 1]);
      Real* s = dstates + (ch * d.P + p) * d.N;
#pragma omp simd
      for (int64_t n = 0; n < d.N; ++n) {
        const Real local = s[n];
        s[n] = g[n];
        g[n] = decay * g[n] + local;
      }
    }
    if (dh0)
      for (int64_t n = 0; n < d.N; ++n) dh0[idx * d.N + n] += g[n];
  });
}

// chunk_scan_bwd: everything else, per (b, chunk, group). With dM = dY Xᵀ,
// S_c's gradient dS = g_c and the entering state h_c (docs/ssd.md §3):
//   dx_j  += Σ_{i≥j} M_ij dy_i + exp(cout_j) dt_j dS B_j + D dy_j
//   dCB_ij = Σ_heads dM_ij L_ij dt_j          → dC_i += Σ_{j≤i} dCB_ij B_j, dB_j += Σ_{i≥j} dCB_ij C_i
//   dB_j  += Σ_heads exp(cout_j) dt_j dSᵀ x_j
//   dC_i  += Σ_heads exp(cin_i) h_cᵀ dy_i
//   ddt_j += Σ_i dM_ij L_ij CB_ij + exp(cout_j) x_j·(dS B_j) + A da_j
//   da_k   = Σ_{i≥k} Σ_{j<k} dM_ij M_ij + Σ_{i≥k} w_in_i + Σ_{j<k} w_out_j + w_chunk
//   dA    += Σ dt_k da_k,   dD += Σ dy·x
// CUDA: dm_kernel, dcb_kernel, ddt_diag_kernel, row_prefix_kernel, dx_kernel,
// dB_kernel, dC_kernel, w_in_kernel, w_out_kernel, w_chunk_kernel, da_kernel, reduce_kernel.
template <typename Real>
void chunk_scan_bwd(const SsdGeometry& d, const Real* x, const Real* dt, const Real* A, const Real* B, const Real* C,
                    const Real* D, const Real* cin, const Real* cout, const Real* states, const Real* dstates,
                    const Real* dy, Real* dx, Real* ddt, Real* dB, Real* dC, Real* dA_part, Real* dD_part) {
  parallel_for(d.batch * d.chunks * d.G, [&](int64_t task) {
    const int64_t g = task % d.G, c = (task / d.G) % d.chunks, b = task / (d.G * d.chunks);
    const int64_t t0 = c * d.Q, len = d.len(c), Q = d.Q, P = d.P, N = d.N, xs = d.x_step(), bs = d.bc_step();
    Scratch<Real> s_bt, s_cb, s_dcb, s_l, s_m, s_dm, s_xt, s_v, s_xw, s_u, s_dst, s_vec, s_dt;
    Real* dtv = s_dt.take(len);
    Real* Bt = s_bt.take(N * Q);
    Real* CB = s_cb.take(Q * Q);
    Real* dCB = s_dcb.take(Q * Q);
    Real* L = s_l.take(Q * Q);
    Real* M = s_m.take(Q * Q);
    Real* W = s_dm.take(Q * Q);
    Real* Xt = s_xt.take(P * Q);
    Real* V = s_v.take(len * P);
    Real* xw = s_xw.take(len * P);
    Real* U = s_u.take(len * N);
    Real* dST = s_dst.take(N * P);
    Real* vec = s_vec.take(4 * Q);
    Real *ddt_direct = vec, *w_in = vec + Q, *w_out = vec + 2 * Q, *da = vec + 3 * Q;
    const Real* Bc = B + d.bc_offset(b, t0, g);
    const Real* Cc = C + d.bc_offset(b, t0, g);
    Real* dBc = dB + d.bc_offset(b, t0, g);
    Real* dCc = dC + d.bc_offset(b, t0, g);
    chunk_gram(d, len, Cc, Bc, Bt, CB);
    for (int64_t hh = 0; hh < d.heads_per_group; ++hh) {
      const int64_t h = g * d.heads_per_group + hh, ch = d.chunk_index(b, h, c);
      const Real* xc = x + d.x_offset(b, t0, h);
      const Real* dyc = dy + d.x_offset(b, t0, h);
      const Real* dtc = dt + d.dt_offset(b, t0, h);
      Real* dxc = dx + d.x_offset(b, t0, h);
      Real* ddtc = ddt + d.dt_offset(b, t0, h);
      const Real* ci = cin + ch * Q;
      const Real* co = cout + ch * Q;
      const Real* h_in = states + ch * P * N;
      const Real* dS = dstates + ch * P * N;
      std::fill(vec, vec + 4 * Q, Real(0));

      // L and M = L ∘ CB ∘ dt_j (M stays zero above the diagonal).
      for (int64_t j = 0; j < len; ++j) dtv[j] = dtc[j * d.H];
      segsum_decay(len, Q, dtv, 1, A[h], L);
      for (int64_t i = 0; i < len; ++i)
#pragma omp simd
        for (int64_t j = 0; j <= i; ++j) M[i * Q + j] = L[i * Q + j] * CB[i * Q + j] * dtv[j];

      // dM = dY Xᵀ (j ≤ i), kept in W.
      transpose(len, P, xc, xs, Xt, Q);
      std::fill(W, W + Q * Q, Real(0));
      gemm_acc(len, len, P, dyc, xs, 1, Xt, Q, W, Q, kFull, /*lower_out=*/true);

      // dx_j += Σ_{i≥j} M_ij dy_i (Mᵀ read through strides; upper band of Mᵀ)
      gemm_acc(len, P, len, M, 1, Q, dyc, xs, dxc, xs, kUpperA);

      // Elementwise on the lower triangle: dCB, the direct dt term, and W = dM ∘ M
      // (the gradient of the segment sums seg_ij).
      for (int64_t i = 0; i < len; ++i) {
#pragma omp simd
        for (int64_t j = 0; j <= i; ++j) {
          const Real dm = W[i * Q + j];
          dCB[i * Q + j] += dm * L[i * Q + j] * dtv[j];
          ddt_direct[j] += dm * L[i * Q + j] * CB[i * Q + j];
          W[i * Q + j] = dm * M[i * Q + j];
        }
      }

      // Through the chunk state S_c: V_j = dS B_j (len×P).
      transpose(P, N, dS, N, dST, P);
      std::fill(V, V + len * P, Real(0));
      gemm_acc(len, P, N, Bc, bs, 1, dST, P, V, P);
      for (int64_t j = 0; j < len; ++j) {
        const Real e = std::exp(co[j]), dtj = dtv[j];
        Real xv = 0;
#pragma omp simd reduction(+ : xv)
        for (int64_t p = 0; p < P; ++p) xv += xc[j * xs + p] * V[j * P + p];
        ddt_direct[j] += e * xv;
        w_out[j] = e * dtj * xv;
#pragma omp simd
        for (int64_t p = 0; p < P; ++p) {
          dxc[j * xs + p] += e * dtj * V[j * P + p];
          xw[j * P + p] = e * dtj * xc[j * xs + p];
        }
      }
      // dB_j += Σ_p xw_j[p] dS[p][:]
      gemm_acc(len, N, P, xw, P, 1, dS, N, dBc, bs);

      // Through the entering state: U_i = h_cᵀ dy_i (len×N).
      std::fill(U, U + len * N, Real(0));
      gemm_acc(len, N, P, dyc, xs, 1, h_in, N, U, N);
      for (int64_t i = 0; i < len; ++i) {
        const Real e = std::exp(ci[i]);
        Real cu = 0;
#pragma omp simd reduction(+ : cu)
        for (int64_t n = 0; n < N; ++n) {
          cu += Cc[i * bs + n] * U[i * N + n];
          dCc[i * bs + n] += e * U[i * N + n];
        }
        w_in[i] = e * cu;
      }
      Real w_chunk = 0;
#pragma omp simd reduction(+ : w_chunk)
      for (int64_t e = 0; e < P * N; ++e) w_chunk += dS[e] * h_in[e];
      w_chunk *= std::exp(ci[len - 1]);

      // da_k: Σ_{i≥k} Σ_{j<k} W_ij, row by row with the running row prefix.
      std::fill(da, da + len, w_chunk);
      for (int64_t i = 0; i < len; ++i) {
        Real run = 0;
        for (int64_t k = 0; k <= i; ++k) {
          da[k] += run;
          run += W[i * Q + k];
        }
      }
      Real run = 0;
      for (int64_t k = len - 1; k >= 0; --k) { run += w_in[k]; da[k] += run; }
      run = 0;
      for (int64_t k = 0; k < len; ++k) { da[k] += run; run += w_out[k]; }

      Real dA_sum = 0, dD_sum = 0;
      for (int64_t k = 0; k < len; ++k) {
        ddtc[k * d.H] += ddt_direct[k] + A[h] * da[k];
        dA_sum += dtv[k] * da[k];
      }
      const Real Dh = D ? D[h] : Real(0);
      for (int64_t i = 0; i < len; ++i)
#pragma omp simd reduction(+ : dD_sum)
        for (int64_t p = 0; p < P; ++p) {
          dD_sum += dyc[i * xs + p] * xc[i * xs + p];
          dxc[i * xs + p] += Dh * dyc[i * xs + p];
        }
      dA_part[task * d.heads_per_group + hh] = dA_sum;
      dD_part[task * d.heads_per_group + hh] = dD_sum;
    }
    // The group's Gram matrix gradient: dC_i += Σ_{j≤i} dCB_ij B_j, dB_j += Σ_{i≥j} dCB_ij C_i.
    gemm_acc(len, N, len, dCB, Q, 1, Bc, bs, dCc, bs, kLowerA);
    gemm_acc(len, N, len, dCB, 1, Q, Cc, bs, dBc, bs, kUpperA);
  });
}

// ---- CPU drivers -------------------------------------------------------------------

template <typename Real>
void forward_cpu(const SsdGeometry& d, const Tensor& x, const Tensor& dt, const Tensor& A, const Tensor& B,
                 const Tensor& C, const Tensor& D, const Tensor& h0, Tensor& y, Tensor& h_final,
                 Tensor& states) {
  std::vector<Real> cin(d.batch * d.H * d.chunks * d.Q), cout(cin.size());
  chunk_cumsum<Real>(d, cptr<Real>(dt), cptr<Real>(A), cin.data(), cout.data());
  chunk_state<Real>(d, cptr<Real>(x), cptr<Real>(dt), cptr<Real>(B), cout.data(), ptr<Real>(states));
  state_passing<Real>(d, cin.data(), cptr<Real>(h0), ptr<Real>(states), ptr<Real>(h_final));
  chunk_scan<Real>(d, cptr<Real>(x), cptr<Real>(dt), cptr<Real>(A), cptr<Real>(B), cptr<Real>(C), cptr<Real>(D),
                   cin.data(), cptr<Real>(states), ptr<Real>(y));
}

struct Grads {
  Tensor dx, ddt, dA, dB, dC, dD, dh0;  // dD, dh0 undefined when D, h0 are absent
};

template <typename Real>
void backward_cpu(const SsdGeometry& d, const Tensor& x, const Tensor& dt, const Tensor& A, const Tensor& B,
                  const Tensor& C, const Tensor& D, const Tensor& states, const Tensor& dy,
                  const Tensor& dh_final, Grads& gr) {
  std::vector<Real> cin(d.batch * d.H * d.chunks * d.Q), cout(cin.size());
  chunk_cumsum<Real>(d, cptr<Real>(dt), cptr<Real>(A), cin.data(), cout.data());
  // Every element is written by chunk_state_bwd before it is read: no zero fill.
  std::unique_ptr<Real[]> dstates(new Real[d.batch * d.H * d.chunks * d.P * d.N]);
  chunk_state_bwd<Real>(d, cptr<Real>(dy), cptr<Real>(C), cin.data(), dstates.get());
  state_passing_bwd<Real>(d, cin.data(), cptr<Real>(dh_final), dstates.get(), ptr<Real>(gr.dh0));
  const int64_t tasks = d.batch * d.chunks * d.G;
  std::vector<Real> dA_part(tasks * d.heads_per_group), dD_part(tasks * d.heads_per_group);
  chunk_scan_bwd<Real>(d, cptr<Real>(x), cptr<Real>(dt), cptr<Real>(A), cptr<Real>(B), cptr<Real>(C),
                       cptr<Real>(D), cin.data(), cout.data(), cptr<Real>(states), dstates.get(),
                       cptr<Real>(dy), ptr<Real>(gr.dx), ptr<Real>(gr.ddt), ptr<Real>(gr.dB), ptr<Real>(gr.dC),
                       dA_part.data(), dD_part.data());
  // Per-head sums over (b, chunk) in a fixed order.
  Real* dA = ptr<Real>(gr.dA);
  Real* dD = ptr<Real>(gr.dD);
  for (int64_t h = 0; h < d.H; ++h) {
    const int64_t g = h / d.heads_per_group, hh = h % d.heads_per_group;
    Real sa = 0, sd = 0;
    for (int64_t b = 0; b < d.batch; ++b)
      for (int64_t c = 0; c < d.chunks; ++c) {
        const int64_t task = (b * d.chunks + c) * d.G + g;
        sa += dA_part[task * d.heads_per_group + hh];
        sd += dD_part[task * d.heads_per_group + hh];
      }
    dA[h] += sa;
    if (dD) dD[h] += sd;
  }
}

// ---- decode step -------------------------------------------------------------------

template <typename Real>
void step_cpu(int64_t batch, int64_t H, int64_t P, int64_t G, int64_t N, const Real* x, const Real* dt,
              const Real* A, const Real* B, const Real* C, const Real* D, Real* state, Real* y) {
  const int64_t heads_per_group = H / G;
  parallel_for(batch * H, [&](int64_t bh) {
    const int64_t b = bh / H, h = bh % H, g = h / heads_per_group;
    const Real dth = dt[bh], decay = std::exp(dth * A[h]);
    const Real* Bt = B + (b * G + g) * N;
    const Real* Ct = C + (b * G + g) * N;
    for (int64_t p = 0; p < P; ++p) {
      Real* s = state + (bh * P + p) * N;
      const Real xp = x[bh * P + p];
      Real acc = 0;
      for (int64_t n = 0; n < N; ++n) {
        s[n] = decay * s[n] + dth * xp * Bt[n];
        acc += s[n] * Ct[n];
      }
      y[bh * P + p] = acc + (D ? D[h] * xp : Real(0));
    }
  });
}

}  // namespace

// ---- public API --------------------------------------------------------------------

SsdResult ssd_scan(const Tensor& x, const Tensor& dt, const Tensor& A, const Tensor& B, const Tensor& C,
                   const Tensor& D, const Tensor& h0, int64_t chunk_size) {
  const SsdGeometry d = check_inputs(x, dt, A, B, C, D, h0, chunk_size);
  const DType type = x.dtype();
  const Device dev = x.device();
  Tensor y = Tensor::empty({d.batch, d.T, d.H, d.P}, type, dev);
  Tensor h_final = Tensor::empty({d.batch, d.H, d.P, d.N}, type, dev);
  // The states entering each chunk, kept for backward (the only saved intermediate).
  Tensor states = Tensor::empty({d.batch, d.H, d.chunks, d.P, d.N}, type, dev);
  if (on_cuda(x)) {
#if ECHO_HAVE_CUDA
    const gpu::SsdDims gd{d.batch, d.T, d.H, d.P, d.G, d.N, d.Q};
    Tensor ws = Tensor::empty({std::max<int64_t>(1, gpu::ssd_forward_workspace_elements(gd))}, type, dev);
    dispatch_floating(type, kOp, [&](auto t) {
      using Real = decltype(t);
      gpu::ssd_scan_forward(gd, cptr<Real>(x), cptr<Real>(dt), cptr<Real>(A), cptr<Real>(B), cptr<Real>(C),
                            cptr<Real>(D), cptr<Real>(h0), ptr<Real>(y), ptr<Real>(h_final), ptr<Real>(states),
                            ptr<Real>(ws));
    });
#else
    no_cuda_build(kOp);
#endif
  } else {
    dispatch_floating(type, kOp, [&](auto t) {
      using Real = decltype(t);
      forward_cpu<Real>(d, x, dt, A, B, C, D, h0, y, h_final, states);
    });
  }

  if (any_requires_grad({&x, &dt, &A, &B, &C, &D, &h0})) {
    record(kOp, {x, dt, A, B, C, D, h0}, {y, h_final}, {x, dt, A, B, C, D, h0, states},
           [d](Node& node, const std::vector<Tensor>& gy, std::vector<Tensor>& gx) {
             const Tensor &x = node.saved(0), &dt = node.saved(1), &A = node.saved(2), &B = node.saved(3),
                          &C = node.saved(4), &D = node.saved(5), &states = node.saved(7);
             const Tensor& h0 = node.saved(6);
             // Buffers for inputs that need no gradient are scratch (zeros).
             auto buffer = [&](size_t i, const Tensor& like) {
               if (!like.defined()) return Tensor();
               return gx[i].defined() ? gx[i] : Tensor::zeros(like.shape(), like.dtype(), like.device());
             };
             Grads gr{buffer(0, x), buffer(1, dt), buffer(2, A), buffer(3, B), buffer(4, C), buffer(5, D),
                      buffer(6, h0)};
             if (on_cuda(x)) {
#if ECHO_HAVE_CUDA
               const gpu::SsdDims gd{d.batch, d.T, d.H, d.P, d.G, d.N, d.Q};
               Tensor ws = Tensor::empty({std::max<int64_t>(1, gpu::ssd_backward_workspace_elements(gd))},
                                         x.dtype(), x.device());
               dispatch_floating(x.dtype(), kOp, [&](auto t) {
                 using Real = decltype(t);
                 gpu::ssd_scan_backward(gd, cptr<Real>(x), cptr<Real>(dt), cptr<Real>(A), cptr<Real>(B),
                                        cptr<Real>(C), cptr<Real>(D), cptr<Real>(states), cptr<Real>(gy[0]),
                                        cptr<Real>(gy[1]), ptr<Real>(gr.dx), ptr<Real>(gr.ddt), ptr<Real>(gr.dA),
                                        ptr<Real>(gr.dB), ptr<Real>(gr.dC), ptr<Real>(gr.dD), ptr<Real>(gr.dh0),
                                        ptr<Real>(ws));
               });
#endif
             } else {
               dispatch_floating(x.dtype(), kOp, [&](auto t) {
                 using Real = decltype(t);
                 backward_cpu<Real>(d, x, dt, A, B, C, D, states, gy[0], gy[1], gr);
               });
             }
           });
  }
  return {y, h_final};
}

Tensor ssd_step(const Tensor& x_t, const Tensor& dt_t, const Tensor& A, const Tensor& B_t, const Tensor& C_t,
                const Tensor& D, Tensor& state) {
  const char* op = "ssd_step";
  check_floating_same(op, {&x_t, &dt_t, &A, &B_t, &C_t, &D, &state}, /*cuda_float64=*/true);
  op_check(x_t.defined() && dt_t.defined() && A.defined() && B_t.defined() && C_t.defined() && state.defined(),
           op, "x_t, dt_t, A, B_t, C_t and state are required");
  check_rank(op, "x_t", x_t, 3);
  check_rank(op, "B_t", B_t, 3);
  const int64_t batch = x_t.size(0), H = x_t.size(1), P = x_t.size(2), G = B_t.size(1), N = B_t.size(2);
  check_shape(op, "dt_t", dt_t, {batch, H});
  check_shape(op, "A", A, {H});
  check_shape(op, "B_t", B_t, {batch, G, N});
  check_shape(op, "C_t", C_t, {batch, G, N});
  if (D.defined()) check_shape(op, "D", D, {H});
  check_shape(op, "state", state, {batch, H, P, N});
  op_check(G > 0 && H % G == 0, op,
           "the number of heads H=" + std::to_string(H) + " must be a multiple of the number of groups G=" +
               std::to_string(G));
  Tensor y = Tensor::empty({batch, H, P}, x_t.dtype(), x_t.device());
  if (on_cuda(x_t)) {
#if ECHO_HAVE_CUDA
    dispatch_floating(x_t.dtype(), op, [&](auto t) {
      using Real = decltype(t);
      gpu::ssd_step(cptr<Real>(x_t), cptr<Real>(dt_t), cptr<Real>(A), cptr<Real>(B_t), cptr<Real>(C_t),
                    cptr<Real>(D), ptr<Real>(state), ptr<Real>(y), batch, H, P, G, N);
    });
#else
    no_cuda_build(op);
#endif
  } else {
    dispatch_floating(x_t.dtype(), op, [&](auto t) {
      using Real = decltype(t);
      step_cpu<Real>(batch, H, P, G, N, cptr<Real>(x_t), cptr<Real>(dt_t), cptr<Real>(A), cptr<Real>(B_t),
                     cptr<Real>(C_t), cptr<Real>(D), ptr<Real>(state), ptr<Real>(y));
    });
  }
  state.bump_version();
  return y;
}

// ---- op runner ----------------------------------------------------------------------

RunnerOp runner_op_ssd_scan() {
  RunnerOp op;
  op.name = "ssd_scan";
  op.inputs = {"x", "dt", "A", "B", "C"};
  op.optional_inputs = {"D", "h0"};
  op.outputs = {"y", "h_final"};
  op.attr_defaults = {{"chunk_size", 64}};
  op.forward = [](const NamedTensors& in, const OpAttrs& attrs) {
    auto get = [&](const char* name, bool required) {
      auto it = in.find(name);
      if (it != in.end()) return it->second;
      if (required) op_error(kOp, std::string("missing input ") + name);
      return Tensor();
    };
    auto it = attrs.find("chunk_size");
    const double cs = it == attrs.end() ? 64.0 : it->second;
    op_check(cs >= 1 && cs == std::floor(cs) && cs <= 9.0e15, kOp,  // 9e15 < 2^53: the cast below is exact
             "chunk_size must be a positive integer, got " + std::to_string(cs));
    SsdResult r = ssd_scan(get("x", true), get("dt", true), get("A", true), get("B", true), get("C", true),
                           get("D", false), get("h0", false), static_cast<int64_t>(cs));
    return NamedTensors{{"y", r.y}, {"h_final", r.h_final}};
  };
  op.cases = [](Rng& rng, OpAttrs& attrs, int variant) {
    // variant 0: the gradcheck example; 1: several P and N tiles of the CUDA
    // kernels (64) with remainders, T % chunk ≠ 0; 2: chunk longer than T.
    struct Sizes { int64_t b, T, H, P, G, N, chunk; };
    const Sizes all[] = {{2, 19, 4, 3, 2, 5, 8}, {2, 130, 3, 70, 1, 65, 64}, {1, 45, 4, 16, 2, 16, 64}};
    if (variant > 2) return NamedTensors{};
    const Sizes z = all[variant];
    attrs["chunk_size"] = static_cast<double>(z.chunk);
    const int64_t b = z.b, T = z.T, H = z.H, P = z.P, G = z.G, N = z.N;
    // dt = softplus(z) > 0 and A = -exp(u) < 0, the ranges a Mamba-2 layer produces.
    std::vector<double> dt(b * T * H), A(H);
    for (auto& v : dt) { const double u = rng.normal(); v = u > 20 ? u : std::log1p(std::exp(u)); }
    for (auto& v : A) v = -std::exp(rng.uniform(-1.0, 1.0));
    return NamedTensors{{"x", randn({b, T, H, P}, rng, DType::F64)},
                        {"dt", Tensor::from_vector(dt, {b, T, H}, DType::F64)},
                        {"A", Tensor::from_vector(A, {H}, DType::F64)},
                        {"B", randn({b, T, G, N}, rng, DType::F64)},
                        {"C", randn({b, T, G, N}, rng, DType::F64)},
                        {"D", randn({H}, rng, DType::F64)},
                        {"h0", randn({b, H, P, N}, rng, DType::F64)}};
  };
  op.example = [cases = op.cases](Rng& rng, OpAttrs& attrs) { return cases(rng, attrs, 0); };
  return op;
}

}  // namespace echo
