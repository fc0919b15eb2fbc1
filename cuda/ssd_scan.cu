// Reading order: docs/ssd.md → ops/reference/ssd_scan.cpp → ops/ssd_scan.cpp → this file.
//
// CUDA twin of ops/ssd_scan.cpp: the chunked SSD scan, every kernel templated on
// the element type Real (float for training, with fp32 state and accumulation;
// double for the float64 gradient check). Each kernel below names the CPU loop it mirrors; docs/ssd.md has
// the derivation and a table of both.
//
// Matrix-shaped work (the chunk Gram matrix C Bᵀ, chunk states, the intra-chunk
// quadratic form, the state-to-output term and every gradient product) goes
// through tile_mma: 64×64 output tiles, 16-deep slices of both operands staged in
// shared memory, 256 threads with 4×4 outputs each. Operands are given as small
// device lambdas a(m, k), b(k, n), so scalings such as exp(cout_j)·dt_j and the
// causal masks are applied while loading, exactly where the CPU code applies them.
// The only sequential loops run over chunks (state passing), never over time
// steps, and nothing is launched per time step.
#include "cuda/block_reduce.cuh"
#include "cuda/ssd_scan.cuh"

namespace echo::gpu {
namespace {

constexpr int kTile = 64;      // output tile rows and columns
constexpr int kTileK = 16;     // reduction slice staged in shared memory
constexpr int kTileThreads = 256;

template <typename Real>
struct TileSmem {
  Real a[kTileK][kTile];
  Real b[kTileK][kTile];
};

// acc[r][c] += Σ_{k ∈ [k_begin, k_end)} a(m0 + ty + 16r, k) · b(k, n0 + tx + 16c),
// with tx = threadIdx.x % 16, ty = threadIdx.x / 16. a is only called for rows
// m < m_end and b for columns n < n_end (zeros elsewhere). Every thread of the
// block must call it (it synchronises).
template <typename Real, class LoadA, class LoadB>
__device__ void tile_mma(Real (&acc)[4][4], TileSmem<Real>& sm, int64_t m0, int64_t m_end, int64_t n0, int64_t n_end,
                         int64_t k_begin, int64_t k_end, LoadA a, LoadB b) {
  const int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;
  for (int64_t k0 = k_begin; k0 < k_end; k0 += kTileK) {
    for (int e = tid; e < kTileK * kTile; e += kTileThreads) {
      const int kk = e / kTile, mm = e % kTile;
      const int64_t k = k0 + kk;
      sm.a[kk][mm] = (k < k_end && m0 + mm < m_end) ? a(m0 + mm, k) : Real(0);
      sm.b[kk][mm] = (k < k_end && n0 + mm < n_end) ? b(k, n0 + mm) : Real(0);
    }
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < kTileK; ++kk) {
      Real av[4], bv[4];
#pragma unroll
      for (int r = 0; r < 4; ++r) av[r] = sm.a[kk][ty + 16 * r];
#pragma unroll
      for (int c = 0; c < 4; ++c) bv[c] = sm.b[kk][tx + 16 * c];
#pragma unroll
      for (int r = 0; r < 4; ++r)
#pragma unroll
        for (int c = 0; c < 4; ++c) acc[r][c] += av[r] * bv[c];
    }
    __syncthreads();
  }
}

// Calls f(m, n, value) for the thread's outputs inside [m0, m_end) × [n0, n_end).
template <typename Real, class F>
__device__ void tile_store(const Real (&acc)[4][4], int64_t m0, int64_t m_end, int64_t n0, int64_t n_end, F f) {
  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
#pragma unroll
  for (int r = 0; r < 4; ++r)
#pragma unroll
    for (int c = 0; c < 4; ++c) {
      const int64_t m = m0 + ty + 16 * r, n = n0 + tx + 16 * c;
      if (m < m_end && n < n_end) f(m, n, acc[r][c]);
    }
}

template <typename Real>
__device__ inline void zero(Real (&acc)[4][4]) {
#pragma unroll
  for (int r = 0; r < 4; ++r)
#pragma unroll
    for (int c = 0; c < 4; ++c) acc[r][c] = Real(0);
}

__host__ __device__ inline int64_t tiles(int64_t n) { return (n + kTile - 1) / kTile; }

// Shapes and offsets as the kernels see them; the same names as the CPU's
// SsdGeometry in ops/ssd_scan.cpp. x, y, dy are [b, T, H, P], dt is [b, T, H],
// B, C are [b, T, G, N]; per-chunk scratch is indexed by chunk_index (b, h, c)
// or, for what heads of a group share, group_chunk_index (b, c, g).
struct SsdGeometry {
  int64_t batch, T, H, P, G, N, Q, chunks, heads_per_group;
  __host__ __device__ int64_t len(int64_t c) const { return T - c * Q < Q ? T - c * Q : Q; }
  __host__ __device__ int64_t x_step() const { return H * P; }   // one time step in x, y, dy
  __host__ __device__ int64_t bc_step() const { return G * N; }  // one time step in B, C
  __host__ __device__ int64_t x_offset(int64_t b, int64_t t, int64_t h) const { return ((b * T + t) * H + h) * P; }
  __host__ __device__ int64_t dt_offset(int64_t b, int64_t t, int64_t h) const { return (b * T + t) * H + h; }
  __host__ __device__ int64_t bc_offset(int64_t b, int64_t t, int64_t g) const { return ((b * T + t) * G + g) * N; }
  __host__ __device__ int64_t chunk_index(int64_t b, int64_t h, int64_t c) const { return (b * H + h) * chunks + c; }
  __host__ __device__ int64_t group_chunk_index(int64_t b, int64_t c, int64_t g) const {
    return (b * chunks + c) * G + g;
  }
};

SsdGeometry make_geometry(const SsdDims& d) {
  return {d.batch, d.T, d.H, d.P, d.G, d.N, d.Q, (d.T + d.Q - 1) / d.Q, d.H / d.G};
}

// Block index → (tile, chunk, outer) for grids of tiles × chunks × outer blocks.
struct BlockPos {
  int64_t tile, c, outer;
};
__device__ inline BlockPos block_pos(int64_t n_tiles, int64_t chunks) {
  const int64_t blk = blockIdx.x;
  return {blk % n_tiles, (blk / n_tiles) % chunks, blk / (n_tiles * chunks)};
}

// ---- forward ---------------------------------------------------------------------

// CPU: chunk_cumsum. One thread per (b, h, c).
template <typename Real>
__global__ void chunk_cumsum_kernel(SsdGeometry g, const Real* dt, const Real* A, Real* cin, Real* cout) {
  ECHO_GRID_STRIDE(idx, g.batch * g.H * g.chunks) {
    const int64_t c = idx % g.chunks, h = (idx / g.chunks) % g.H, b = idx / (g.chunks * g.H);
    const int64_t len = g.len(c);
    const Real* dtc = dt + g.dt_offset(b, c * g.Q, h);
    Real* ci = cin + idx * g.Q;
    Real* co = cout + idx * g.Q;
    Real s = Real(0);
    for (int64_t i = 0; i < len; ++i) {
      s += dtc[i * g.H] * A[h];
      ci[i] = s;
    }
    s = Real(0);
    for (int64_t j = len - 1; j >= 0; --j) {
      co[j] = s;
      s += dtc[j * g.H] * A[h];
    }
  }
}

// CPU: segsum_decay. L_ij = exp(Σ_{k=j+1..i} a_k) for j ≤ i, one thread per
// column (b, h, c, j); entries above the diagonal are never read.
template <typename Real>
__global__ void segsum_kernel(SsdGeometry g, const Real* dt, const Real* A, Real* L) {
  ECHO_GRID_STRIDE(idx, g.batch * g.H * g.chunks * g.Q) {
    const int64_t j = idx % g.Q, bhc = idx / g.Q;
    const int64_t c = bhc % g.chunks, h = (bhc / g.chunks) % g.H, b = bhc / (g.chunks * g.H);
    const int64_t len = g.len(c);
    if (j >= len) continue;
    const Real* dtc = dt + g.dt_offset(b, c * g.Q, h);
    Real* Lc = L + bhc * g.Q * g.Q;
    Real s = Real(0);
    Lc[j * g.Q + j] = Real(1);
    for (int64_t i = j + 1; i < len; ++i) {
      s += dtc[i * g.H] * A[h];
      Lc[i * g.Q + j] = real_exp(s);
    }
  }
}

// CPU: chunk_gram. CB_ij = C_i·B_j per (b, c, group), tiles on or below the diagonal.
template <typename Real>
__global__ void bmm_chunk_kernel(SsdGeometry g, const Real* B, const Real* C, Real* CB) {
  ECHO_SHARED(TileSmem<Real>, sm);
  const int64_t tq = tiles(g.Q);
  const BlockPos pos = block_pos(tq * tq, g.chunks);
  const int64_t i0 = (pos.tile / tq) * kTile, j0 = (pos.tile % tq) * kTile;
  const int64_t c = pos.c, b = pos.outer / g.G, grp = pos.outer % g.G, len = g.len(c);
  if (j0 > i0 + kTile - 1 || i0 >= len || j0 >= len) return;  // whole block: above the diagonal or past the end
  const Real* Bc = B + g.bc_offset(b, c * g.Q, grp);
  const Real* Cc = C + g.bc_offset(b, c * g.Q, grp);
  const int64_t bs = g.bc_step();
  Real acc[4][4];
  zero(acc);
  tile_mma(acc, sm, i0, len, j0, len, 0, g.N,
           [=](int64_t i, int64_t n) { return Cc[i * bs + n]; },
           [=](int64_t n, int64_t j) { return Bc[j * bs + n]; });
  Real* out = CB + g.group_chunk_index(b, c, grp) * g.Q * g.Q;
  tile_store(acc, i0, len, j0, len, [=](int64_t i, int64_t j, Real v) { out[i * g.Q + j] = v; });
}

// CPU: chunk_state. S_c(p, n) = Σ_j exp(cout_j) dt_j x_j[p] B_j[n] per (b, h, c).
template <typename Real>
__global__ void chunk_state_kernel(SsdGeometry g, const Real* x, const Real* dt, const Real* B, const Real* cout,
                                   Real* states) {
  ECHO_SHARED(TileSmem<Real>, sm);
  const int64_t tn = tiles(g.N);
  const BlockPos pos = block_pos(tiles(g.P) * tn, g.chunks);
  const int64_t p0 = (pos.tile / tn) * kTile, n0 = (pos.tile % tn) * kTile;
  const int64_t c = pos.c, b = pos.outer / g.H, h = pos.outer % g.H, grp = h / g.heads_per_group;
  const int64_t t0 = c * g.Q, len = g.len(c), ch = g.chunk_index(b, h, c), xs = g.x_step(), bs = g.bc_step(), H = g.H;
  const Real* xc = x + g.x_offset(b, t0, h);
  const Real* dtc = dt + g.dt_offset(b, t0, h);
  const Real* Bc = B + g.bc_offset(b, t0, grp);
  const Real* co = cout + ch * g.Q;
  Real acc[4][4];
  zero(acc);
  tile_mma(acc, sm, p0, g.P, n0, g.N, 0, len,
           [=](int64_t p, int64_t j) { return real_exp(co[j]) * dtc[j * H] * xc[j * xs + p]; },
           [=](int64_t j, int64_t n) { return Bc[j * bs + n]; });
  Real* S = states + ch * g.P * g.N;
  const int64_t N = g.N;
  tile_store(acc, p0, g.P, n0, g.N, [=](int64_t p, int64_t n, Real v) { S[p * N + n] = v; });
}

// CPU: state_passing. One thread per state element (b, h, p, n), looping over chunks.
template <typename Real>
__global__ void state_passing_kernel(SsdGeometry g, const Real* cin, const Real* h0, Real* states, Real* h_final) {
  const int64_t PN = g.P * g.N;
  ECHO_GRID_STRIDE(idx, g.batch * g.H * PN) {
    const int64_t e = idx % PN, bh = idx / PN;
    Real h = h0 ? h0[idx] : Real(0);
    for (int64_t c = 0; c < g.chunks; ++c) {
      const int64_t ch = bh * g.chunks + c;
      const Real decay = real_exp(cin[ch * g.Q + g.len(c) - 1]);
      Real* s = states + ch * PN + e;
      const Real local = *s;
      *s = h;
      h = decay * h + local;
    }
    h_final[idx] = h;
  }
}

// CPU: chunk_scan. y_i = Σ_{j≤i} L_ij CB_ij dt_j x_j + exp(cin_i) h_c C_i + D x_i,
// per (b, h, c) and tile of (i, p).
template <typename Real>
__global__ void chunk_scan_kernel(SsdGeometry g, const Real* x, const Real* dt, const Real* C, const Real* D,
                                  const Real* cin, const Real* L, const Real* CB, const Real* states,
                                  Real* y) {
  ECHO_SHARED(TileSmem<Real>, sm);
  const int64_t tp = tiles(g.P);
  const BlockPos pos = block_pos(tiles(g.Q) * tp, g.chunks);
  const int64_t i0 = (pos.tile / tp) * kTile, p0 = (pos.tile % tp) * kTile;
  const int64_t c = pos.c, b = pos.outer / g.H, h = pos.outer % g.H, grp = h / g.heads_per_group;
  const int64_t t0 = c * g.Q, len = g.len(c), ch = g.chunk_index(b, h, c), xs = g.x_step(), bs = g.bc_step(), H = g.H,
                Q = g.Q, N = g.N;
  if (i0 >= len) return;
  const Real* xc = x + g.x_offset(b, t0, h);
  const Real* dtc = dt + g.dt_offset(b, t0, h);
  const Real* Cc = C + g.bc_offset(b, t0, grp);
  const Real* ci = cin + ch * Q;
  const Real* Lc = L + ch * Q * Q;
  const Real* CBc = CB + g.group_chunk_index(b, c, grp) * Q * Q;
  const Real* hc = states + ch * g.P * g.N;
  Real acc[4][4];
  zero(acc);
  // intra-chunk: Σ_{j ≤ i} M_ij x_j, M_ij = L_ij CB_ij dt_j (j only up to the tile's last row)
  const int64_t j_end = i0 + kTile < len ? i0 + kTile : len;
  tile_mma(acc, sm, i0, len, p0, g.P, 0, j_end,
           [=](int64_t i, int64_t j) { return j <= i ? Lc[i * Q + j] * CBc[i * Q + j] * dtc[j * H] : Real(0); },
           [=](int64_t j, int64_t p) { return xc[j * xs + p]; });
  // from the entering state: Σ_n exp(cin_i) C_i[n] h_c[p][n]
  tile_mma(acc, sm, i0, len, p0, g.P, 0, g.N,
           [=](int64_t i, int64_t n) { return real_exp(ci[i]) * Cc[i * bs + n]; },
           [=](int64_t n, int64_t p) { return hc[p * N + n]; });
  Real* yc = y + g.x_offset(b, t0, h);
  const Real Dh = D ? D[h] : Real(0);
  tile_store(acc, i0, len, p0, g.P, [=](int64_t i, int64_t p, Real v) { yc[i * xs + p] = v + Dh * xc[i * xs + p]; });
}

// ---- backward --------------------------------------------------------------------

// CPU: chunk_state_bwd. E_c(p, n) = Σ_i exp(cin_i) dy_i[p] C_i[n].
template <typename Real>
__global__ void chunk_state_bwd_kernel(SsdGeometry g, const Real* dy, const Real* C, const Real* cin, Real* dstates) {
  ECHO_SHARED(TileSmem<Real>, sm);
  const int64_t tn = tiles(g.N);
  const BlockPos pos = block_pos(tiles(g.P) * tn, g.chunks);
  const int64_t p0 = (pos.tile / tn) * kTile, n0 = (pos.tile % tn) * kTile;
  const int64_t c = pos.c, b = pos.outer / g.H, h = pos.outer % g.H, grp = h / g.heads_per_group;
  const int64_t t0 = c * g.Q, len = g.len(c), ch = g.chunk_index(b, h, c), xs = g.x_step(), bs = g.bc_step(), N = g.N;
  const Real* dyc = dy + g.x_offset(b, t0, h);
  const Real* Cc = C + g.bc_offset(b, t0, grp);
  const Real* ci = cin + ch * g.Q;
  Real acc[4][4];
  zero(acc);
  tile_mma(acc, sm, p0, g.P, n0, g.N, 0, len,
           [=](int64_t p, int64_t i) { return real_exp(ci[i]) * dyc[i * xs + p]; },
           [=](int64_t i, int64_t n) { return Cc[i * bs + n]; });
  Real* E = dstates + ch * g.P * g.N;
  tile_store(acc, p0, g.P, n0, g.N, [=](int64_t p, int64_t n, Real v) { E[p * N + n] = v; });
}

// CPU: state_passing_bwd. g ← exp(cin_last) g + E_c backwards over chunks; E_c is
// replaced by g_c (the gradient of the state leaving chunk c); dh0 += g_{-1}.
template <typename Real>
__global__ void state_passing_bwd_kernel(SsdGeometry g, const Real* cin, const Real* dh_final, Real* dstates,
                                         Real* dh0) {
  const int64_t PN = g.P * g.N;
  ECHO_GRID_STRIDE(idx, g.batch * g.H * PN) {
    const int64_t e = idx % PN, bh = idx / PN;
    Real gs = dh_final[idx];
    for (int64_t c = g.chunks - 1; c >= 0; --c) {
      const int64_t ch = bh * g.chunks + c;
      const Real decay = real_exp(cin[ch * g.Q + g.len(c) - 1]);
      Real* s = dstates + ch * PN + e;
      const Real local = *s;
      *s = gs;
      gs = decay * gs + local;
    }
    if (dh0) dh0[idx] += gs;
  }
}

// CPU: "dM = dY Xᵀ" in chunk_scan_bwd. dM_ij = dy_i·x_j per (b, h, c), tiles on or
// below the diagonal.
template <typename Real>
__global__ void dm_kernel(SsdGeometry g, const Real* x, const Real* dy, Real* dM) {
  ECHO_SHARED(TileSmem<Real>, sm);
  const int64_t tq = tiles(g.Q);
  const BlockPos pos = block_pos(tq * tq, g.chunks);
  const int64_t i0 = (pos.tile / tq) * kTile, j0 = (pos.tile % tq) * kTile;
  const int64_t c = pos.c, b = pos.outer / g.H, h = pos.outer % g.H;
  const int64_t t0 = c * g.Q, len = g.len(c), ch = g.chunk_index(b, h, c), xs = g.x_step(), Q = g.Q;
  if (j0 > i0 + kTile - 1 || i0 >= len || j0 >= len) return;
  const Real* xc = x + g.x_offset(b, t0, h);
  const Real* dyc = dy + g.x_offset(b, t0, h);
  Real acc[4][4];
  zero(acc);
  tile_mma(acc, sm, i0, len, j0, len, 0, g.P,
           [=](int64_t i, int64_t p) { return dyc[i * xs + p]; },
           [=](int64_t p, int64_t j) { return xc[j * xs + p]; });
  Real* out = dM + ch * Q * Q;
  tile_store(acc, i0, len, j0, len, [=](int64_t i, int64_t j, Real v) { out[i * Q + j] = v; });
}

// CPU: the dCB line of the elementwise loop. dCB_ij = Σ_{heads of the group}
// dM_ij L_ij dt_j for j ≤ i, 0 above; one thread per (b, c, group, i, j).
template <typename Real>
__global__ void dcb_kernel(SsdGeometry g, const Real* dt, const Real* L, const Real* dM, Real* dCB) {
  const int64_t QQ = g.Q * g.Q;
  ECHO_GRID_STRIDE(idx, g.batch * g.chunks * g.G * QQ) {
    const int64_t ij = idx % QQ, bcg = idx / QQ;
    const int64_t i = ij / g.Q, j = ij % g.Q;
    const int64_t grp = bcg % g.G, c = (bcg / g.G) % g.chunks, b = bcg / (g.G * g.chunks);
    const int64_t len = g.len(c);
    Real s = Real(0);
    if (j <= i && i < len) {
      for (int64_t hh = 0; hh < g.heads_per_group; ++hh) {
        const int64_t h = grp * g.heads_per_group + hh, ch = g.chunk_index(b, h, c);
        s += dM[ch * QQ + ij] * L[ch * QQ + ij] * dt[g.dt_offset(b, c * g.Q + j, h)];
      }
    }
    dCB[idx] = s;
  }
}

// CPU: the ddt_direct and W lines of the elementwise loop. Per column (b, h, c, j):
// ddt_diag_j = Σ_{i≥j} dM_ij L_ij CB_ij, and dM_ij ← W_ij = dM_ij M_ij in place.
// Runs after dcb_kernel, which reads dM.
template <typename Real>
__global__ void ddt_diag_kernel(SsdGeometry g, const Real* dt, const Real* L, const Real* CB, Real* dM,
                                Real* ddt_diag) {
  const int64_t QQ = g.Q * g.Q;
  ECHO_GRID_STRIDE(idx, g.batch * g.H * g.chunks * g.Q) {
    const int64_t j = idx % g.Q, ch = idx / g.Q;
    const int64_t c = ch % g.chunks, h = (ch / g.chunks) % g.H, b = ch / (g.chunks * g.H);
    const int64_t len = g.len(c), grp = h / g.heads_per_group;
    if (j >= len) continue;
    const Real dtj = dt[g.dt_offset(b, c * g.Q + j, h)];
    const Real* Lc = L + ch * QQ;
    const Real* CBc = CB + g.group_chunk_index(b, c, grp) * QQ;
    Real* W = dM + ch * QQ;
    Real s = Real(0);
    for (int64_t i = j; i < len; ++i) {
      const Real dm = W[i * g.Q + j], lcb = Lc[i * g.Q + j] * CBc[i * g.Q + j];
      s += dm * lcb;
      W[i * g.Q + j] = dm * lcb * dtj;
    }
    ddt_diag[idx] = s;
  }
}

// CPU: the W row prefix of the da_k loop. W_ij ← Σ_{j'<j} W_ij' (exclusive) for
// j ≤ i, one thread per row (b, h, c, i).
template <typename Real>
__global__ void row_prefix_kernel(SsdGeometry g, Real* W) {
  ECHO_GRID_STRIDE(idx, g.batch * g.H * g.chunks * g.Q) {
    const int64_t i = idx % g.Q, ch = idx / g.Q, c = ch % g.chunks;
    if (i >= g.len(c)) continue;
    Real* row = W + ch * g.Q * g.Q + i * g.Q;
    Real run = Real(0);
    for (int64_t j = 0; j <= i; ++j) {
      const Real w = row[j];
      row[j] = run;
      run += w;
    }
  }
}

// CPU: the dx lines of chunk_scan_bwd. Per (b, h, c) and tile of (j, p):
// dx_j += Σ_{i≥j} M_ij dy_i + exp(cout_j) dt_j dS B_j + D dy_j.
template <typename Real>
__global__ void dx_kernel(SsdGeometry g, const Real* dt, const Real* B, const Real* D, const Real* cout,
                          const Real* L, const Real* CB, const Real* dstates, const Real* dy, Real* dx) {
  ECHO_SHARED(TileSmem<Real>, sm);
  const int64_t tp = tiles(g.P);
  const BlockPos pos = block_pos(tiles(g.Q) * tp, g.chunks);
  const int64_t j0 = (pos.tile / tp) * kTile, p0 = (pos.tile % tp) * kTile;
  const int64_t c = pos.c, b = pos.outer / g.H, h = pos.outer % g.H, grp = h / g.heads_per_group;
  const int64_t t0 = c * g.Q, len = g.len(c), ch = g.chunk_index(b, h, c), xs = g.x_step(), bs = g.bc_step(), H = g.H,
                Q = g.Q, N = g.N;
  if (j0 >= len) return;
  const Real* dtc = dt + g.dt_offset(b, t0, h);
  const Real* dyc = dy + g.x_offset(b, t0, h);
  const Real* Bc = B + g.bc_offset(b, t0, grp);
  const Real* co = cout + ch * Q;
  const Real* Lc = L + ch * Q * Q;
  const Real* CBc = CB + g.group_chunk_index(b, c, grp) * Q * Q;
  const Real* dS = dstates + ch * g.P * g.N;
  Real acc[4][4];
  zero(acc);
  // Mᵀ dY: rows i from the tile's first j on
  tile_mma(acc, sm, j0, len, p0, g.P, j0, len,
           [=](int64_t j, int64_t i) { return i >= j ? Lc[i * Q + j] * CBc[i * Q + j] * dtc[j * H] : Real(0); },
           [=](int64_t i, int64_t p) { return dyc[i * xs + p]; });
  // through the chunk state
  tile_mma(acc, sm, j0, len, p0, g.P, 0, g.N,
           [=](int64_t j, int64_t n) { return real_exp(co[j]) * dtc[j * H] * Bc[j * bs + n]; },
           [=](int64_t n, int64_t p) { return dS[p * N + n]; });
  Real* dxc = dx + g.x_offset(b, t0, h);
  const Real Dh = D ? D[h] : Real(0);
  tile_store(acc, j0, len, p0, g.P,
             [=](int64_t j, int64_t p, Real v) { dxc[j * xs + p] += v + Dh * dyc[j * xs + p]; });
}

// CPU: the dB lines. Per (b, c, group) and tile of (j, n):
// dB_j += Σ_{i≥j} dCB_ij C_i + Σ_heads exp(cout_j) dt_j dSᵀ x_j.
template <typename Real>
__global__ void dB_kernel(SsdGeometry g, const Real* x, const Real* dt, const Real* C, const Real* cout,
                          const Real* dCB, const Real* dstates, Real* dB) {
  ECHO_SHARED(TileSmem<Real>, sm);
  const int64_t tn = tiles(g.N);
  const BlockPos pos = block_pos(tiles(g.Q) * tn, g.chunks);
  const int64_t j0 = (pos.tile / tn) * kTile, n0 = (pos.tile % tn) * kTile;
  const int64_t c = pos.c, b = pos.outer / g.G, grp = pos.outer % g.G;
  const int64_t t0 = c * g.Q, len = g.len(c), xs = g.x_step(), bs = g.bc_step(), H = g.H, Q = g.Q, N = g.N;
  if (j0 >= len) return;
  const Real* Cc = C + g.bc_offset(b, t0, grp);
  const Real* dCBc = dCB + g.group_chunk_index(b, c, grp) * Q * Q;
  Real acc[4][4];
  zero(acc);
  tile_mma(acc, sm, j0, len, n0, g.N, j0, len,
           [=](int64_t j, int64_t i) { return i >= j ? dCBc[i * Q + j] : Real(0); },
           [=](int64_t i, int64_t n) { return Cc[i * bs + n]; });
  for (int64_t hh = 0; hh < g.heads_per_group; ++hh) {
    const int64_t h = grp * g.heads_per_group + hh, ch = g.chunk_index(b, h, c);
    const Real* xc = x + g.x_offset(b, t0, h);
    const Real* dtc = dt + g.dt_offset(b, t0, h);
    const Real* co = cout + ch * Q;
    const Real* dS = dstates + ch * g.P * g.N;
    tile_mma(acc, sm, j0, len, n0, g.N, 0, g.P,
             [=](int64_t j, int64_t p) { return real_exp(co[j]) * dtc[j * H] * xc[j * xs + p]; },
             [=](int64_t p, int64_t n) { return dS[p * N + n]; });
  }
  Real* dBc = dB + g.bc_offset(b, t0, grp);
  tile_store(acc, j0, len, n0, g.N, [=](int64_t j, int64_t n, Real v) { dBc[j * bs + n] += v; });
}

// CPU: the dC lines. Per (b, c, group) and tile of (i, n):
// dC_i += Σ_{j≤i} dCB_ij B_j + Σ_heads exp(cin_i) h_cᵀ dy_i.
template <typename Real>
__global__ void dC_kernel(SsdGeometry g, const Real* B, const Real* cin, const Real* dCB, const Real* states,
                          const Real* dy, Real* dC) {
  ECHO_SHARED(TileSmem<Real>, sm);
  const int64_t tn = tiles(g.N);
  const BlockPos pos = block_pos(tiles(g.Q) * tn, g.chunks);
  const int64_t i0 = (pos.tile / tn) * kTile, n0 = (pos.tile % tn) * kTile;
  const int64_t c = pos.c, b = pos.outer / g.G, grp = pos.outer % g.G;
  const int64_t t0 = c * g.Q, len = g.len(c), xs = g.x_step(), bs = g.bc_step(), Q = g.Q, N = g.N;
  if (i0 >= len) return;
  const Real* Bc = B + g.bc_offset(b, t0, grp);
  const Real* dCBc = dCB + g.group_chunk_index(b, c, grp) * Q * Q;
  const int64_t j_end = i0 + kTile < len ? i0 + kTile : len;
  Real acc[4][4];
  zero(acc);
  tile_mma(acc, sm, i0, len, n0, g.N, 0, j_end,
           [=](int64_t i, int64_t j) { return j <= i ? dCBc[i * Q + j] : Real(0); },
           [=](int64_t j, int64_t n) { return Bc[j * bs + n]; });
  for (int64_t hh = 0; hh < g.heads_per_group; ++hh) {
    const int64_t h = grp * g.heads_per_group + hh, ch = g.chunk_index(b, h, c);
    const Real* dyc = dy + g.x_offset(b, t0, h);
    const Real* ci = cin + ch * Q;
    const Real* hc = states + ch * g.P * g.N;
    tile_mma(acc, sm, i0, len, n0, g.N, 0, g.P,
             [=](int64_t i, int64_t p) { return real_exp(ci[i]) * dyc[i * xs + p]; },
             [=](int64_t p, int64_t n) { return hc[p * N + n]; });
  }
  Real* dCc = dC + g.bc_offset(b, t0, grp);
  tile_store(acc, i0, len, n0, g.N, [=](int64_t i, int64_t n, Real v) { dCc[i * bs + n] += v; });
}

// Sum of v over the 16 threads of a half-warp that share a tile row (same ty).
template <typename Real>
__device__ inline Real row_sum16(Real v) {
#pragma unroll
  for (int off = 8; off >= 1; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off, 16);
  return v;
}

// CPU: U = dY h_c and w_in_i = exp(cin_i) C_i·U_i. Per (b, h, c) and tile of
// (i, n); the tile's share of the dot over n goes to w_in_part[(b,h,c), n-tile, i].
template <typename Real>
__global__ void w_in_kernel(SsdGeometry g, const Real* C, const Real* cin, const Real* states, const Real* dy,
                            Real* w_in_part) {
  ECHO_SHARED(TileSmem<Real>, sm);
  const int64_t tn = tiles(g.N);
  const BlockPos pos = block_pos(tiles(g.Q) * tn, g.chunks);
  const int64_t i0 = (pos.tile / tn) * kTile, nt = pos.tile % tn, n0 = nt * kTile;
  const int64_t c = pos.c, b = pos.outer / g.H, h = pos.outer % g.H, grp = h / g.heads_per_group;
  const int64_t t0 = c * g.Q, len = g.len(c), ch = g.chunk_index(b, h, c), xs = g.x_step(), bs = g.bc_step(), N = g.N;
  if (i0 >= len) return;
  const Real* dyc = dy + g.x_offset(b, t0, h);
  const Real* Cc = C + g.bc_offset(b, t0, grp);
  const Real* hc = states + ch * g.P * g.N;
  Real acc[4][4];
  zero(acc);
  tile_mma(acc, sm, i0, len, n0, g.N, 0, g.P,
           [=](int64_t i, int64_t p) { return dyc[i * xs + p]; },
           [=](int64_t p, int64_t n) { return hc[p * N + n]; });
  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
  Real* out = w_in_part + (ch * tn + nt) * g.Q;
  const Real* ci = cin + ch * g.Q;
#pragma unroll
  for (int r = 0; r < 4; ++r) {
    const int64_t i = i0 + ty + 16 * r;
    Real part = Real(0);
#pragma unroll
    for (int cc = 0; cc < 4; ++cc) {
      const int64_t n = n0 + tx + 16 * cc;
      if (i < len && n < g.N) part += acc[r][cc] * Cc[i * bs + n];
    }
    part = row_sum16(part);
    if (tx == 0 && i < len) out[i] = real_exp(ci[i]) * part;
  }
}

// CPU: V = B dSᵀ and xv_j = x_j·V_j. Per (b, h, c) and tile of (j, p); the tile's
// share of the dot over p goes to xv_part[(b,h,c), p-tile, j].
template <typename Real>
__global__ void w_out_kernel(SsdGeometry g, const Real* x, const Real* B, const Real* dstates, Real* xv_part) {
  ECHO_SHARED(TileSmem<Real>, sm);
  const int64_t tp = tiles(g.P);
  const BlockPos pos = block_pos(tiles(g.Q) * tp, g.chunks);
  const int64_t j0 = (pos.tile / tp) * kTile, pt = pos.tile % tp, p0 = pt * kTile;
  const int64_t c = pos.c, b = pos.outer / g.H, h = pos.outer % g.H, grp = h / g.heads_per_group;
  const int64_t t0 = c * g.Q, len = g.len(c), ch = g.chunk_index(b, h, c), xs = g.x_step(), bs = g.bc_step(), N = g.N;
  if (j0 >= len) return;
  const Real* xc = x + g.x_offset(b, t0, h);
  const Real* Bc = B + g.bc_offset(b, t0, grp);
  const Real* dS = dstates + ch * g.P * g.N;
  Real acc[4][4];
  zero(acc);
  tile_mma(acc, sm, j0, len, p0, g.P, 0, g.N,
           [=](int64_t j, int64_t n) { return Bc[j * bs + n]; },
           [=](int64_t n, int64_t p) { return dS[p * N + n]; });
  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
  Real* out = xv_part + (ch * tp + pt) * g.Q;
#pragma unroll
  for (int r = 0; r < 4; ++r) {
    const int64_t j = j0 + ty + 16 * r;
    Real part = Real(0);
#pragma unroll
    for (int cc = 0; cc < 4; ++cc) {
      const int64_t p = p0 + tx + 16 * cc;
      if (j < len && p < g.P) part += acc[r][cc] * xc[j * xs + p];
    }
    part = row_sum16(part);
    if (tx == 0 && j < len) out[j] = part;
  }
}

// CPU: w_chunk = exp(cin_last) <dS, h_c>. One block of kThreads per (b, h, c).
template <typename Real>
__global__ void w_chunk_kernel(SsdGeometry g, const Real* cin, const Real* states, const Real* dstates, Real* w_chunk) {
  ECHO_SHARED(Real, red, [kThreads]);
  const int64_t ch = blockIdx.x, c = ch % g.chunks, PN = g.P * g.N;
  Real s = Real(0);
  for (int64_t e = threadIdx.x; e < PN; e += blockDim.x) s += dstates[ch * PN + e] * states[ch * PN + e];
  s = block_sum(s, red);
  if (threadIdx.x == 0) w_chunk[ch] = real_exp(cin[ch * g.Q + g.len(c) - 1]) * s;
}

// CPU: the da_k, ddt and dA lines. One thread per (b, h, c, k):
// da_k = w_chunk + Σ_{i≥k} W_ik (row-prefixed W) + Σ_{i≥k} w_in_i + Σ_{j<k} w_out_j,
// ddt_k += ddt_diag_k + exp(cout_k) xv_k + A da_k, dA term dt_k da_k.
template <typename Real>
__global__ void da_kernel(SsdGeometry g, const Real* dt, const Real* A, const Real* cout, const Real* W,
                          const Real* ddt_diag, const Real* w_in_part, const Real* xv_part,
                          const Real* w_chunk, Real* ddt, Real* dA_terms) {
  const int64_t tn = tiles(g.N), tp = tiles(g.P), Q = g.Q;
  ECHO_GRID_STRIDE(idx, g.batch * g.H * g.chunks * Q) {
    const int64_t k = idx % Q, ch = idx / Q;
    const int64_t c = ch % g.chunks, h = (ch / g.chunks) % g.H, b = ch / (g.chunks * g.H);
    const int64_t len = g.len(c), t0 = c * Q;
    if (k >= len) continue;
    const Real* dtc = dt + g.dt_offset(b, t0, h);
    const Real* co = cout + ch * Q;
    const Real* Wc = W + ch * Q * Q;
    Real da = w_chunk[ch];
    for (int64_t i = k; i < len; ++i) {
      da += Wc[i * Q + k];
      for (int64_t nt = 0; nt < tn; ++nt) da += w_in_part[(ch * tn + nt) * Q + i];
    }
    for (int64_t j = 0; j < k; ++j) {
      Real xv = Real(0);
      for (int64_t pt = 0; pt < tp; ++pt) xv += xv_part[(ch * tp + pt) * Q + j];
      da += real_exp(co[j]) * dtc[j * g.H] * xv;
    }
    Real xv_k = Real(0);
    for (int64_t pt = 0; pt < tp; ++pt) xv_k += xv_part[(ch * tp + pt) * Q + k];
    const int64_t pos = g.dt_offset(b, t0 + k, h);
    ddt[pos] += ddt_diag[idx] + real_exp(co[k]) * xv_k + A[h] * da;
    dA_terms[pos] = dtc[k * g.H] * da;
  }
}

// CPU: dD_sum. dD term per (b, t, h): dy·x over p.
template <typename Real>
__global__ void dD_terms_kernel(SsdGeometry g, const Real* x, const Real* dy, Real* dD_terms) {
  ECHO_GRID_STRIDE(idx, g.batch * g.T * g.H) {
    Real s = Real(0);
    for (int64_t p = 0; p < g.P; ++p) s += dy[idx * g.P + p] * x[idx * g.P + p];
    dD_terms[idx] = s;
  }
}

// CPU: the final per-head sums. One block per head: dA[h] += Σ_{b,t} dA_terms,
// dD[h] += Σ_{b,t} dD_terms (when D is present). kThreads threads a block.
template <typename Real>
__global__ void head_sums_kernel(SsdGeometry g, const Real* dA_terms, const Real* dD_terms, Real* dA, Real* dD) {
  ECHO_SHARED(Real, red, [kThreads]);
  const int64_t h = blockIdx.x, n = g.batch * g.T;
  Real sa = Real(0), sd = Real(0);
  for (int64_t e = threadIdx.x; e < n; e += blockDim.x) {
    sa += dA_terms[e * g.H + h];
    if (dD) sd += dD_terms[e * g.H + h];
  }
  sa = block_sum(sa, red);
  sd = block_sum(sd, red);
  if (threadIdx.x == 0) {
    dA[h] += sa;
    if (dD) dD[h] += sd;
  }
}

// ---- decode step -------------------------------------------------------------------

// CPU: step_cpu. One warp per state row (b, h, p); lanes stride over n.
template <typename Real>
__global__ void step_kernel(const Real* x, const Real* dt, const Real* A, const Real* B, const Real* C,
                            const Real* D, Real* state, Real* y, int64_t batch, int64_t H, int64_t P,
                            int64_t G, int64_t N) {
  const int64_t warp = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  if (warp >= batch * H * P) return;  // uniform across the warp
  const int64_t p = warp % P, bh = warp / P, h = bh % H, b = bh / H, grp = h / (H / G);
  const Real dth = dt[bh], decay = real_exp(dth * A[h]), xp = x[bh * P + p];
  const Real* Bt = B + (b * G + grp) * N;
  const Real* Ct = C + (b * G + grp) * N;
  Real* s = state + (bh * P + p) * N;
  Real acc = Real(0);
  for (int64_t n = lane; n < N; n += 32) {
    const Real v = decay * s[n] + dth * xp * Bt[n];
    s[n] = v;
    acc += v * Ct[n];
  }
#pragma unroll
  for (int off = 16; off >= 1; off >>= 1) acc += __shfl_down_sync(0xffffffffu, acc, off);
  if (lane == 0) y[bh * P + p] = acc + (D ? D[h] * xp : Real(0));
}

// ---- workspace ---------------------------------------------------------------------

// The scratch of one call, carved out of a single device buffer. Each layout
// lists (slot, size in elements) once; with base == null it only counts.
template <typename Real>
struct WorkspaceCarver {
  Real* base;
  int64_t used = 0;
  void take(Real** slot, int64_t elements) {
    *slot = base ? base + used : nullptr;
    used += elements;
  }
};

template <typename Real>
struct ForwardWs {
  Real *cin, *cout;  // cumulative decay sums from the chunk start / to the chunk end, [b,H,chunks,Q]
  Real *L;           // decay matrices L_ij, [b,H,chunks,Q,Q]
  Real *CB;          // C_i·B_j per group, [b,chunks,G,Q,Q]
};

template <typename Real>
int64_t forward_layout(const SsdGeometry& g, Real* base, ForwardWs<Real>* ws) {
  const int64_t bhcq = g.batch * g.H * g.chunks * g.Q;
  WorkspaceCarver<Real> carve{base};
  carve.take(&ws->cin, bhcq);
  carve.take(&ws->cout, bhcq);
  carve.take(&ws->L, bhcq * g.Q);
  carve.take(&ws->CB, g.batch * g.chunks * g.G * g.Q * g.Q);
  return carve.used;
}

template <typename Real>
struct BackwardWs {
  Real *cin, *cout, *L, *CB;  // as in the forward, recomputed
  Real *dstates;              // per chunk: the gradient of the state leaving it, [b,H,chunks,P,N]
  Real *dM;                   // dM_ij = dy_i·x_j, then W_ij and its row prefix, [b,H,chunks,Q,Q]
  Real *dCB;                  // gradient of C_i·B_j per group, [b,chunks,G,Q,Q]
  Real *ddt_diag;             // Σ_{i≥j} dM_ij L_ij CB_ij per column, [b,H,chunks,Q]
  Real *w_in_part, *xv_part;  // per-tile shares of two dot products, [b,H,chunks,tiles,Q]
  Real *w_chunk;              // exp(cin_last)·<dS, h_c>, [b,H,chunks]
  Real *dA_terms, *dD_terms;  // per (b, t, h) terms of dA and dD before the head sums
};

template <typename Real>
int64_t backward_layout(const SsdGeometry& g, Real* base, BackwardWs<Real>* ws) {
  const int64_t bhc = g.batch * g.H * g.chunks, bhcq = bhc * g.Q, group_qq = g.batch * g.chunks * g.G * g.Q * g.Q;
  WorkspaceCarver<Real> carve{base};
  carve.take(&ws->cin, bhcq);
  carve.take(&ws->cout, bhcq);
  carve.take(&ws->L, bhcq * g.Q);
  carve.take(&ws->CB, group_qq);
  carve.take(&ws->dstates, bhc * g.P * g.N);
  carve.take(&ws->dM, bhcq * g.Q);
  carve.take(&ws->dCB, group_qq);
  carve.take(&ws->ddt_diag, bhcq);
  carve.take(&ws->w_in_part, bhcq * tiles(g.N));
  carve.take(&ws->xv_part, bhcq * tiles(g.P));
  carve.take(&ws->w_chunk, bhc);
  carve.take(&ws->dA_terms, g.batch * g.T * g.H);
  carve.take(&ws->dD_terms, g.batch * g.T * g.H);
  return carve.used;
}

// A launch's error, if any, as an exception naming the step of the scan.
inline void check(const char* what) { check_launch(what); }
// gridDim.x of a tile grid, checked (a bare narrowing to dim3 would drop blocks past 2³²).
inline unsigned tile_blocks(int64_t n_tiles, const SsdGeometry& g, int64_t outer) {
  return row_blocks(n_tiles * g.chunks * outer, "ssd_scan");
}

}  // namespace

