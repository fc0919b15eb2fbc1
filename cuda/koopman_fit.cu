// Reading order: docs/ska.md → ops/reference/koopman_fit.cpp → ops/koopman_fit.cpp → this file.
//
// CUDA twin of ops/koopman_fit.cpp (spec §1.4, §4; docs/ska.md). The kernels are
// templated on the element type Real and instantiated for float (training) and
// double (the float64 finite-difference check of the CUDA backward, where float's
// rounding would drown the O(h²) error of the central difference); the streaming
// kernels run in float only.
// Each kernel is one phase of the CPU reference, with the same formulas in the
// same order; the per-operator linear algebra runs in one thread block with its
// r×r matrices in shared memory (r ≤ 64, P ≤ 128).
//
// Forward:
//   stats_prefix_kernel       one block per (batch·head, tile of 256 statistic entries of G | M | Cᵀ):
//                             each thread owns one entry, walks the chunks in order over tokens staged
//                             32 at a time in shared memory, and writes the exclusive prefix (chunk
//                             mode) or the total (prefix mode) — phases 1 and 2 fused;
//   operator_kernel           one block per operator: sym(G)+εI, Cholesky (+ retry), Wᵀ, power
//                             iteration, Fᵀ, Zᵀ and Rᵀ = Zᵀ Cᵀ (5 r² elements of shared memory);
//   readout_kernel            one block per (batch·head, chunk): Y = Q Rᵀ, Rᵀ staged in shared memory.
// Backward (α constant):
//   readout_backward_kernel   one block per operator: dRᵀ = Σ_t q_t dy_tᵀ over its queries;
//   operator_backward_kernel  one block per operator: dCᵀ, Φ, τ_j, the V/dW recurrence, dG, dM
//                             (6 r² elements of shared memory);
//   reverse_prefix_kernel     one thread per statistic entry: the adjoint of the exclusive prefix;
//   token_backward_kernel     one block per (batch·head, chunk), one warp per token: dq, dk, dv, dβ;
//   scalar_grads_kernel       one block: dγ and dcoef, reduced in a fixed order.
// Every output element is written by exactly one thread: no atomics, deterministic.
#include <cfloat>
#include <cmath>
#include <string>

#include "cuda/block_reduce.cuh"
#include "cuda/koopman_fit.cuh"

