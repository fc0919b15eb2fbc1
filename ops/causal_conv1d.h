#pragma once
#include "autograd/tensor.h"

namespace echo {
// x [b,T,C], w [C,W], bias [C] or undefined:
// y[t,c] = bias[c] + Σ_{k<W} w[c,k] · x[t−(W−1)+k, c], x at negative time = 0.
Tensor causal_conv1d(const Tensor& x, const Tensor& w, const Tensor& bias = Tensor());

// One decoding step (no autograd): x_t [b,C]; conv_state [b,C,W−1] holds the last
// W−1 inputs (oldest first) and is updated in place. Returns y_t [b,C].
Tensor causal_conv1d_step(const Tensor& x_t, Tensor& conv_state, const Tensor& w,
                          const Tensor& bias = Tensor());
}  // namespace echo