// The layouts count elements, the same for either element type.
int64_t ssd_forward_workspace_elements(const SsdDims& d) {
  ForwardWs<float> ws;
  return forward_layout<float>(make_geometry(d), nullptr, &ws);
}
int64_t ssd_backward_workspace_elements(const SsdDims& d) {
  BackwardWs<float> ws;
  return backward_layout<float>(make_geometry(d), nullptr, &ws);
}

template <typename Real>

void ssd_scan_forward(const SsdDims& d, const Real* x, const Real* dt, const Real* A, const Real* B,
                      const Real* C, const Real* D, const Real* h0, Real* y, Real* h_final, Real* states,
                      Real* workspace) {
  const SsdGeometry g = make_geometry(d);
  if (g.batch == 0 || g.H == 0) return;  // nothing to compute (and no empty grids)
  ForwardWs<Real> ws;
  forward_layout(g, workspace, &ws);
  const int64_t tq = tiles(g.Q);
  if (g.chunks > 0) {
    ECHO_LAUNCH(chunk_cumsum_kernel<Real>, grid_for(g.batch * g.H * g.chunks), kThreads)(g, dt, A, ws.cin, ws.cout);
    check("ssd_scan chunk_cumsum");
    ECHO_LAUNCH(chunk_state_kernel<Real>, tile_blocks(tiles(g.P) * tiles(g.N), g, g.batch * g.H), kTileThreads)(g, x, dt, B, ws.cout,
                                                                                                  states);
    check("ssd_scan chunk_state");
  }
  if (g.batch * g.H * g.P * g.N > 0) {
    ECHO_LAUNCH(state_passing_kernel<Real>, grid_for(g.batch * g.H * g.P * g.N), kThreads)(g, ws.cin, h0, states, h_final);
    check("ssd_scan state_passing");
  }
  if (g.chunks > 0) {
    ECHO_LAUNCH(segsum_kernel<Real>, grid_for(g.batch * g.H * g.chunks * g.Q), kThreads)(g, dt, A, ws.L);
    check("ssd_scan segsum");
    ECHO_LAUNCH(bmm_chunk_kernel<Real>, tile_blocks(tq * tq, g, g.batch * g.G), kTileThreads)(g, B, C, ws.CB);
    check("ssd_scan bmm_chunk");
    ECHO_LAUNCH(chunk_scan_kernel<Real>, tile_blocks(tq * tiles(g.P), g, g.batch * g.H), kTileThreads)(g, x, dt, C, D, ws.cin, ws.L,
                                                                                         ws.CB, states, y);
    check("ssd_scan chunk_scan");
  }
}