namespace echo::gpu {
namespace {

constexpr int kBlock = 256;      // threads per block (a power of two: block_sum)
constexpr int kTokenTile = 32;   // tokens staged per pass in stats_prefix_kernel

// ---- the element type ------------------------------------------------------------
// The machine epsilon and a quiet NaN of Real (numeric_limits in the CPU twin).
template <typename Real> __device__ inline Real machine_epsilon();
template <> __device__ inline float machine_epsilon<float>() { return FLT_EPSILON; }
template <> __device__ inline double machine_epsilon<double>() { return DBL_EPSILON; }
template <typename Real> __device__ inline Real quiet_nan();
template <> __device__ inline float quiet_nan<float>() { return __int_as_float(0x7fc00000); }
template <> __device__ inline double quiet_nan<double>() { return __longlong_as_double(0x7ff8000000000000LL); }

// The block's dynamic shared memory as Real. nvcc allows one type per name of an
// extern __shared__ array across all instantiations, so it is declared once, as
// double (8-byte aligned, enough for either type), and viewed as Real.
template <typename Real> __device__ inline Real* dynamic_shared() {
  ECHO_DYNAMIC_SHARED(double, koopman_shared);
  return reinterpret_cast<Real*>(koopman_shared);
}

// ---- geometry (Geometry in ops/koopman_fit.cpp) ---------------------------------
__device__ inline int chunk_begin(const KoopmanDims& d, int c) { return c * d.S; }
__device__ inline int chunk_end(const KoopmanDims& d, int c) { return min(d.T, (c + 1) * d.S); }
__device__ inline int op_of_chunk(const KoopmanDims& d, int c) { return d.prefix ? 0 : c; }
__device__ inline bool empty_op(const KoopmanDims& d, int o) { return !d.prefix && o == 0; }
__device__ inline int query_begin(const KoopmanDims& d, int o) { return d.prefix ? 0 : chunk_begin(d, o); }
__device__ inline int query_end(const KoopmanDims& d, int o) { return d.prefix ? d.T : chunk_end(d, o); }
// Row of token t of (n, h) in a [b,T,H,·] tensor.
__device__ inline int64_t row_of(const KoopmanDims& d, int n, int t, int h) {
  return ((int64_t)n * d.T + t) * d.H + h;
}
// w_t = β_t m_t and l_t = β_t m_t m_{t-1} (no pair at t = 0).
template <typename Real>
__device__ inline Real token_weight(const KoopmanDims& d, const Real* beta, const Real* mask, int n, int t, int h) {
  Real w = beta ? beta[row_of(d, n, t, h)] : Real(1);
  if (mask) w *= mask[(int64_t)n * d.T + t];
  return w;
}
template <typename Real>
__device__ inline Real lag_weight(const KoopmanDims& d, const Real* beta, const Real* mask, int n, int t, int h) {
  if (t <= 0 || t >= d.T) return Real(0);
  Real l = token_weight(d, beta, mask, n, t, h);
  if (mask) l *= mask[(int64_t)n * d.T + t - 1];
  return l;
}

// ---- block-wide dense helpers: every thread of the block calls them; each ends
// with a barrier, so its output is visible to the whole block --------------------

// C[m×n] (+)= alpha · Σ_l A(i,l) B(l,j), A(i,l) = A[i·sai + l·sal], B(l,j) = B[l·sbl + j·sbj].
template <typename Real>
__device__ void block_gemm(int m, int n, int kd, Real alpha, const Real* A, int sai, int sal, const Real* B,
                           int sbl, int sbj, Real* C, int ldc, bool accumulate) {
  for (int e = threadIdx.x; e < m * n; e += blockDim.x) {
    const int i = e / n, j = e % n;
    Real s = Real(0);
    for (int l = 0; l < kd; ++l) s += A[i * sai + l * sal] * B[l * sbl + j * sbj];
    C[i * ldc + j] = accumulate ? C[i * ldc + j] + alpha * s : alpha * s;
  }
  __syncthreads();
}
template <typename Real>
__device__ void block_transpose(int rows, int cols, const Real* A, Real* B) {
  for (int e = threadIdx.x; e < rows * cols; e += blockDim.x) {
    const int i = e / cols, j = e % cols;
    B[j * rows + i] = A[e];
  }
  __syncthreads();
}
template <typename Real>
__device__ void block_copy(int n, const Real* x, Real* y) {
  for (int e = threadIdx.x; e < n; e += blockDim.x) y[e] = x[e];
  __syncthreads();
}
template <typename Real>
__device__ void block_fill(int n, Real value, Real* y) {
  for (int e = threadIdx.x; e < n; e += blockDim.x) y[e] = value;
  __syncthreads();
}
template <typename Real>
__device__ void block_identity(int r, Real* y) {
  for (int e = threadIdx.x; e < r * r; e += blockDim.x) y[e] = (e / r == e % r) ? Real(1) : Real(0);
  __syncthreads();
}
template <typename Real>
__device__ void block_scale(int n, Real a, const Real* x, Real* y) {  // y = a x
  for (int e = threadIdx.x; e < n; e += blockDim.x) y[e] = a * x[e];
  __syncthreads();
}
template <typename Real>
__device__ void block_axpy(int n, Real a, const Real* x, Real* y) {  // y += a x
  for (int e = threadIdx.x; e < n; e += blockDim.x) y[e] += a * x[e];
  __syncthreads();
}
// tr(A B) = Σ_ab A[b,a] B[a,b] (= ⟨Aᵀ, B⟩).
template <typename Real>
__device__ Real block_trace_of_product(int r, const Real* A, const Real* B, Real* red) {
  Real s = Real(0);
  for (int e = threadIdx.x; e < r * r; e += blockDim.x) {
    const int a = e / r, b = e % r;
    s += A[b * r + a] * B[a * r + b];
  }
  return block_sum(s, red);
}

// X[r×n] ← L⁻¹ X: one thread per column, the CPU's forward substitution.
template <typename Real>
__device__ void block_solve_lower(int r, int n, const Real* L, Real* X, int ldx) {
  for (int j = threadIdx.x; j < n; j += blockDim.x)
    for (int i = 0; i < r; ++i) {
      Real s = X[i * ldx + j];
      for (int k = 0; k < i; ++k) s -= L[i * r + k] * X[k * ldx + j];
      X[i * ldx + j] = s / L[i * r + i];
    }
  __syncthreads();
}
// X[r×n] ← L⁻ᵀ X (back substitution).
template <typename Real>
__device__ void block_solve_lower_t(int r, int n, const Real* L, Real* X, int ldx) {
  for (int j = threadIdx.x; j < n; j += blockDim.x)
    for (int i = r - 1; i >= 0; --i) {
      Real s = X[i * ldx + j];
      for (int k = i + 1; k < r; ++k) s -= L[k * r + i] * X[k * ldx + j];
      X[i * ldx + j] = s / L[i * r + i];
    }
  __syncthreads();
}
// X ← (L⁻¹ X L⁻ᵀ)ᵀ and X ← (L⁻ᵀ X L⁻¹)ᵀ: two solves around a transpose (tmp: r×r).
template <typename Real>
__device__ void block_sandwich_lower(int r, const Real* L, Real* X, Real* tmp) {
  block_solve_lower(r, r, L, X, r);
  block_transpose(r, r, X, tmp);
  block_solve_lower(r, r, L, tmp, r);
  block_copy(r * r, tmp, X);
}
template <typename Real>
__device__ void block_sandwich_lower_t(int r, const Real* L, Real* X, Real* tmp) {
  block_solve_lower_t(r, r, L, X, r);
  block_transpose(r, r, X, tmp);
  block_solve_lower_t(r, r, L, tmp, r);
  block_copy(r * r, tmp, X);
}

// Lower Cholesky factor of A + jitter·I, column by column; false (block-uniform)
// when a pivot is not above ε·max_i(A_ii + jitter), ε the machine epsilon of Real
// (the CPU twin's numeric_limits<T>::epsilon()). scal: 2 elements.
template <typename Real>
__device__ bool block_cholesky(int r, const Real* A, Real jitter, Real* L, Real* scal) {
  __syncthreads();  // earlier readers of scal are done
  for (int e = threadIdx.x; e < r * r; e += blockDim.x) L[e] = Real(0);
  if (threadIdx.x == 0) {
    Real max_diag = Real(0);
    for (int i = 0; i < r; ++i) max_diag = real_max(max_diag, A[i * r + i] + jitter);
    scal[0] = machine_epsilon<Real>() * max_diag;
    scal[1] = Real(1);
  }
  __syncthreads();
  const Real tol = scal[0];
  for (int j = 0; j < r; ++j) {
    if (threadIdx.x == 0) {
      Real dot = Real(0);
      for (int k = 0; k < j; ++k) dot += L[j * r + k] * L[j * r + k];
      Real s = A[j * r + j] - dot;
      s += jitter;
      if (!(s > tol)) scal[1] = Real(0);  // also catches NaN
      else L[j * r + j] = real_sqrt(s);
    }
    __syncthreads();
    if (scal[1] == Real(0)) return false;
    for (int i = j + 1 + threadIdx.x; i < r; i += blockDim.x) {
      Real dot = Real(0);
      for (int k = 0; k < j; ++k) dot += L[i * r + k] * L[j * r + k];
      L[i * r + j] = (A[i * r + j] - dot) / L[j * r + j];
    }
    __syncthreads();
  }
  return true;
}

// σ̂ by the spec's power iteration on W (given Wᵀ), in warp 0: v₀ = 𝟙/√r; repeat
// u = Wv/max(‖Wv‖,1e-8), v = Wᵀu/max(‖Wᵀu‖,1e-8); σ̂ = ‖Wv‖. u, v: r elements each.
template <typename Real>
__device__ Real block_power_sigma(int r, const Real* Wt, int iters, Real* u, Real* v, Real* scal) {
  if (threadIdx.x < 32) {
    const int lane = threadIdx.x;
    for (int i = lane; i < r; i += 32) v[i] = Real(1) / real_sqrt((Real)r);
    __syncwarp();
    for (int it = 0; it < iters; ++it) {
      Real part = Real(0);
      for (int i = lane; i < r; i += 32) {  // u = W v = Σ_j v_j Wᵀ[j,:]
        Real s = Real(0);
        for (int j = 0; j < r; ++j) s += v[j] * Wt[j * r + i];
        u[i] = s;
        part += s * s;
      }
      const Real nu = real_max(real_sqrt(warp_sum(part)), Real(1e-8));
      for (int i = lane; i < r; i += 32) u[i] /= nu;
      __syncwarp();
      part = Real(0);
      for (int i = lane; i < r; i += 32) {  // v = Wᵀ u
        Real s = Real(0);
        for (int j = 0; j < r; ++j) s += Wt[i * r + j] * u[j];
        v[i] = s;
        part += s * s;
      }
      const Real nv = real_max(real_sqrt(warp_sum(part)), Real(1e-8));
      for (int i = lane; i < r; i += 32) v[i] /= nv;
      __syncwarp();
    }
    Real part = Real(0);
    for (int i = lane; i < r; i += 32) {
      Real s = Real(0);
      for (int j = 0; j < r; ++j) s += v[j] * Wt[j * r + i];
      part += s * s;
    }
    const Real sigma = real_sqrt(warp_sum(part));
    if (lane == 0) scal[2] = sigma;
  }
  __syncthreads();
  return scal[2];
}

template <typename Real>
__device__ inline Real filter_coefficient(const Real* coef, int K, int j) {
  return coef ? coef[j] : (j == K ? Real(1) : Real(0));
}

// ---- forward kernels ------------------------------------------------------------

// Phases 1+2: entry e of (G | M | Cᵀ) of (n, h), accumulated chunk by chunk.
template <typename Real>
__global__ void stats_prefix_kernel(KoopmanDims d, const Real* k, const Real* v, const Real* beta,
                                    const Real* mask, Real* G, Real* M, Real* Ct, int tiles) {
  Real* const smem = dynamic_shared<Real>();
  const int r = d.r, P = d.P, rr = r * r, rP = r * P, E = 2 * rr + rP;
  const int bh = blockIdx.x / tiles, tile = blockIdx.x % tiles;
  const int n = bh / d.H, h = bh % d.H;
  const int e = tile * blockDim.x + threadIdx.x;
  const bool owner = e < E;
  // Which entry: 0 G(i,j), 1 M(i,j), 2 Cᵀ(i,j=p).
  int kind = 0, i = 0, j = 0, size = rr, offset = 0;
  Real* out = G;
  if (owner) {
    if (e < rr) {
      kind = 0, i = e / r, j = e % r, offset = e, out = G, size = rr;
    } else if (e < 2 * rr) {
      kind = 1, i = (e - rr) / r, j = (e - rr) % r, offset = e - rr, out = M, size = rr;
    } else {
      kind = 2, i = (e - 2 * rr) / P, j = (e - 2 * rr) % P, offset = e - 2 * rr, out = Ct, size = rP;
    }
  }
  Real* krows = smem;                           // [(kTokenTile+1) × r]: k_{s0-1}, k_{s0}, ...
  Real* vrows = krows + (kTokenTile + 1) * r;   // [kTokenTile × P]
  Real* ws = vrows + kTokenTile * P;            // w_t
  Real* ls = ws + kTokenTile;                   // l_t
  Real running = Real(0);
  for (int c = 0; c < d.n_chunks; ++c) {
    const int t0 = chunk_begin(d, c), t1 = chunk_end(d, c);
    Real chunk_sum = Real(0);
    for (int s0 = t0; s0 < t1; s0 += kTokenTile) {
      const int len = min(kTokenTile, t1 - s0);
      __syncthreads();  // the previous tile is consumed
      for (int x = threadIdx.x; x < (len + 1) * r; x += blockDim.x) {
        const int row = x / r, col = x % r, t = s0 - 1 + row;
        krows[x] = t >= 0 ? k[row_of(d, n, t, h) * r + col] : Real(0);
      }
      for (int x = threadIdx.x; x < len * P; x += blockDim.x) {
        const int row = x / P, col = x % P;
        vrows[x] = v[row_of(d, n, s0 + row, h) * P + col];
      }
      for (int x = threadIdx.x; x < len; x += blockDim.x) {
        ws[x] = token_weight(d, beta, mask, n, s0 + x, h);
        ls[x] = lag_weight(d, beta, mask, n, s0 + x, h);
      }
      __syncthreads();
      if (owner)
        for (int s = 0; s < len; ++s) {
          const Real* kt = krows + (s + 1) * r;
          if (kind == 0) chunk_sum += ws[s] * kt[i] * kt[j];                 // ΔG
          else if (kind == 1) chunk_sum += ls[s] * kt[i] * krows[s * r + j];  // ΔM (k_{t-1} one row up)
          else chunk_sum += ws[s] * kt[i] * vrows[s * P + j];                 // ΔCᵀ
        }
    }
    if (owner && !d.prefix) out[((int64_t)bh * d.n_ops + c) * size + offset] = running;  // exclusive prefix
    running += chunk_sum;
  }
  if (owner && d.prefix) out[(int64_t)bh * size + offset] = running;
}

template <typename Real>
struct OperatorArgs {
  int r, P, K, iters, H, n_ops, skip_first;
  Real ridge;
  const Real* gamma;  // [1]
  const Real* coef;   // [H,K+1] or null
  const Real *G, *M, *Ct;
  Real *L, *Wt, *Zt, *Rt, *sigma, *alpha;
};

// Phase 3: one operator (build_operator in ops/koopman_fit.cpp).
template <typename Real>
__global__ void operator_kernel(OperatorArgs<Real> a) {
  Real* const smem = dynamic_shared<Real>();
  const int r = a.r, P = a.P, rr = r * r, rP = r * P;
  const int64_t idx = blockIdx.x;  // (n·H + h)·n_ops + o
  const int o = (int)(idx % a.n_ops), h = (int)((idx / a.n_ops) % a.H);
  Real* Lg = a.L + idx * rr;
  Real* Wtg = a.Wt + idx * rr;
  Real* Ztg = a.Zt + idx * rr;
  Real* Rtg = a.Rt + idx * rP;
  if (a.skip_first && o == 0) {  // chunk 0 reads empty statistics: y = 0 there
    for (int e = threadIdx.x; e < rr; e += blockDim.x) Lg[e] = Wtg[e] = Ztg[e] = Real(0);
    for (int e = threadIdx.x; e < rP; e += blockDim.x) Rtg[e] = Real(0);
    if (threadIdx.x == 0) a.sigma[idx] = Real(0), a.alpha[idx] = Real(1);
    return;
  }
  Real* Ls = smem;
  Real* Wts = Ls + rr;
  Real* A = Wts + rr;   // sym(G) + εI, later a matrix power
  Real* F = A + rr;     // Fᵀ = Σ_j c_j s^j (Wᵀ)^j, later Z
  Real* tmp = F + rr;
  Real* u = tmp + rr;   // kKoopmanMaxRank elements
  Real* v = u + kKoopmanMaxRank;
  Real* scal = v + kKoopmanMaxRank;
  const Real* coef = a.coef ? a.coef + h * (a.K + 1) : nullptr;

  const Real* G = a.G + idx * rr;
  for (int e = threadIdx.x; e < rr; e += blockDim.x) {
    const int i = e / r, j = e % r;
    Real x = (G[i * r + j] + G[j * r + i]) / Real(2);
    if (i == j) x += a.ridge;
    A[e] = x;
  }
  __syncthreads();
  // Spec: Cholesky, else G + 1e-4·I; beyond the spec the jitter grows tenfold.
  bool ok = block_cholesky(r, A, Real(0), Ls, scal);
  Real jitter = Real(1e-4);
  for (int attempt = 0; !ok && attempt < 10; ++attempt, jitter *= Real(10)) ok = block_cholesky(r, A, jitter, Ls, scal);
  if (!ok) block_fill(rr, quiet_nan<Real>(), Ls);

  block_copy(rr, a.M + idx * rr, Wts);
  block_sandwich_lower(r, Ls, Wts, tmp);  // Wᵀ = L⁻¹ Mᵀ L⁻ᵀ

  const Real s_hat = block_power_sigma(r, Wts, a.iters, u, v, scal);
  const Real alpha = Real(1) / real_max(Real(1), s_hat);
  const Real s = a.gamma[0] * alpha;

  Real* power = A;
  Real* next = tmp;
  block_identity(r, power);
  block_fill(rr, Real(0), F);
  Real s_j = Real(1);
  for (int j = 0; j <= a.K; ++j) {
    if (j == 1) {
      block_copy(rr, Wts, power);
      s_j = s;
    } else if (j > 1) {
      block_gemm(r, r, r, Real(1), power, r, 1, Wts, r, 1, next, r, false);
      Real* t = power;
      power = next;
      next = t;
      s_j *= s;
    }
    const Real c = filter_coefficient(coef, a.K, j);
    if (c != Real(0)) block_axpy(rr, c * s_j, power, F);
  }
  block_sandwich_lower_t(r, Ls, F, next);  // Z = L⁻ᵀ F L⁻¹
  block_transpose(r, r, F, next);          // Zᵀ

  block_copy(rr, Ls, Lg);
  block_copy(rr, Wts, Wtg);
  block_copy(rr, next, Ztg);
  block_gemm(r, P, r, Real(1), next, r, 1, a.Ct + idx * rP, P, 1, Rtg, P, false);  // Rᵀ = Zᵀ Cᵀ
  if (threadIdx.x == 0) a.sigma[idx] = s_hat, a.alpha[idx] = alpha;
}

// Phase 4: Y = Q Rᵀ for one chunk's queries.
template <typename Real>
__global__ void readout_kernel(KoopmanDims d, const Real* q, const Real* Rt, Real* y) {
  Real* const smem = dynamic_shared<Real>();  // Rᵀ [r×P]
  const int r = d.r, P = d.P, rP = r * P;
  const int bh = blockIdx.x / d.n_chunks, c = blockIdx.x % d.n_chunks;
  const int n = bh / d.H, h = bh % d.H;
  const int t0 = chunk_begin(d, c), len = chunk_end(d, c) - t0, o = op_of_chunk(d, c);
  if (empty_op(d, o)) {
    for (int e = threadIdx.x; e < len * P; e += blockDim.x) y[row_of(d, n, t0 + e / P, h) * P + e % P] = Real(0);
    return;
  }
  const Real* R = Rt + ((int64_t)bh * d.n_ops + o) * rP;
  for (int e = threadIdx.x; e < rP; e += blockDim.x) smem[e] = R[e];
  __syncthreads();
  for (int e = threadIdx.x; e < len * P; e += blockDim.x) {
    const int t = t0 + e / P, p = e % P;
    const Real* qt = q + row_of(d, n, t, h) * r;
    Real s = Real(0);
    for (int i = 0; i < r; ++i) s += qt[i] * smem[i * P + p];
    y[row_of(d, n, t, h) * P + p] = s;
  }
}

// ---- backward kernels -----------------------------------------------------------

// dRᵀ[i,p] = Σ_t q_t[i] dy_t[p] over operator o's queries.
template <typename Real>
__global__ void readout_backward_kernel(KoopmanDims d, const Real* q, const Real* dy, Real* dRt) {
  const int r = d.r, P = d.P, rP = r * P;
  const int64_t idx = blockIdx.x;
  const int o = (int)(idx % d.n_ops), bh = (int)(idx / d.n_ops), n = bh / d.H, h = bh % d.H;
  Real* dR = dRt + idx * rP;
  if (empty_op(d, o)) {
    for (int e = threadIdx.x; e < rP; e += blockDim.x) dR[e] = Real(0);
    return;
  }
  const int t0 = query_begin(d, o), t1 = query_end(d, o);
  for (int e = threadIdx.x; e < rP; e += blockDim.x) {
    const int i = e / P, p = e % P;
    Real s = Real(0);
    for (int t = t0; t < t1; ++t) s += q[row_of(d, n, t, h) * r + i] * dy[row_of(d, n, t, h) * P + p];
    dR[e] = s;
  }
}

template <typename Real>
struct OperatorBackwardArgs {
  int r, P, K, H, n_ops, skip_first;
  const Real* gamma;
  const Real* coef;
  const Real *L, *Wt, *Zt, *Ct, *alpha, *dRt;
  Real *dG, *dM, *dCt, *ds, *dcoef_op;  // dcoef_op may be null
};

// operator_backward in ops/koopman_fit.cpp.
template <typename Real>
__global__ void operator_backward_kernel(OperatorBackwardArgs<Real> a) {
  Real* const smem = dynamic_shared<Real>();
  const int r = a.r, P = a.P, rr = r * r, rP = r * P, K = a.K;
  const int64_t idx = blockIdx.x;
  const int o = (int)(idx % a.n_ops), h = (int)((idx / a.n_ops) % a.H);
  Real* dGg = a.dG + idx * rr;
  Real* dMg = a.dM + idx * rr;
  Real* dCtg = a.dCt + idx * rP;
  if (a.skip_first && o == 0) {  // built from no tokens: nothing to send back
    for (int e = threadIdx.x; e < rr; e += blockDim.x) dGg[e] = dMg[e] = Real(0);
    for (int e = threadIdx.x; e < rP; e += blockDim.x) dCtg[e] = Real(0);
    if (threadIdx.x == 0) a.ds[idx] = Real(0);
    if (a.dcoef_op)
      for (int j = threadIdx.x; j <= K; j += blockDim.x) a.dcoef_op[idx * (K + 1) + j] = Real(0);
    return;
  }
  Real* Ls = smem;
  Real* Wts = Ls + rr;
  Real* Phi = Wts + rr;
  Real* V = Phi + rr;
  Real* acc = V + rr;
  Real* tmp = acc + rr;
  Real* red = tmp + rr;  // kBlock elements
  const Real* coef = a.coef ? a.coef + h * (K + 1) : nullptr;
  const Real s = a.gamma[0] * a.alpha[idx];
  const Real* Ztg = a.Zt + idx * rr;
  const Real* Ctg = a.Ct + idx * rP;
  const Real* dRtg = a.dRt + idx * rP;
  block_copy(rr, a.L + idx * rr, Ls);
  block_copy(rr, a.Wt + idx * rr, Wts);

  // dCᵀ = Z dRᵀ (Z(i,l) = Zᵀ[l,i]).
  block_gemm(r, P, r, Real(1), Ztg, 1, r, dRtg, P, 1, dCtg, P, false);
  // Φ = L⁻¹ (Cᵀ dR) L⁻ᵀ; (Cᵀ dR)[i,j] = Σ_p Cᵀ[i,p] dRᵀ[j,p].
  block_gemm(r, r, P, Real(1), Ctg, P, 1, dRtg, 1, P, Phi, r, false);
  block_sandwich_lower(r, Ls, Phi, tmp);  // Φᵀ
  block_transpose(r, r, Phi, tmp);
  block_copy(rr, tmp, Phi);

  // τ_j = ⟨W^j, Φ⟩: dc_j = s^j τ_j, ds = Σ_j j c_j s^{j-1} τ_j.
  Real* power = V;
  Real* next = acc;
  block_identity(r, power);
  Real ds = Real(0), s_j = Real(1), s_j_minus_1 = Real(0);
  for (int j = 0; j <= K; ++j) {
    if (j == 1) {
      block_copy(rr, Wts, power);
    } else if (j > 1) {
      block_gemm(r, r, r, Real(1), power, r, 1, Wts, r, 1, next, r, false);
      Real* t = power;
      power = next;
      next = t;
    }
    if (j > 0) {
      s_j_minus_1 = s_j;
      s_j *= s;
    }
    const Real tau = block_trace_of_product(r, power, Phi, red);
    if (a.dcoef_op && threadIdx.x == 0) a.dcoef_op[idx * (K + 1) + j] = s_j * tau;
    if (j >= 1) ds += (Real)j * filter_coefficient(coef, K, j) * s_j_minus_1 * tau;
  }
  if (threadIdx.x == 0) a.ds[idx] = ds;

  // Downward: V_K = c_K Φ, V_{i-1} = s Wᵀ V_i + c_{i-1} Φ; acc (dW) by Horner.
  Real* Vb = V;
  Real* accb = acc;
  Real* tb = tmp;
  Real s_K = Real(1);
  for (int j = 0; j < K; ++j) s_K *= s;
  block_scale(rr, filter_coefficient(coef, K, K), Phi, Vb);
  block_scale(rr, K >= 1 ? s_K : Real(0), Vb, accb);
  for (int i = K - 1; i >= 0; --i) {
    block_scale(rr, filter_coefficient(coef, K, i), Phi, tb);
    block_gemm(r, r, r, s, Wts, r, 1, Vb, r, 1, tb, r, true);  // V_i = s Wᵀ V_{i+1} + c_i Φ
    Real* t = Vb;
    Vb = tb;
    tb = t;
    if (i >= 1) {
      Real s_i = Real(1);
      for (int j = 0; j < i; ++j) s_i *= s;
      block_scale(rr, s_i, Vb, tb);
      block_gemm(r, r, r, Real(1), accb, r, 1, Wts, r, 1, tb, r, true);  // acc ← acc Wᵀ + s^i V_i
      t = accb;
      accb = tb;
      tb = t;
    }
  }
  // dG_w = −(V_0 + dW Wᵀ) → dG = sym(L⁻ᵀ dG_w L⁻¹); dM = L⁻ᵀ dW L⁻¹.
  block_scale(rr, Real(-1), Vb, tb);
  block_gemm(r, r, r, Real(-1), accb, r, 1, Wts, r, 1, tb, r, true);
  block_sandwich_lower_t(r, Ls, tb, Phi);
  for (int e = threadIdx.x; e < rr; e += blockDim.x) {
    const int i = e / r, j = e % r;
    dGg[e] = (tb[i * r + j] + tb[j * r + i]) / Real(2);
  }
  block_sandwich_lower_t(r, Ls, accb, Phi);  // dMᵀ
  block_transpose(r, r, accb, dMg);
}

// x_c ← Σ_{c'>c} x_{c'} for one statistic entry of (n, h) (chunk mode).
template <typename Real>
__global__ void reverse_prefix_kernel(KoopmanDims d, Real* dG, Real* dM, Real* dCt, int tiles) {
  const int r = d.r, P = d.P, rr = r * r, rP = r * P, E = 2 * rr + rP;
  const int bh = blockIdx.x / tiles, e = (blockIdx.x % tiles) * blockDim.x + threadIdx.x;
  if (e >= E) return;
  Real* base = e < rr ? dG : (e < 2 * rr ? dM : dCt);
  const int size = e < 2 * rr ? rr : rP;
  const int offset = e < rr ? e : (e < 2 * rr ? e - rr : e - 2 * rr);
  Real run = Real(0);
  for (int c = d.n_ops - 1; c >= 0; --c) {
    Real* x = base + ((int64_t)bh * d.n_ops + c) * size + offset;
    const Real value = *x;
    *x = run;
    run += value;
  }
}

template <typename Real>
struct TokenArgs {
  KoopmanDims d;
  const Real *k, *v, *beta, *mask, *Rt, *dy, *dG, *dM, *dCt;
  int need_stats;
  Real *dq, *dk, *dv, *dbeta;  // any may be null
};

// chunk_token_backward in ops/koopman_fit.cpp; lane ℓ owns rows i = ℓ, ℓ+32 and values p = ℓ + 32m.
template <typename Real>
__global__ void token_backward_kernel(TokenArgs<Real> a) {
  const KoopmanDims& d = a.d;
  const int r = d.r, P = d.P, rr = r * r, rP = r * P;
  const int bh = blockIdx.x / d.n_chunks, c = blockIdx.x % d.n_chunks, n = bh / d.H, h = bh % d.H;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, n_warps = blockDim.x / 32;
  const int t0 = chunk_begin(d, c), t1 = chunk_end(d, c), o = op_of_chunk(d, c);
  const Real* R = empty_op(d, o) ? nullptr : a.Rt + ((int64_t)bh * d.n_ops + o) * rP;
  const bool has_stats = a.need_stats && (d.prefix || c + 1 < d.n_chunks);  // the last chunk feeds no operator
  const int s_idx = op_of_chunk(d, c), s_next = d.prefix ? 0 : c + 1;
  const Real* dGc = a.dG + ((int64_t)bh * d.n_ops + s_idx) * rr;
  const Real* dMc = a.dM + ((int64_t)bh * d.n_ops + s_idx) * rr;
  const Real* dCtc = a.dCt + ((int64_t)bh * d.n_ops + s_idx) * rP;
  const Real* dM_next = has_stats && s_next < d.n_ops ? a.dM + ((int64_t)bh * d.n_ops + s_next) * rr : nullptr;

  for (int t = t0 + warp; t < t1; t += n_warps) {
    const int64_t rk = row_of(d, n, t, h) * r, rv = row_of(d, n, t, h) * P;
    if (a.dq && R)  // dq_t += R ᵀdy_t
      for (int i = lane; i < r; i += 32) {
        Real s = Real(0);
        for (int p = 0; p < P; ++p) s += a.dy[rv + p] * R[i * P + p];
        a.dq[rk + i] += s;
      }
    if (!has_stats || !(a.dk || a.dv || a.dbeta)) continue;  // warp-uniform
    const Real m = a.mask ? a.mask[(int64_t)n * d.T + t] : Real(1);
    const Real m_prev = t == 0 ? Real(0) : (a.mask ? a.mask[(int64_t)n * d.T + t - 1] : Real(1));
    const Real w = token_weight(d, a.beta, a.mask, n, t, h), l = lag_weight(d, a.beta, a.mask, n, t, h);
    const Real l_next = lag_weight(d, a.beta, a.mask, n, t + 1, h);
    const Real* kt = a.k + rk;
    const Real* vt = a.v + rv;
    const Real* k_prev = t > 0 ? a.k + row_of(d, n, t - 1, h) * r : nullptr;
    const Real* k_next = t + 1 < d.T ? a.k + row_of(d, n, t + 1, h) * r : nullptr;
    const Real* dM_pair = t + 1 < t1 ? dMc : dM_next;  // the chunk holding the pair (t+1, t)
    Real beta_part = Real(0);
    for (int i = lane; i < r; i += 32) {
      Real ga = Real(0), gb = Real(0), ge = Real(0), gf = Real(0);
      for (int j = 0; j < r; ++j) ga += kt[j] * dGc[j * r + i];        // (k_tᵀ dG)_i
      for (int p = 0; p < P; ++p) gb += vt[p] * dCtc[i * P + p];       // (v_tᵀ dC)_i
      if (k_prev)
        for (int j = 0; j < r; ++j) ge += k_prev[j] * dMc[i * r + j];  // (dM k_{t-1})_i
      if (k_next && dM_pair)
        for (int j = 0; j < r; ++j) gf += k_next[j] * dM_pair[j * r + i];  // (dMᵀ k_{t+1})_i
      if (a.dk) a.dk[rk + i] += Real(2) * w * ga + w * gb + l * ge + l_next * gf;
      beta_part += m * (kt[i] * ga + kt[i] * gb) + m * m_prev * kt[i] * ge;
    }
    if (a.dbeta) {
      const Real total = warp_sum(beta_part);
      if (lane == 0) a.dbeta[row_of(d, n, t, h)] += total;
    }
    if (a.dv)
      for (int p = lane; p < P; p += 32) {
        Real g = Real(0);
        for (int i = 0; i < r; ++i) g += kt[i] * dCtc[i * P + p];
        a.dv[rv + p] += w * g;
      }
  }
}

// dγ += Σ α ds; dcoef[h,j] += Σ_{n,o} dc_j, both in a fixed order.
template <typename Real>
__global__ void scalar_grads_kernel(int b, int H, int n_ops, int K, const Real* alpha, const Real* ds,
                                    const Real* dcoef_op, Real* dgamma, Real* dcoef) {
  ECHO_SHARED(Real, red, [kBlock]);
  if (dgamma) {
    const int count = b * H * n_ops;
    Real part = Real(0);
    for (int idx = threadIdx.x; idx < count; idx += blockDim.x) part += alpha[idx] * ds[idx];
    const Real total = block_sum(part, red);
    if (threadIdx.x == 0) dgamma[0] += total;
  }
  if (dcoef)
    for (int e = threadIdx.x; e < H * (K + 1); e += blockDim.x) {
      const int h = e / (K + 1), j = e % (K + 1);
      Real total = Real(0);
      for (int n = 0; n < b; ++n)
        for (int o = 0; o < n_ops; ++o) total += dcoef_op[(((int64_t)n * H + h) * n_ops + o) * (K + 1) + j];
      dcoef[e] += total;
    }
}

// ---- streaming ------------------------------------------------------------------

// y = R q_t, then the token joins the running statistics (KoopmanStream::step).
__global__ void stream_step_kernel(int r, int P, const float* k, const float* q, const float* v, const float* beta,
                                   const float* Rt, float* Gc, float* Mc, float* Ctc, float* prev_k, int has_prev,
                                   float* y) {
  const int bh = blockIdx.x, rr = r * r, rP = r * P;
  const float* kt = k + (int64_t)bh * r;
  const float* qt = q + (int64_t)bh * r;
  const float* vt = v + (int64_t)bh * P;
  const float* R = Rt + (int64_t)bh * rP;
  float* pk = prev_k + (int64_t)bh * r;
  for (int p = threadIdx.x; p < P; p += blockDim.x) {
    float s = 0.f;
    for (int i = 0; i < r; ++i) s += qt[i] * R[i * P + p];
    y[(int64_t)bh * P + p] = s;
  }
  const float w = beta ? beta[bh] : 1.f;
  for (int e = threadIdx.x; e < rr; e += blockDim.x) {
    const int i = e / r, j = e % r;
    Gc[(int64_t)bh * rr + e] += w * kt[i] * kt[j];
    if (has_prev) Mc[(int64_t)bh * rr + e] += w * kt[i] * pk[j];
  }
  for (int e = threadIdx.x; e < rP; e += blockDim.x) {
    const int i = e / P, p = e % P;
    Ctc[(int64_t)bh * rP + e] += w * kt[i] * vt[p];
  }
  __syncthreads();  // every reader of the previous key is done
  for (int i = threadIdx.x; i < r; i += blockDim.x) pk[i] = kt[i];
}

// committed += running; running = 0.
__global__ void stream_merge_kernel(int64_t n_rr, int64_t n_rP, float* G, float* M, float* Ct, float* Gc, float* Mc,
                                    float* Ctc) {
  ECHO_GRID_STRIDE(e, n_rr) {
    G[e] += Gc[e];
    M[e] += Mc[e];
    Gc[e] = 0.f;
    Mc[e] = 0.f;
  }
  ECHO_GRID_STRIDE(e, n_rP) {
    Ct[e] += Ctc[e];
    Ctc[e] = 0.f;
  }
}

// ---- launch helpers -------------------------------------------------------------
void check_limits(int r, int P) {
  if (r < 1 || r > kKoopmanMaxRank || P < 1 || P > kKoopmanMaxValue)
    throw std::runtime_error("koopman_fit: the CUDA kernels need 1 <= r <= " + std::to_string(kKoopmanMaxRank) +
                             " and 1 <= P <= " + std::to_string(kKoopmanMaxValue) + ", got r=" + std::to_string(r) +
                             " P=" + std::to_string(P));
}
// Above 48 KB a kernel's dynamic shared memory needs an opt-in (a macro: the
// attribute call must name the kernel itself, which the emulated device keys on).
// In float only the operator kernels can get there; in double, at r = 64 and
// P = 128, the statistics tiles (49 KB) and the readout's Rᵀ (64 KB) do too.
#define ECHO_ALLOW_SHARED_MEMORY(kernel, bytes)                                                             \
  do {                                                                                                     \
    if ((bytes) > 48 * 1024)                                                                               \
      check_cuda(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)(bytes)), \
                 "koopman_fit: shared memory opt-in");                                                     \
  } while (0)
