#pragma once
#include <cstdint>

namespace echo::gpu {
// kind: 0 sigmoid, 1 silu, 2 softplus, 3 exp, 4 relu, 5 tanh (same order as ops/unary.cpp)
void unary_forward(int kind, const float* x, float* y, int64_t n);
// dx += dy · f'(x); y is f(x) (used where cheaper)
void unary_backward(int kind, const float* x, const float* y, const float* dy, float* dx, int64_t n);
}  // namespace echo::gpu
