// Reading order: docs/ops_norms_conv_attention.md → ops/reference/causal_attention.cpp →
// ops/causal_attention.cpp → this file.
//
// CUDA twin of ops/causal_attention.cpp: a fused causal attention that never
// stores a T×T matrix. A block holds kWarps rows (one per warp) of one (b, h);
// it walks over tiles of 32 keys (forward, dq) or 32 queries (dk, dv) staged in
// shared memory, one tile row per lane: lane ℓ computes the score of its key
// (or query) against the warp's row, then the warp accumulates the 32 terms in
// order, each lane owning the head dims ℓ, ℓ+32, ... in registers.
//   forward: online softmax (running max m, running sum l, rescaled accumulator),
//            writes o and L = m + log l;
//   dq pass: D_i = dO_i·o_i, dS_ij = P_ij (dO_i·v_j − D_i), dq'_i = scale Σ_j dS_ij k'_j;
//   dk/dv pass (one warp per key row): dv_j = Σ_i P_ij dO_i, dk'_j = scale Σ_i dS_ij q'_i.
// Every output element is written by one thread: no atomics, deterministic.
#include <cmath>

#include "cuda/block_reduce.cuh"
#include "cuda/causal_attention.cuh"

namespace echo::gpu {
namespace {

constexpr int kWarps = 4;                            // rows per block, one per warp
constexpr int kTile = 32;                            // keys/queries per shared tile, one per lane
constexpr int kPerLane = kAttentionMaxHeadDim / 32;  // head dims per lane: lane + 32·r
constexpr unsigned kFull = 0xffffffffu;

// Butterfly max (the twin of warp_sum in cuda/block_reduce.cuh): every lane ends
// with the same value.
__device__ inline float warp_max(float v) {
  for (int off = 16; off > 0; off >>= 1) v = fmaxf(v, __shfl_xor_sync(kFull, v, off));
  return v;
}

struct Dims {
  int64_t T, H, dh;
  __device__ int64_t at(int64_t b, int64_t t, int64_t h) const { return ((b * T + t) * H + h) * dh; }
};

__device__ inline float dot(const float* a, const float* b, int64_t n) {
  float s = 0;
  for (int64_t d = 0; d < n; ++d) s += a[d] * b[d];
  return s;
}

// Copies rows first..first+kTile−1 of x (zeros past T) into tile [kTile][ld].
__device__ inline void load_tile(float* tile, int ld, const float* x, const Dims& D, int64_t b, int64_t h,
                                 int64_t first) {
  for (int64_t e = threadIdx.x; e < kTile * D.dh; e += blockDim.x) {
    const int64_t row = e / D.dh, d = e % D.dh, t = first + row;
    tile[row * ld + d] = t < D.T ? x[D.at(b, t, h) + d] : 0.f;
  }
}

// The rotation of each (position, pair): table[(t·half + j)·2 + {0, 1}] =
// cos, sin of θ = (t + pos_offset)·base^(−2j/dh), computed in double and rounded
// once (as the CPU does), for the T positions of a call — B·H times fewer
// evaluations of pow/cos/sin than computing them per element.
__global__ void rope_table_kernel(float* table, int64_t T, int64_t dh, double base, int64_t pos_offset) {
  const int64_t half = dh / 2;
  ECHO_GRID_STRIDE(p, T * half) {  // p = t·half + j
    const int64_t t = p / half + pos_offset, j = p % half;
    const double angle = (double)t * pow(base, -2.0 * (double)j / (double)dh);
    table[2 * p] = (float)cos(angle);
    table[2 * p + 1] = (float)sin(angle);
  }
}

// inverse: the transpose rotation (sin negated: −(float)sin θ = (float)(−sin θ)).
__global__ void rope_kernel(const float* x, float* y, const float* table, int64_t n, int64_t T, int64_t H,
                            int64_t dh, bool inverse, bool accumulate) {
  const int64_t half = dh / 2;
  ECHO_GRID_STRIDE(p, n) {  // p = row·half + j
    const int64_t row = p / half, j = p % half;
    const int64_t t = (row / H) % T;
    const float c = table[2 * (t * half + j)];
    const float s = inverse ? -table[2 * (t * half + j) + 1] : table[2 * (t * half + j) + 1];
    const float* xr = x + row * dh;
    float* yr = y + row * dh;
    const float a = xr[j], b = xr[j + half];
    const float ya = a * c - b * s, yb = b * c + a * s;
    if (accumulate) {
      yr[j] += ya;
      yr[j + half] += yb;
    } else {
      yr[j] = ya;
      yr[j + half] = yb;
    }
  }
}

__global__ void forward_kernel(const float* q, const float* k, const float* v, float* o, float* lse, Dims D,
                               float scale) {
  ECHO_DYNAMIC_SHARED(float, smem);
  const int ld = (int)D.dh + 1;  // padded tile rows: lanes reading their own row hit distinct banks
  float* q_rows = smem;                    // [kWarps][dh]
  float* k_tile = q_rows + kWarps * D.dh;  // [kTile][ld]
  float* v_tile = k_tile + kTile * ld;     // [kTile][ld]
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t bh = blockIdx.y, b = bh / D.H, h = bh % D.H;
  const int64_t first = (int64_t)blockIdx.x * kWarps, i = first + warp;
  const bool valid = i < D.T;
  const int64_t last = min(D.T - 1, first + kWarps - 1);
  float* qi = q_rows + warp * D.dh;
  if (valid)
    for (int64_t d = lane; d < D.dh; d += 32) qi[d] = q[D.at(b, i, h) + d];
  float m = -INFINITY, l = 0.f, acc[kPerLane];
#pragma unroll
  for (int r = 0; r < kPerLane; ++r) acc[r] = 0.f;
  for (int64_t j0 = 0; j0 <= last; j0 += kTile) {
    __syncthreads();  // the previous tile is consumed
    load_tile(k_tile, ld, k, D, b, h, j0);
    load_tile(v_tile, ld, v, D, b, h, j0);
    __syncthreads();
    if (!valid || j0 > i) continue;  // warp-uniform
    const int64_t j = j0 + lane;
    const float s = j <= i ? dot(qi, k_tile + lane * ld, D.dh) * scale : -INFINITY;
    const float m_new = fmaxf(m, warp_max(s));  // finite: key j0 <= i is in the tile
    const float p = j <= i ? expf(s - m_new) : 0.f;
    const float corr = expf(m - m_new);  // 0 on the first tile (m = −inf)
    l = l * corr + warp_sum(p);
#pragma unroll
    for (int r = 0; r < kPerLane; ++r) acc[r] *= corr;
    for (int jj = 0; jj < kTile; ++jj) {
      const float pj = __shfl_sync(kFull, p, jj);
#pragma unroll
      for (int r = 0; r < kPerLane; ++r) {
        const int64_t d = lane + 32 * r;
        if (d < D.dh) acc[r] += pj * v_tile[jj * ld + d];
      }
    }
    m = m_new;
  }
  if (!valid) return;
#pragma unroll
  for (int r = 0; r < kPerLane; ++r) {
    const int64_t d = lane + 32 * r;
    if (d < D.dh) o[D.at(b, i, h) + d] = acc[r] / l;
  }
  if (lane == 0) lse[bh * D.T + i] = m + logf(l);
}

// One warp per query row i: D_i, and dq'_i when dq is non-null.
__global__ void backward_dq_kernel(const float* q, const float* k, const float* v, const float* o,
                                   const float* lse, const float* dout, float* Dvec, float* dq, Dims D,
                                   float scale) {
  ECHO_DYNAMIC_SHARED(float, smem);
  const int ld = (int)D.dh + 1;
  float* q_rows = smem;                     // [kWarps][dh]
  float* do_rows = q_rows + kWarps * D.dh;  // [kWarps][dh]
  float* k_tile = do_rows + kWarps * D.dh;  // [kTile][ld]
  float* v_tile = k_tile + kTile * ld;      // [kTile][ld]
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t bh = blockIdx.y, b = bh / D.H, h = bh % D.H;
  const int64_t first = (int64_t)blockIdx.x * kWarps, i = first + warp;
  const bool valid = i < D.T;
  const int64_t last = min(D.T - 1, first + kWarps - 1);
  float* qi = q_rows + warp * D.dh;
  float* doi = do_rows + warp * D.dh;
  float Di = 0.f, Li = 0.f;
  if (valid) {
    float part = 0.f;
    for (int64_t d = lane; d < D.dh; d += 32) {
      qi[d] = q[D.at(b, i, h) + d];
      doi[d] = dout[D.at(b, i, h) + d];
      part += doi[d] * o[D.at(b, i, h) + d];
    }
    Di = warp_sum(part);
    Li = lse[bh * D.T + i];
    if (lane == 0) Dvec[bh * D.T + i] = Di;
  }
  if (!dq) return;  // kernel-uniform: no thread is left waiting at a barrier
  float acc[kPerLane];
#pragma unroll
  for (int r = 0; r < kPerLane; ++r) acc[r] = 0.f;
  for (int64_t j0 = 0; j0 <= last; j0 += kTile) {
    __syncthreads();
    load_tile(k_tile, ld, k, D, b, h, j0);
    load_tile(v_tile, ld, v, D, b, h, j0);
    __syncthreads();
    if (!valid || j0 > i) continue;
    const int64_t j = j0 + lane;
    float ds = 0.f;
    if (j <= i) {
      const float p = expf(dot(qi, k_tile + lane * ld, D.dh) * scale - Li);
      ds = p * (dot(doi, v_tile + lane * ld, D.dh) - Di);
    }
    for (int jj = 0; jj < kTile; ++jj) {
      const float dsj = __shfl_sync(kFull, ds, jj);
#pragma unroll
      for (int r = 0; r < kPerLane; ++r) {
        const int64_t d = lane + 32 * r;
        if (d < D.dh) acc[r] += dsj * k_tile[jj * ld + d];
      }
    }
  }
  if (!valid) return;
#pragma unroll
  for (int r = 0; r < kPerLane; ++r) {
    const int64_t d = lane + 32 * r;
    if (d < D.dh) dq[D.at(b, i, h) + d] = acc[r] * scale;
  }
}

// One warp per key row j: dv_j (added) and dk'_j (written), over queries i >= j.
__global__ void backward_dkdv_kernel(const float* q, const float* k, const float* v, const float* lse,
                                     const float* dout, const float* Dvec, float* dk, float* dv, Dims D,
                                     float scale) {
  ECHO_DYNAMIC_SHARED(float, smem);
  const int ld = (int)D.dh + 1;
  float* k_rows = smem;                     // [kWarps][dh]
  float* v_rows = k_rows + kWarps * D.dh;   // [kWarps][dh]
  float* q_tile = v_rows + kWarps * D.dh;   // [kTile][ld]
  float* do_tile = q_tile + kTile * ld;     // [kTile][ld]
  float* lse_tile = do_tile + kTile * ld;   // [kTile]
  float* D_tile = lse_tile + kTile;         // [kTile]
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t bh = blockIdx.y, b = bh / D.H, h = bh % D.H;
  const int64_t first = (int64_t)blockIdx.x * kWarps, j = first + warp;
  const bool valid = j < D.T;
  float* kj = k_rows + warp * D.dh;
  float* vj = v_rows + warp * D.dh;
  if (valid)
    for (int64_t d = lane; d < D.dh; d += 32) {
      kj[d] = k[D.at(b, j, h) + d];
      vj[d] = v[D.at(b, j, h) + d];
    }
  float dk_acc[kPerLane], dv_acc[kPerLane];
#pragma unroll
  for (int r = 0; r < kPerLane; ++r) dk_acc[r] = dv_acc[r] = 0.f;
  for (int64_t i0 = first; i0 < D.T; i0 += kTile) {  // queries before the block's first key see none of its keys
    __syncthreads();
    load_tile(q_tile, ld, q, D, b, h, i0);
    load_tile(do_tile, ld, dout, D, b, h, i0);
    if (threadIdx.x < kTile) {
      const int64_t i = i0 + threadIdx.x;
      lse_tile[threadIdx.x] = i < D.T ? lse[bh * D.T + i] : 0.f;
      D_tile[threadIdx.x] = i < D.T ? Dvec[bh * D.T + i] : 0.f;
    }
    __syncthreads();
    if (!valid) continue;
    const int64_t i = i0 + lane;
    float p = 0.f, ds = 0.f;
    if (i < D.T && i >= j) {
      p = expf(dot(q_tile + lane * ld, kj, D.dh) * scale - lse_tile[lane]);
      ds = p * (dot(do_tile + lane * ld, vj, D.dh) - D_tile[lane]);
    }
    for (int ii = 0; ii < kTile; ++ii) {
      const float pi = __shfl_sync(kFull, p, ii);
      const float dsi = __shfl_sync(kFull, ds, ii);
#pragma unroll
      for (int r = 0; r < kPerLane; ++r) {
        const int64_t d = lane + 32 * r;
        if (d < D.dh) {
          dv_acc[r] += pi * do_tile[ii * ld + d];
          dk_acc[r] += dsi * q_tile[ii * ld + d];
        }
      }
    }
  }
  if (!valid) return;
#pragma unroll
  for (int r = 0; r < kPerLane; ++r) {
    const int64_t d = lane + 32 * r;
    if (d >= D.dh) continue;
    if (dv) dv[D.at(b, j, h) + d] += dv_acc[r];
    if (dk) dk[D.at(b, j, h) + d] = dk_acc[r] * scale;
  }
}

dim3 attention_grid(int64_t B, int64_t T, int64_t H, const char* what) {
  if (B * H > 65535) throw std::runtime_error(std::string(what) + ": batch·heads must be <= 65535");
  return dim3((unsigned)((T + kWarps - 1) / kWarps), (unsigned)(B * H));
}
size_t tile_floats(int64_t dh) { return (size_t)kTile * (dh + 1); }

}  // namespace

int64_t rope_table_floats(int64_t T, int64_t dh) { return T * dh; }

void causal_attention_rope(const float* x, float* y, int64_t B, int64_t T, int64_t H, int64_t dh, double base,
                           int64_t pos_offset, bool inverse, bool accumulate, float* table) {
  const int64_t n = B * T * H * (dh / 2);
  if (n == 0) return;
  ECHO_LAUNCH(rope_table_kernel, grid_for(T * (dh / 2)), kThreads)(table, T, dh, base, pos_offset);
  check_launch("causal_attention rope table");
  ECHO_LAUNCH(rope_kernel, grid_for(n), kThreads)(x, y, table, n, T, H, dh, inverse, accumulate);
  check_launch("causal_attention rope");
}

void causal_attention_forward(const float* q, const float* k, const float* v, float* o, float* lse, int64_t B,
                              int64_t T, int64_t H, int64_t dh) {
  if (B * T * H == 0) return;
  const size_t shared = sizeof(float) * (kWarps * dh + 2 * tile_floats(dh));
  ECHO_LAUNCH(forward_kernel, attention_grid(B, T, H, "causal_attention_forward"), kWarps * 32, shared)(
      q, k, v, o, lse, Dims{T, H, dh}, 1.f / sqrtf((float)dh));
  check_launch("causal_attention_forward");
}

void causal_attention_backward(const float* q, const float* k, const float* v, const float* o, const float* lse,
                               const float* dout, float* D, float* dq_rot, float* dk_rot, float* dv, int64_t B,
                               int64_t T, int64_t H, int64_t dh) {
  if (B * T * H == 0) return;
  const dim3 grid = attention_grid(B, T, H, "causal_attention_backward");
  const Dims dims{T, H, dh};
  const float scale = 1.f / sqrtf((float)dh);
  const size_t shared_dq = sizeof(float) * (2 * kWarps * dh + 2 * tile_floats(dh));
  ECHO_LAUNCH(backward_dq_kernel, grid, kWarps * 32, shared_dq)(q, k, v, o, lse, dout, D, dq_rot, dims, scale);
  check_launch("causal_attention_backward (dq)");
  if (!dk_rot && !dv) return;
  const size_t shared_dkdv = sizeof(float) * (2 * kWarps * dh + 2 * tile_floats(dh) + 2 * kTile);
  ECHO_LAUNCH(backward_dkdv_kernel, grid, kWarps * 32, shared_dkdv)(q, k, v, lse, dout, D, dk_rot, dv, dims, scale);
  check_launch("causal_attention_backward (dk, dv)");
}

}  // namespace echo::gpu
