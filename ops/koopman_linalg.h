// The Koopman fit's small dense linear algebra on row-major r×r (r ≤ 64) and
// r×P matrices: a per-thread scratch, elementwise helpers, register-tiled
// products, triangular solves, the Cholesky factorisation with its jitter retry
// (spec §1.4 step 1) and the power iteration of the spectral normalisation
// (step 3). Included by ops/koopman_fit.cpp only, inside its anonymous namespace
// and after ECHO_KOOPMAN_INLINE: every helper is inlined into the op's
// target_clones kernels, so each clone runs its own ISA.
//
// (The SSD scan keeps its own small-GEMM micro-kernel; docs/architecture.md says
// why the two are not merged.)
#pragma once

// Per-thread scratch, two independent slots (kept out of the cloned kernels so
// that both clones share it). A kernel takes slot 0; slot 1 carries a result
// from one kernel to the next within a task.
template <typename T> __attribute__((noinline)) T* scratch(size_t n, int slot = 0) {
  thread_local std::vector<T> buffers[2];
  std::vector<T>& buffer = buffers[slot];
  if (buffer.size() < n) buffer.resize(n);
  return buffer.data();
}

template <typename T> ECHO_KOOPMAN_INLINE void set_zero(T* x, int64_t n) { std::memset(x, 0, sizeof(T) * n); }

template <typename T> ECHO_KOOPMAN_INLINE void set_identity(T* x, int64_t r) {
  set_zero(x, r * r);
  for (int64_t i = 0; i < r; ++i) x[i * r + i] = T(1);
}

// B [cols×rows] = Aᵀ, A [rows×cols].
template <typename T> ECHO_KOOPMAN_INLINE void transpose(int64_t rows, int64_t cols, const T* A, T* B) {
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < cols; ++j) B[j * rows + i] = A[i * cols + j];
}

// y += a·x
template <typename T> ECHO_KOOPMAN_INLINE void axpy(int64_t n, T a, const T* x, T* y) {
#pragma omp simd
  for (int64_t j = 0; j < n; ++j) y[j] += a * x[j];
}

template <typename T> ECHO_KOOPMAN_INLINE T dot(int64_t n, const T* a, const T* b) {
  T s = 0;
#pragma omp simd reduction(+ : s)
  for (int64_t j = 0; j < n; ++j) s += a[j] * b[j];
  return s;
}

// ⟨Aᵀ, B⟩ = Σ_ab A[b,a] B[a,b] = tr(A B) for r×r matrices.
template <typename T> ECHO_KOOPMAN_INLINE T trace_of_product(int64_t r, const T* A, const T* B) {
  T s = 0;
  for (int64_t a = 0; a < r; ++a)
    for (int64_t b = 0; b < r; ++b) s += A[b * r + a] * B[a * r + b];
  return s;
}

// C[m×n] += alpha · A·B, A(i,l) = A[i·sai + l·sal] (so Aᵀ is free), B and C
// row-major with leading dimensions. Blocks of 4 rows × 64 bytes of C live in
// registers (8 accumulators of 8 floats or 4 doubles with AVX2) while l runs over
// the whole inner dimension; the ragged edges take a plain row loop that streams
// four rows of B per pass over a row of C.
template <typename T>
ECHO_KOOPMAN_INLINE void gemm_rows(int64_t i0, int64_t i1, int64_t j0, int64_t n, int64_t kd, T alpha, const T* A,
                                   int64_t sai, int64_t sal, const T* B, int64_t ldb, T* C, int64_t ldc) {
  for (int64_t i = i0; i < i1; ++i) {
    T* c = C + i * ldc + j0;
    const T* a = A + i * sai;
    const T* b = B + j0;
    const int64_t w = n - j0;
    int64_t l = 0;
    for (; l + 4 <= kd; l += 4) {
      const T a0 = alpha * a[l * sal], a1 = alpha * a[(l + 1) * sal];
      const T a2 = alpha * a[(l + 2) * sal], a3 = alpha * a[(l + 3) * sal];
      const T* b0 = b + l * ldb;
#pragma omp simd
      for (int64_t j = 0; j < w; ++j) c[j] += a0 * b0[j] + a1 * b0[ldb + j] + a2 * b0[2 * ldb + j] + a3 * b0[3 * ldb + j];
    }
    for (; l < kd; ++l) axpy(w, alpha * a[l * sal], b + l * ldb, c);
  }
}

