// Launchers of the CUDA twin of ops/ssd_scan.cpp (f32 inputs, fp32 state and
// accumulation). docs/ssd.md maps every kernel to its CPU loop.
#pragma once
#include <cstdint>

namespace echo::gpu {

struct SsdDims {
  int64_t batch, T, H, P, G, N, Q;  // Q = chunk size
};

// Scratch (in floats) the caller allocates on the device for one call.
int64_t ssd_forward_workspace_floats(const SsdDims& d);
int64_t ssd_backward_workspace_floats(const SsdDims& d);

// y [b,T,H,P], h_final [b,H,P,N], states [b,H,chunks,P,N] (the states entering
// each chunk, kept for backward). D, h0 may be null.
void ssd_scan_forward(const SsdDims& d, const float* x, const float* dt, const float* A, const float* B,
                      const float* C, const float* D, const float* h0, float* y, float* h_final, float* states,
                      float* workspace);

// Adds into dx, ddt, dA, dB, dC and, when not null, dD and dh0. dh_final is the
// incoming gradient of h_final (zeros when nothing flowed). D may be null.
void ssd_scan_backward(const SsdDims& d, const float* x, const float* dt, const float* A, const float* B,
                       const float* C, const float* D, const float* states, const float* dy,
                       const float* dh_final, float* dx, float* ddt, float* dA, float* dB, float* dC, float* dD,
                       float* dh0, float* workspace);

// One decoding step: state [b,H,P,N] ← exp(dt A) state + dt x ⊗ B; y = state C + D x.
void ssd_step(const float* x, const float* dt, const float* A, const float* B, const float* C, const float* D,
              float* state, float* y, int64_t batch, int64_t H, int64_t P, int64_t G, int64_t N);

}  // namespace echo::gpu