// Dynamic shared memory in bytes. At r = 64 in double the operator kernels take
// 161 KB (forward) and 194 KB (backward), within sm_90's 227 KB per block.
template <typename Real> size_t operator_smem(int r) {
  return (5 * (size_t)r * r + 2 * kKoopmanMaxRank + 8) * sizeof(Real);
}
template <typename Real> size_t operator_backward_smem(int r) { return (6 * (size_t)r * r + kBlock) * sizeof(Real); }
template <typename Real> size_t stats_smem(int r, int P) {
  return ((size_t)(kTokenTile + 1) * r + (size_t)kTokenTile * P + 2 * kTokenTile) * sizeof(Real);
}
template <typename Real> size_t readout_smem(int r, int P) { return (size_t)r * P * sizeof(Real); }

template <typename Real> void launch_operators(const OperatorArgs<Real>& a, int blocks) {
  const size_t smem = operator_smem<Real>(a.r);
  ECHO_ALLOW_SHARED_MEMORY(operator_kernel<Real>, smem);
  ECHO_LAUNCH(operator_kernel<Real>, blocks, kBlock, smem)(a);
  check_launch("koopman_fit operator_kernel");
}

}  // namespace

template <typename Real>
void koopman_forward(const KoopmanDims& d, const Real* k, const Real* q, const Real* v, const Real* beta,
                     const Real* mask, const Real* gamma, const Real* coef, Real* G, Real* M, Real* Ct, Real* L,
                     Real* Wt, Real* Zt, Real* Rt, Real* sigma, Real* alpha, Real* y) {
  check_limits(d.r, d.P);
  if (d.b * d.H == 0 || d.T == 0) return;
  const int BH = d.b * d.H, E = 2 * d.r * d.r + d.r * d.P, tiles = (E + kBlock - 1) / kBlock;
  const size_t stats_bytes = stats_smem<Real>(d.r, d.P);
  ECHO_ALLOW_SHARED_MEMORY(stats_prefix_kernel<Real>, stats_bytes);
  ECHO_LAUNCH(stats_prefix_kernel<Real>, BH * tiles, kBlock, stats_bytes)(d, k, v, beta, mask, G, M, Ct, tiles);
  check_launch("koopman_fit stats_prefix_kernel");
  OperatorArgs<Real> a{d.r, d.P, d.K, d.iters, d.H, d.n_ops, d.prefix ? 0 : 1, Real(d.ridge), gamma, coef, G, M, Ct,
                       L, Wt, Zt, Rt, sigma, alpha};
  launch_operators(a, BH * d.n_ops);
  if (!y) return;
  const size_t readout_bytes = readout_smem<Real>(d.r, d.P);
  ECHO_ALLOW_SHARED_MEMORY(readout_kernel<Real>, readout_bytes);
  ECHO_LAUNCH(readout_kernel<Real>, BH * d.n_chunks, kBlock, readout_bytes)(d, q, Rt, y);
  check_launch("koopman_fit readout_kernel");
}

