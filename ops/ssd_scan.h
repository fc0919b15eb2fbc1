// Mamba-2 chunked selective scan (state-space duality), spec §1.1. docs/ssd.md derives it.
#pragma once
#include "autograd/tensor.h"

namespace echo {

struct SsdResult {
  Tensor y;        // [b,T,H,P]
  Tensor h_final;  // [b,H,P,N]
};

// x [b,T,H,P], dt [b,T,H] (>0), A [H] (<0), B, C [b,T,G,N], D [H] or undefined,
// h0 [b,H,P,N] or undefined. Differentiable in x, dt, A, B, C, D, h0.
SsdResult ssd_scan(const Tensor& x, const Tensor& dt, const Tensor& A, const Tensor& B,
                   const Tensor& C, const Tensor& D = Tensor(), const Tensor& h0 = Tensor(),
                   int64_t chunk_size = 64);

// One decoding step (no autograd): x_t [b,H,P], dt_t [b,H], B_t, C_t [b,G,N];
// state [b,H,P,N] updated in place: h = exp(dt·A) h + dt x⊗B; returns y_t = h C + D x [b,H,P].
Tensor ssd_step(const Tensor& x_t, const Tensor& dt_t, const Tensor& A, const Tensor& B_t,
                const Tensor& C_t, const Tensor& D, Tensor& state);

}  // namespace echo
