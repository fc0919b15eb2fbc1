// Pointwise activations: y = f(x), dx += dy · f'(x).
#pragma once
#include "autograd/tensor.h"

namespace echo {
Tensor sigmoid(const Tensor& x);   // σ(x) = 1/(1+e^{−x})
Tensor silu(const Tensor& x);      // x·σ(x)
Tensor softplus(const Tensor& x);  // log(1+eˣ), identity above 20
Tensor exp(const Tensor& x);
Tensor relu(const Tensor& x);
Tensor tanh(const Tensor& x);
}  // namespace echo
