// The SSD scan as its definition: the state-space recurrence, one time step at a
// time, in float64 on plain vectors, forward and backward. No chunks, no tiling:
// the oracle the tests hold the tuned kernels to, and the first file to read.
//
// Reading order: docs/ssd.md (the derivation of the chunked form) → this file →
// ops/ssd_scan.cpp (the chunked CPU kernel) → cuda/ssd_scan.cu (the CUDA twin).
#pragma once

#include <cstdint>
#include <vector>

namespace echo::reference {

struct SsdShape {
  int64_t batch, T, H, P, G, N;  // heads H in G groups of H/G heads sharing B and C
};

// Row-major, as the op takes them: x [b,T,H,P], dt [b,T,H], A [H], B and C
// [b,T,G,N], D [H] and h0 [b,H,P,N] (empty: zero).
struct SsdInputs {
  std::vector<double> x, dt, A, B, C, D, h0;
};

// y [b,T,H,P], h_final [b,H,P,N]; the gradients (shaped like the inputs) when
// the backward ran.
struct SsdResults {
  std::vector<double> y, h_final;
  std::vector<double> dx, ddt, dA, dB, dC, dD, dh0;
};

// h_t = exp(dt_t A) h_{t−1} + dt_t x_t ⊗ B_t,  y_t = h_t C_t + D x_t  (h_{−1} = h0).
// With dy non-empty, also the gradients of L = Σ dy∘y + Σ dh_final∘h_final
// (dh_final empty: zero), by running the recurrence backwards in time.
SsdResults ssd_scan_sequential(const SsdShape& shape, const SsdInputs& in, const std::vector<double>& dy = {},
                               const std::vector<double>& dh_final = {});

}  // namespace echo::reference
