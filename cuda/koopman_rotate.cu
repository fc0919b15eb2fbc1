// CUDA twin of ops/koopman_rotate.cpp: one thread per (row, pair) for z and dg;
// dγ', dω' as per-chunk partials (thread per pair, rows of the chunk in order)
// summed over chunks in order (the split of ops/reductions.h), then the clamp's
// chain rule — no atomics.
#include "cuda/block_reduce.cuh"
#include "cuda/koopman_rotate.cuh"

namespace echo::gpu {
namespace {

__device__ inline void clamp_to_disc(float gamma, float omega, float& gamma_c, float& omega_c) {
  const float rho = fmaxf(sqrtf(gamma * gamma + omega * omega), 1e-8f);
  const float s = fminf(rho, 1.f) / rho;
  gamma_c = s * gamma;
  omega_c = s * omega;
}

__global__ void forward_kernel(const float* g, const float* gamma, const float* omega, float* z, int64_t n,
                               int64_t half) {
  ECHO_GRID_STRIDE(p, n) {  // p = r·half + i
    const int64_t i = p % half;
    float gc, oc;
    clamp_to_disc(gamma[i], omega[i], gc, oc);
    const float a = g[2 * p], b = g[2 * p + 1];
    z[2 * p] = gc * a + oc * b;
    z[2 * p + 1] = -oc * a + gc * b;
  }
}

__global__ void backward_dg_kernel(const float* gamma, const float* omega, const float* dz, float* dg, int64_t n,
                                   int64_t half) {
  ECHO_GRID_STRIDE(p, n) {
    const int64_t i = p % half;
    float gc, oc;
    clamp_to_disc(gamma[i], omega[i], gc, oc);
    const float da = dz[2 * p], db = dz[2 * p + 1];
    dg[2 * p] += gc * da - oc * db;
    dg[2 * p + 1] += oc * da + gc * db;
  }
}

// partial[chunk][i][0] = Σ_rows dz_{2i} g_{2i} + dz_{2i+1} g_{2i+1}, [1] = Σ_rows dz_{2i} g_{2i+1} − dz_{2i+1} g_{2i}
__global__ void partial_kernel(const float* g, const float* dz, float* partial, int64_t rows, int64_t half) {
  const int64_t c = blockIdx.x;
  const int64_t i = blockIdx.y * (int64_t)blockDim.x + threadIdx.x;
  if (i >= half) return;
  const int64_t dk = 2 * half, end = min(rows, (c + 1) * kRowsPerChunk);
  float p_gamma = 0, p_omega = 0;
  for (int64_t r = c * kRowsPerChunk; r < end; ++r) {
    const float a = g[r * dk + 2 * i], b = g[r * dk + 2 * i + 1];
    const float da = dz[r * dk + 2 * i], db = dz[r * dk + 2 * i + 1];
    p_gamma += da * a + db * b;
    p_omega += da * b - db * a;
  }
  partial[(c * half + i) * 2] = p_gamma;
  partial[(c * half + i) * 2 + 1] = p_omega;
}

__global__ void finish_kernel(const float* partial, const float* gamma, const float* omega, float* dgamma,
                              float* domega, int64_t chunks, int64_t half) {
  ECHO_GRID_STRIDE(i, half) {
    float d_gc = 0, d_oc = 0;
    for (int64_t c = 0; c < chunks; ++c) {
      d_gc += partial[(c * half + i) * 2];
      d_oc += partial[(c * half + i) * 2 + 1];
    }
    const float ga = gamma[i], om = omega[i];
    const float rho = sqrtf(ga * ga + om * om);
    float d_ga = d_gc, d_om = d_oc;
    if (rho > 1.f) {
      const float rho3 = rho * rho * rho;
      d_ga = (om * om * d_gc - ga * om * d_oc) / rho3;
      d_om = (ga * ga * d_oc - ga * om * d_gc) / rho3;
    }
    if (dgamma) dgamma[i] += d_ga;
    if (domega) domega[i] += d_om;
  }
}

}  // namespace

int64_t koopman_rotate_workspace_floats(int64_t rows, int64_t half) { return row_chunks(rows) * half * 2 + 1; }

void koopman_rotate_forward(const float* g, const float* gamma, const float* omega, float* z, int64_t rows,
                            int64_t half) {
  const int64_t n = rows * half;
  if (n == 0) return;
  ECHO_LAUNCH(forward_kernel, grid_for(n), kThreads)(g, gamma, omega, z, n, half);
  check_launch("koopman_rotate_forward");
}

void koopman_rotate_backward(const float* g, const float* gamma, const float* omega, const float* dz, float* dg,
                             float* dgamma, float* domega, float* workspace, int64_t rows, int64_t half) {
  const int64_t n = rows * half;
  if (n == 0) return;
  if (dg) {
    ECHO_LAUNCH(backward_dg_kernel, grid_for(n), kThreads)(gamma, omega, dz, dg, n, half);
    check_launch("koopman_rotate_backward (dg)");
  }
  if (dgamma || domega) {
    const int64_t chunks = row_chunks(rows);
    const int64_t grid_y = (half + kThreads - 1) / kThreads;
    if (grid_y > 65535)
      throw std::runtime_error("koopman_rotate_backward: " + std::to_string(half) + " columns need more than 65535 blocks in y");
    dim3 grid(row_blocks(chunks, "koopman_rotate_backward"), (unsigned)grid_y);
    ECHO_LAUNCH(partial_kernel, grid, kThreads)(g, dz, workspace, rows, half);
    check_launch("koopman_rotate_backward (partials)");
    ECHO_LAUNCH(finish_kernel, grid_for(half), kThreads)(workspace, gamma, omega, dgamma, domega, chunks, half);
    check_launch("koopman_rotate_backward (dgamma, domega)");
  }
}

}  // namespace echo::gpu
