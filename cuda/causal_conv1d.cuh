#pragma once
#include <cstdint>

namespace echo::gpu {
// x, y [b,T,C], w [C,W], bias [C] or null.
void causal_conv1d_forward(const float* x, const float* w, const float* bias, float* y, int64_t b, int64_t T,
                           int64_t C, int64_t W);
// Adds into dx [b,T,C], dw [C,W], dbias [C]; any may be null. workspace:
// causal_conv1d_workspace_floats(...) floats (needed when dw or dbias is given).
void causal_conv1d_backward(const float* x, const float* w, const float* dy, float* dx, float* dw, float* dbias,
                            float* workspace, int64_t b, int64_t T, int64_t C, int64_t W);
int64_t causal_conv1d_workspace_floats(int64_t b, int64_t T, int64_t C, int64_t W);
// One decode step: x_t, y [b,C]; state [b,C,W−1] (oldest first) is shifted in place.
void causal_conv1d_step(const float* x_t, float* state, const float* w, const float* bias, float* y, int64_t b,
                        int64_t C, int64_t W);
}  // namespace echo::gpu
