// The closed-form Koopman fit of SKA as its definition, in float64 on plain
// vectors: per (batch, head) and per operator, the statistics as direct sums over
// the positions the operator sees, explicit inverses (Gauss–Jordan), the spectral
// normalisation by power iteration on W = L⁻¹ M L⁻ᵀ, and the readout
//   y_t = Σ_j c_j (γα)^j C (G⁻¹M)^j G⁻¹ q_t.
// Forward only (its gradients are checked by finite differences). The oracle of
// the tests.
//
// Reading order: docs/ska.md → this file → ops/koopman_fit.cpp (the tuned CPU
// kernel: prefix statistics, Cholesky, the backward) → cuda/koopman_fit.cu.
#pragma once

#include <cstdint>
#include <vector>

namespace echo::reference {

struct KoopmanShape {
  int64_t batch, T, H, r, P;
};

// k, q [b,T,H,r] (normalised), v [b,T,H,P], beta [b,T,H] (empty: 1),
// mask [b,T] of 0/1 (empty: chunk mode; given: prefix mode), coef [H,K+1]
// (empty: the lag-K term alone).
struct KoopmanInputs {
  std::vector<double> k, q, v;
  double gamma;
  std::vector<double> beta, mask, coef;
};

struct KoopmanSettings {
  int64_t chunk_size;
  int power_steps;  // K
  int power_iters;
  double ridge;
};

struct KoopmanResult {
  std::vector<double> y;      // [b,T,H,P]
  std::vector<double> sigma;  // per operator, in the op's order (0 for a chunk with no past)
};

// Chunk mode: the operator of chunk c is fitted on every position before it
// (t < c·S) and read out on the chunk's positions. Prefix mode: one operator per
// (batch, head), fitted on the masked positions and read out everywhere.
KoopmanResult koopman_fit_direct(const KoopmanShape& shape, const KoopmanInputs& in, const KoopmanSettings& settings);

}  // namespace echo::reference