template <typename Real>
void koopman_backward(const KoopmanDims& d, const Real* k, const Real* q, const Real* v, const Real* beta,
                      const Real* mask, const Real* gamma, const Real* coef, const Real* L, const Real* Wt,
                      const Real* Zt, const Real* Rt, const Real* Ct, const Real* alpha, const Real* dy, Real* dG,
                      Real* dM, Real* dCt, Real* dRt, Real* ds, Real* dcoef_op, Real* dq, Real* dk, Real* dv,
                      Real* dbeta, Real* dgamma, Real* dcoef) {
  check_limits(d.r, d.P);
  if (d.b * d.H == 0 || d.T == 0) return;
  const int BH = d.b * d.H, E = 2 * d.r * d.r + d.r * d.P, tiles = (E + kBlock - 1) / kBlock;
  const bool need_tokens = dk || dv || dbeta;
  const bool need_stats = need_tokens || dgamma || dcoef;
  if (need_stats) {
    ECHO_LAUNCH(readout_backward_kernel<Real>, BH * d.n_ops, kBlock)(d, q, dy, dRt);
    check_launch("koopman_fit readout_backward_kernel");
    OperatorBackwardArgs<Real> a{d.r, d.P, d.K, d.H, d.n_ops, d.prefix ? 0 : 1, gamma, coef, L, Wt, Zt, Ct, alpha,
                                 dRt, dG, dM, dCt, ds, dcoef ? dcoef_op : nullptr};
    const size_t smem = operator_backward_smem<Real>(d.r);
    ECHO_ALLOW_SHARED_MEMORY(operator_backward_kernel<Real>, smem);
    ECHO_LAUNCH(operator_backward_kernel<Real>, BH * d.n_ops, kBlock, smem)(a);
    check_launch("koopman_fit operator_backward_kernel");
    if (!d.prefix && need_tokens) {
      ECHO_LAUNCH(reverse_prefix_kernel<Real>, BH * tiles, kBlock)(d, dG, dM, dCt, tiles);
      check_launch("koopman_fit reverse_prefix_kernel");
    }
  }
  if (dq || need_tokens) {
    TokenArgs<Real> a{d, k, v, beta, mask, Rt, dy, dG, dM, dCt, need_tokens ? 1 : 0, dq, dk, dv, dbeta};
    ECHO_LAUNCH(token_backward_kernel<Real>, BH * d.n_chunks, kBlock)(a);
    check_launch("koopman_fit token_backward_kernel");
  }
  if (dgamma || dcoef) {
    ECHO_LAUNCH(scalar_grads_kernel<Real>, 1, kBlock)(d.b, d.H, d.n_ops, d.K, alpha, ds, dcoef_op, dgamma, dcoef);
    check_launch("koopman_fit scalar_grads_kernel");
  }
}

