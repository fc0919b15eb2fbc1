// Launchers of the Koopman-fit kernels (cuda/koopman_fit.cu), the GPU twin of
// ops/koopman_fit.cpp. All pointers are device pointers to row-major data in the
// layouts documented there; optional inputs/outputs are null when absent. The
// forward and backward are instantiated for Real = float (training) and Real =
// double (the float64 gradient check of the CUDA path); the streaming pair runs
// in float only.
#pragma once
#include <cstdint>

namespace echo::gpu {

// Sizes of one call (plain values only).
struct KoopmanDims {
  int b = 0, T = 0, H = 0, r = 0, P = 0, S = 0;
  int n_chunks = 0;  // ceil(T/S)
  int n_ops = 0;     // operators per (batch, head): n_chunks (chunk mode) or 1 (prefix mode)
  int K = 0, iters = 0;
  int prefix = 0;    // 1: prefix (mask) mode
  double ridge = 0;  // rounded to Real by the launchers
};

// The kernels hold an operator's r×r matrices in shared memory: r ≤ 64, P ≤ 128.
constexpr int kKoopmanMaxRank = 64;
constexpr int kKoopmanMaxValue = 128;

// Forward: statistics + exclusive prefix (G, M, Ct: [b,H,n_ops,..] without the
// ridge), one block per operator (L, Wt, Zt, Rt, sigma, alpha), then y = Q Rᵀ.
// y may be null (operators only). gamma: device [1].
template <typename Real>
void koopman_forward(const KoopmanDims& d, const Real* k, const Real* q, const Real* v, const Real* beta,
                     const Real* mask, const Real* gamma, const Real* coef, Real* G, Real* M, Real* Ct, Real* L,
                     Real* Wt, Real* Zt, Real* Rt, Real* sigma, Real* alpha, Real* y);

// Backward, α held constant. Saved: L, Wt, Zt, Rt, Ct, alpha from the forward.
// Workspaces (each [b·H·n_ops·..]): dG, dM (r×r), dCt, dRt (r×P), ds (1),
// dcoef_op (K+1). Gradients are ADDED into dq, dk, dv, dbeta, dgamma, dcoef
// (any may be null).
template <typename Real>
void koopman_backward(const KoopmanDims& d, const Real* k, const Real* q, const Real* v, const Real* beta,
                      const Real* mask, const Real* gamma, const Real* coef, const Real* L, const Real* Wt,
                      const Real* Zt, const Real* Rt, const Real* Ct, const Real* alpha, const Real* dy, Real* dG,
                      Real* dM, Real* dCt, Real* dRt, Real* ds, Real* dcoef_op, Real* dq, Real* dk, Real* dv,
                      Real* dbeta, Real* dgamma, Real* dcoef);

// Streaming (spec §4), per (batch·head) bh: y = R q_t, then the token joins the
// running statistics (Gc, Mc, Ctc); has_prev: whether prev_k holds k_{t-1}.
void koopman_stream_step(int BH, int r, int P, const float* k, const float* q, const float* v, const float* beta,
                         const float* Rt, float* Gc, float* Mc, float* Ctc, float* prev_k, int has_prev, float* y);

// At a chunk boundary: committed += running, running = 0, and the readout Rt is
// rebuilt from the committed statistics (L, Wt, Zt, sigma, alpha: scratch).
void koopman_stream_commit(int b, int H, int r, int P, int K, int iters, float ridge, const float* gamma,
                           const float* coef, float* G, float* M, float* Ct, float* Gc, float* Mc, float* Ctc,
                           float* L, float* Wt, float* Zt, float* Rt, float* sigma, float* alpha);

}  // namespace echo::gpu