template <typename Real>
void ssd_scan_backward(const SsdDims& d, const Real* x, const Real* dt, const Real* A, const Real* B,
                       const Real* C, const Real* D, const Real* states, const Real* dy,
                       const Real* dh_final, Real* dx, Real* ddt, Real* dA, Real* dB, Real* dC, Real* dD,
                       Real* dh0, Real* workspace) {
  const SsdGeometry g = make_geometry(d);
  if (g.batch == 0 || g.H == 0) return;
  BackwardWs<Real> ws;
  backward_layout(g, workspace, &ws);
  const int64_t tq = tiles(g.Q), tp = tiles(g.P), tn = tiles(g.N);
  const int64_t bhcq = g.batch * g.H * g.chunks * g.Q;
  if (g.chunks > 0) {
    ECHO_LAUNCH(chunk_cumsum_kernel<Real>, grid_for(g.batch * g.H * g.chunks), kThreads)(g, dt, A, ws.cin, ws.cout);
    check("ssd_scan backward chunk_cumsum");
    ECHO_LAUNCH(segsum_kernel<Real>, grid_for(bhcq), kThreads)(g, dt, A, ws.L);
    check("ssd_scan backward segsum");
    ECHO_LAUNCH(bmm_chunk_kernel<Real>, tile_blocks(tq * tq, g, g.batch * g.G), kTileThreads)(g, B, C, ws.CB);
    check("ssd_scan backward bmm_chunk");
    ECHO_LAUNCH(chunk_state_bwd_kernel<Real>, tile_blocks(tp * tn, g, g.batch * g.H), kTileThreads)(g, dy, C, ws.cin, ws.dstates);
    check("ssd_scan chunk_state_bwd");
  }
  if (g.batch * g.H * g.P * g.N > 0) {  // with no chunks this is dh0 += dh_final
    ECHO_LAUNCH(state_passing_bwd_kernel<Real>, grid_for(g.batch * g.H * g.P * g.N), kThreads)(g, ws.cin, dh_final, ws.dstates, dh0);
    check("ssd_scan state_passing_bwd");
  }
  if (g.chunks == 0) return;
  ECHO_LAUNCH(dm_kernel<Real>, tile_blocks(tq * tq, g, g.batch * g.H), kTileThreads)(g, x, dy, ws.dM);
  check("ssd_scan dm");
  ECHO_LAUNCH(dcb_kernel<Real>, grid_for(g.batch * g.chunks * g.G * g.Q * g.Q), kThreads)(g, dt, ws.L, ws.dM, ws.dCB);
  check("ssd_scan dcb");
  ECHO_LAUNCH(ddt_diag_kernel<Real>, grid_for(bhcq), kThreads)(g, dt, ws.L, ws.CB, ws.dM, ws.ddt_diag);
  check("ssd_scan ddt_diag");
  ECHO_LAUNCH(row_prefix_kernel<Real>, grid_for(bhcq), kThreads)(g, ws.dM);
  check("ssd_scan row_prefix");
  ECHO_LAUNCH(dx_kernel<Real>, tile_blocks(tq * tp, g, g.batch * g.H), kTileThreads)(g, dt, B, D, ws.cout, ws.L, ws.CB, ws.dstates,
                                                                      dy, dx);
  check("ssd_scan dx");
  ECHO_LAUNCH(dB_kernel<Real>, tile_blocks(tq * tn, g, g.batch * g.G), kTileThreads)(g, x, dt, C, ws.cout, ws.dCB, ws.dstates, dB);
  check("ssd_scan dB");
  ECHO_LAUNCH(dC_kernel<Real>, tile_blocks(tq * tn, g, g.batch * g.G), kTileThreads)(g, B, ws.cin, ws.dCB, states, dy, dC);
  check("ssd_scan dC");
  ECHO_LAUNCH(w_in_kernel<Real>, tile_blocks(tq * tn, g, g.batch * g.H), kTileThreads)(g, C, ws.cin, states, dy, ws.w_in_part);
  check("ssd_scan w_in");
  ECHO_LAUNCH(w_out_kernel<Real>, tile_blocks(tq * tp, g, g.batch * g.H), kTileThreads)(g, x, B, ws.dstates, ws.xv_part);
  check("ssd_scan w_out");
  ECHO_LAUNCH(w_chunk_kernel<Real>, row_blocks(g.batch * g.H * g.chunks, "ssd_scan"), kThreads)(g, ws.cin, states, ws.dstates, ws.w_chunk);
  check("ssd_scan w_chunk");
  ECHO_LAUNCH(da_kernel<Real>, grid_for(bhcq), kThreads)(g, dt, A, ws.cout, ws.dM, ws.ddt_diag, ws.w_in_part, ws.xv_part,
                                          ws.w_chunk, ddt, ws.dA_terms);
  check("ssd_scan da");
  if (dD) {
    ECHO_LAUNCH(dD_terms_kernel<Real>, grid_for(g.batch * g.T * g.H), kThreads)(g, x, dy, ws.dD_terms);
    check("ssd_scan dD_terms");
  }
  ECHO_LAUNCH(head_sums_kernel<Real>, g.H, kThreads)(g, ws.dA_terms, ws.dD_terms, dA, dD);
  check("ssd_scan head_sums");
}