#define ECHO_KOOPMAN_INSTANTIATE(Real)                                                                              \
  template void koopman_forward<Real>(const KoopmanDims&, const Real*, const Real*, const Real*, const Real*,      \
                                      const Real*, const Real*, const Real*, Real*, Real*, Real*, Real*, Real*,    \
                                      Real*, Real*, Real*, Real*, Real*);                                          \
  template void koopman_backward<Real>(const KoopmanDims&, const Real*, const Real*, const Real*, const Real*,     \
                                       const Real*, const Real*, const Real*, const Real*, const Real*,            \
                                       const Real*, const Real*, const Real*, const Real*, const Real*, Real*,     \
                                       Real*, Real*, Real*, Real*, Real*, Real*, Real*, Real*, Real*, Real*, Real*);
ECHO_KOOPMAN_INSTANTIATE(float)
ECHO_KOOPMAN_INSTANTIATE(double)
#undef ECHO_KOOPMAN_INSTANTIATE

void koopman_stream_step(int BH, int r, int P, const float* k, const float* q, const float* v, const float* beta,
                         const float* Rt, float* Gc, float* Mc, float* Ctc, float* prev_k, int has_prev, float* y) {
  check_limits(r, P);
  ECHO_LAUNCH(stream_step_kernel, BH, kBlock)(r, P, k, q, v, beta, Rt, Gc, Mc, Ctc, prev_k, has_prev, y);
  check_launch("koopman_fit stream_step_kernel");
}

void koopman_stream_commit(int b, int H, int r, int P, int K, int iters, float ridge, const float* gamma,
                           const float* coef, float* G, float* M, float* Ct, float* Gc, float* Mc, float* Ctc,
                           float* L, float* Wt, float* Zt, float* Rt, float* sigma, float* alpha) {
  check_limits(r, P);
  const int64_t BH = (int64_t)b * H;
  ECHO_LAUNCH(stream_merge_kernel, grid_for(BH * r * P), kThreads)(BH * r * r, BH * r * P, G, M, Ct, Gc, Mc, Ctc);
  check_launch("koopman_fit stream_merge_kernel");
  OperatorArgs<float> a{r, P, K, iters, H, 1, 0, ridge, gamma, coef, G, M, Ct, L, Wt, Zt, Rt, sigma, alpha};
  launch_operators(a, static_cast<int>(BH));
}

}  // namespace echo::gpu