// One kRows × kCols block of C, accumulated in registers over the whole inner dimension.
template <int kRows, int kCols, typename T>
ECHO_KOOPMAN_INLINE void gemm_block(int64_t i0, int64_t j0, int64_t kd, T alpha, const T* A, int64_t sai, int64_t sal,
                                    const T* B, int64_t ldb, T* C, int64_t ldc) {
  T acc[kRows][kCols] = {};
  const T* a = A + i0 * sai;
  const T* b = B + j0;
  for (int64_t l = 0; l < kd; ++l) {
    const T* bl = b + l * ldb;
#pragma GCC unroll 4
    for (int rho = 0; rho < kRows; ++rho) {
      const T x = a[rho * sai + l * sal];
#pragma omp simd
      for (int j = 0; j < kCols; ++j) acc[rho][j] += x * bl[j];
    }
  }
#pragma GCC unroll 4
  for (int rho = 0; rho < kRows; ++rho) {
    T* c = C + (i0 + rho) * ldc + j0;
#pragma omp simd
    for (int j = 0; j < kCols; ++j) c[j] += alpha * acc[rho][j];
  }
}

template <typename T>
ECHO_KOOPMAN_INLINE void gemm_acc(int64_t m, int64_t n, int64_t kd, T alpha, const T* A, int64_t sai, int64_t sal,
                                  const T* B, int64_t ldb, T* C, int64_t ldc) {
  constexpr int kRows = 4;
  constexpr int kCols = 64 / sizeof(T);  // two AVX2 registers per row
  constexpr int kHalf = kCols / 2;
  const int64_t m_blocked = m - m % kRows;
  for (int64_t i0 = 0; i0 < m_blocked; i0 += kRows) {
    int64_t j0 = 0;
    for (; j0 + kCols <= n; j0 += kCols) gemm_block<kRows, kCols>(i0, j0, kd, alpha, A, sai, sal, B, ldb, C, ldc);
    if (j0 + kHalf <= n) {
      gemm_block<kRows, kHalf>(i0, j0, kd, alpha, A, sai, sal, B, ldb, C, ldc);
      j0 += kHalf;
    }
    if (j0 < n) gemm_rows(i0, i0 + kRows, j0, n, kd, alpha, A, sai, sal, B, ldb, C, ldc);
  }
  if (m_blocked < m) gemm_rows(m_blocked, m, 0, n, kd, alpha, A, sai, sal, B, ldb, C, ldc);
}

// X[r×n] ← L⁻¹ X (forward substitution; L lower triangular r×r).
template <typename T>
ECHO_KOOPMAN_INLINE void solve_lower(int64_t r, int64_t n, const T* L, T* X, int64_t ldx) {
  for (int64_t i = 0; i < r; ++i) {
    T* xi = X + i * ldx;
    const T* li = L + i * r;
    int64_t k = 0;
    for (; k + 4 <= i; k += 4) {
      const T l0 = li[k], l1 = li[k + 1], l2 = li[k + 2], l3 = li[k + 3];
      const T* x0 = X + k * ldx;
#pragma omp simd
      for (int64_t j = 0; j < n; ++j) xi[j] -= l0 * x0[j] + l1 * x0[ldx + j] + l2 * x0[2 * ldx + j] + l3 * x0[3 * ldx + j];
    }
    for (; k < i; ++k) axpy(n, -li[k], X + k * ldx, xi);
    const T d = li[i];
#pragma omp simd
    for (int64_t j = 0; j < n; ++j) xi[j] /= d;
  }
}

// X[r×n] ← L⁻ᵀ X (back substitution with Lᵀ).
template <typename T>
ECHO_KOOPMAN_INLINE void solve_lower_t(int64_t r, int64_t n, const T* L, T* X, int64_t ldx) {
  for (int64_t i = r - 1; i >= 0; --i) {
    T* xi = X + i * ldx;
    int64_t k = i + 1;
    for (; k + 4 <= r; k += 4) {
      const T l0 = L[k * r + i], l1 = L[(k + 1) * r + i], l2 = L[(k + 2) * r + i], l3 = L[(k + 3) * r + i];
      const T* x0 = X + k * ldx;
#pragma omp simd
      for (int64_t j = 0; j < n; ++j) xi[j] -= l0 * x0[j] + l1 * x0[ldx + j] + l2 * x0[2 * ldx + j] + l3 * x0[3 * ldx + j];
    }
    for (; k < r; ++k) axpy(n, -L[k * r + i], X + k * ldx, xi);
    const T d = L[i * r + i];
#pragma omp simd
    for (int64_t j = 0; j < n; ++j) xi[j] /= d;
  }
}