template <typename Real>
void ssd_step(const Real* x, const Real* dt, const Real* A, const Real* B, const Real* C, const Real* D,
              Real* state, Real* y, int64_t batch, int64_t H, int64_t P, int64_t G, int64_t N) {
  const int64_t warps = batch * H * P;
  if (warps == 0) return;
  const int64_t threads = warps * 32;
  ECHO_LAUNCH(step_kernel<Real>, static_cast<int>((threads + kThreads - 1) / kThreads), kThreads)(x, dt, A, B, C, D, state, y, batch,
                                                                                 H, P, G, N);
  check_launch("ssd_step");
}

// The float kernels train; the double ones serve the float64 gradient check of
// the CUDA path (ops/ssd_scan.cpp dispatches on the tensors' dtype).
#define ECHO_SSD_INSTANTIATE(Real)                                                                              \
  template void ssd_scan_forward<Real>(const SsdDims&, const Real*, const Real*, const Real*, const Real*,      \
                                       const Real*, const Real*, const Real*, Real*, Real*, Real*, Real*);      \
  template void ssd_scan_backward<Real>(const SsdDims&, const Real*, const Real*, const Real*, const Real*,     \
                                        const Real*, const Real*, const Real*, const Real*, const Real*, Real*, \
                                        Real*, Real*, Real*, Real*, Real*, Real*, Real*);                        \
  template void ssd_step<Real>(const Real*, const Real*, const Real*, const Real*, const Real*, const Real*,     \
                               Real*, Real*, int64_t, int64_t, int64_t, int64_t, int64_t);
ECHO_SSD_INSTANTIATE(float)
ECHO_SSD_INSTANTIATE(double)
#undef ECHO_SSD_INSTANTIATE

}  // namespace echo::gpu
