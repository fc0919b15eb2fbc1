// Launchers for ops/cross_entropy.cpp (f32 logits; targets i32 or i64 on the
// device, already checked to be ignore_index or in [0, V)).
#pragma once
#include <cstdint>

namespace echo::gpu {
// Per row r of logits [rows, V]: lse[r] = logsumexp(logits[r]) and
// row_loss[r] = lse[r] − logits[r, target_r] (0 for ignored rows); then
// loss[0] = inv_scored · Σ_r row_loss[r] (inv_scored = 1/n_scored, or 0).
void cross_entropy_forward(const float* logits, const void* targets, bool targets_i64, float* lse,
                           float* row_loss, float* loss, int64_t rows, int64_t V, int64_t ignore_index,
                           float inv_scored);
// dlogits[r, j] += dloss[0]·inv_scored·(exp(logits[r, j] − lse[r]) − [j == target_r]) on scored rows.
void cross_entropy_backward(const float* logits, const void* targets, bool targets_i64, const float* lse,
                            const float* dloss, float* dlogits, int64_t rows, int64_t V, int64_t ignore_index,
                            float inv_scored);
}  // namespace echo::gpu
