// Launchers of the CUDA twin of ops/ssd_scan.cpp, instantiated for Real = float
// (training: fp32 state and accumulation) and Real = double (the float64
// gradient check of the CUDA path). docs/ssd.md maps every kernel to its CPU loop.
#pragma once
#include <cstdint>

namespace echo::gpu {

struct SsdDims {
  int64_t batch, T, H, P, G, N, Q;  // Q = chunk size
};

// Scratch (in elements of Real) the caller allocates on the device for one call.
int64_t ssd_forward_workspace_elements(const SsdDims& d);
int64_t ssd_backward_workspace_elements(const SsdDims& d);

// y [b,T,H,P], h_final [b,H,P,N], states [b,H,chunks,P,N] (the states entering
// each chunk, kept for backward). D, h0 may be null.
template <typename Real>
void ssd_scan_forward(const SsdDims& d, const Real* x, const Real* dt, const Real* A, const Real* B,
                      const Real* C, const Real* D, const Real* h0, Real* y, Real* h_final, Real* states,
                      Real* workspace);

// Adds into dx, ddt, dA, dB, dC and, when not null, dD and dh0. dh_final is the
// incoming gradient of h_final (zeros when nothing flowed). D may be null.
template <typename Real>
void ssd_scan_backward(const SsdDims& d, const Real* x, const Real* dt, const Real* A, const Real* B,
                       const Real* C, const Real* D, const Real* states, const Real* dy,
                       const Real* dh_final, Real* dx, Real* ddt, Real* dA, Real* dB, Real* dC, Real* dD,
                       Real* dh0, Real* workspace);

// One decoding step: state [b,H,P,N] ← exp(dt A) state + dt x ⊗ B; y = state C + D x.
template <typename Real>
void ssd_step(const Real* x, const Real* dt, const Real* A, const Real* B, const Real* C, const Real* D,
              Real* state, Real* y, int64_t batch, int64_t H, int64_t P, int64_t G, int64_t N);

}  // namespace echo::gpu