// X ← L⁻¹ Xᵀ L⁻ᵀ, i.e. (L⁻¹ X L⁻ᵀ)ᵀ: two solves around a transpose. tmp: r×r.
template <typename T> ECHO_KOOPMAN_INLINE void sandwich_lower(int64_t r, const T* L, T* X, T* tmp) {
  solve_lower(r, r, L, X, r);
  transpose(r, r, X, tmp);
  solve_lower(r, r, L, tmp, r);
  std::memcpy(X, tmp, sizeof(T) * r * r);
}
// X ← L⁻ᵀ Xᵀ L⁻¹, i.e. (L⁻ᵀ X L⁻¹)ᵀ.
template <typename T> ECHO_KOOPMAN_INLINE void sandwich_lower_t(int64_t r, const T* L, T* X, T* tmp) {
  solve_lower_t(r, r, L, X, r);
  transpose(r, r, X, tmp);
  solve_lower_t(r, r, L, tmp, r);
  std::memcpy(X, tmp, sizeof(T) * r * r);
}

// Lower Cholesky factor of A + jitter·I (A symmetric). A pivot that is not above
// eps·max_i(A_ii + jitter) counts as a failure: such a matrix is singular to
// working precision, and a factor built on rounding noise would be garbage.
template <typename T> ECHO_KOOPMAN_INLINE bool cholesky(int64_t r, const T* A, T jitter, T* L) {
  T max_diag = 0;
  for (int64_t i = 0; i < r; ++i) max_diag = std::max(max_diag, A[i * r + i] + jitter);
  const T tol = std::numeric_limits<T>::epsilon() * max_diag;
  for (int64_t i = 0; i < r; ++i) {
    T* li = L + i * r;
    for (int64_t j = 0; j <= i; ++j) {
      const T* lj = L + j * r;
      T s = A[i * r + j] - dot(j, li, lj);
      if (i == j) {
        s += jitter;
        if (!(s > tol)) return false;  // also catches NaN
        li[i] = std::sqrt(s);
      } else {
        li[j] = s / lj[j];
      }
    }
    for (int64_t j = i + 1; j < r; ++j) li[j] = T(0);
  }
  return true;
}

// Spec §1.4 step 1: Cholesky; if it fails, G + 1e-4·I. Beyond the spec: should
// that fail too (f32 statistics of a very long run of one repeated key), the
// jitter grows tenfold a few times, so that the output stays finite. Only
// non-finite statistics get through all attempts, and then L (hence y) is NaN.
template <typename T> ECHO_KOOPMAN_INLINE void cholesky_with_retry(int64_t r, const T* A, T* L) {
  if (cholesky(r, A, T(0), L)) return;
  T jitter = T(1e-4);
  for (int attempt = 0; attempt < 10; ++attempt, jitter *= T(10))
    if (cholesky(r, A, jitter, L)) return;
  std::fill(L, L + r * r, std::numeric_limits<T>::quiet_NaN());
}

// σ̂ by the spec's power iteration on W (given Wᵀ): v₀ = 𝟙/√r; repeat
// u = Wv/max(‖Wv‖,1e-8), v = Wᵀu/max(‖Wᵀu‖,1e-8); σ̂ = ‖Wv‖.
template <typename T> ECHO_KOOPMAN_INLINE T power_sigma(int64_t r, const T* Wt, int iters, T* u, T* v) {
  const T floor = T(1e-8);
  for (int64_t i = 0; i < r; ++i) v[i] = T(1) / std::sqrt(T(r));
  auto apply_W = [&](const T* x, T* out) {  // out = W x = Σ_j x_j Wᵀ[j,:]
    set_zero(out, r);
    for (int64_t j = 0; j < r; ++j) axpy(r, x[j], Wt + j * r, out);
  };
  for (int it = 0; it < iters; ++it) {
    apply_W(v, u);
    T nu = std::sqrt(dot(r, u, u));
    nu = std::max(nu, floor);
    for (int64_t i = 0; i < r; ++i) u[i] /= nu;
    for (int64_t i = 0; i < r; ++i) v[i] = dot(r, Wt + i * r, u);  // Wᵀu
    T nv = std::sqrt(dot(r, v, v));
    nv = std::max(nv, floor);
    for (int64_t i = 0; i < r; ++i) v[i] /= nv;
  }
  apply_W(v, u);
  return std::sqrt(dot(r, u, u));
}

