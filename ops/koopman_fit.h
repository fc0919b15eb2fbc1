// The closed-form Koopman operator of Spectral Koopman Attention, spec §1.4.
// docs/ska.md derives the forward, the backward and the streaming form.
#pragma once
#include "autograd/tensor.h"

namespace echo {

struct KoopmanOptions {
  int64_t chunk_size = 64;
  double ridge = 1e-3;
  int power_steps = 2;   // K
  int power_iters = 6;
};

// k, q [b,T,H,r] (normalised), v [b,T,H,P], gamma [1], beta [b,T,H] or undefined (=1),
// mask [b,T] 0/1 or undefined (undefined = chunk-causal mode, given = prefix mode),
// coef [H,K+1] or undefined (power filter). Returns y [b,T,H,P].
// Differentiable in k, q, v, gamma, beta, coef (α detached).
Tensor koopman_fit(const Tensor& k, const Tensor& q, const Tensor& v, const Tensor& gamma,
                   const Tensor& beta, const Tensor& mask, const Tensor& coef,
                   const KoopmanOptions& options = {});

// The spectral-scale estimate σ̂ of every operator the op builds (no autograd):
// [b,H,n_ops] with n_ops = ceil(T/S) in chunk mode (operator c is read by chunk c;
// σ̂ = 0 for the empty operator of chunk 0) and 1 in prefix mode. α = 1/max(1,σ̂).
// For tests and gradient checks (which need σ̂ < 1 so that the detached α is 1).
Tensor koopman_fit_sigma(const Tensor& k, const Tensor& beta, const Tensor& mask,
                         const KoopmanOptions& options = {});

// Streaming state for decoding (spec §4), per batch element and head: committed
// statistics (G, M, C) at the last chunk boundary, the readout R [P,r] built from
// them, the running statistics of the current chunk and the previous key.
// Size is independent of the number of tokens seen. No autograd.
class KoopmanStream {
 public:
  KoopmanStream(int64_t batch, int64_t heads, int64_t rank, int64_t value_dim, DType dtype,
                Device device, const KoopmanOptions& options);
  // k_t, q_t [b,H,r]; v_t [b,H,P]; beta_t [b,H] or undefined; gamma [1]; coef [H,K+1] or
  // undefined. Returns y_t [b,H,P] = R q_t (R from the statistics before this chunk).
  Tensor step(const Tensor& k_t, const Tensor& q_t, const Tensor& v_t, const Tensor& beta_t,
              const Tensor& gamma, const Tensor& coef);
  int64_t state_bytes() const;
  int64_t position() const { return position_; }

 private:
  int64_t b_, H_, r_, P_;
  DType dtype_;
  Device device_;
  KoopmanOptions opt_;
  int64_t position_ = 0;
  // C and R are kept transposed ([r,P] per head), the layout the readout uses.
  Tensor G_, M_, Ct_;         // committed statistics (no ridge) [b,H,r,r], [b,H,r,r], [b,H,r,P]
  Tensor Gc_, Mc_, Ctc_;      // current chunk's running statistics
  Tensor Rt_;                 // readout Rᵀ [b,H,r,P]; y_t = R q_t
  Tensor prev_k_;             // [b,H,r]
};

}  // namespace echo
