// The f32 loops whose cost is the exponential: sigmoid and silu with their
// derivatives, and the exponentials of a softmax row. glibc's expf is a call per
// element that the compiler cannot vectorise; these loops use exp_poly
// (ops/exp_poly.h, within 1.3 ulp of exp) and are compiled for AVX-512,
// AVX2+FMA and baseline x86-64, the loader picking the one the CPU supports
// (as the scan and fit kernels are). They change results only by rounding: the
// tests that compare f32 against f64 references state their tolerances, and the
// f64 paths, the reference for gradient checks, keep std::exp. A reduction here
// (sum_exp_shifted) adds in vector lanes, so its rounding depends on the clone
// the CPU selects, never on the thread count.
#pragma once

#include <cstdint>

namespace echo::vmath {

// s_i = σ(z_i) = 1 / (1 + e^(−z_i))
void sigmoid(const float* z, float* s, int64_t n);
// y_i = silu(x_i) = x_i / (1 + e^(−x_i))
void silu(const float* x, float* y, int64_t n);
// y_i = e^(x_i)
void exp(const float* x, float* y, int64_t n);
// dx_i (+)= dy_i · silu'(x_i),  silu'(x) = σ(x)(1 + x(1 − σ(x))); `add` false writes
void silu_backward(const float* x, const float* dy, float* dx, int64_t n, bool add);
// Σ_i e^(z_i − shift)
float sum_exp_shifted(const float* z, int64_t n, float shift);
// z_i ← scale · e^(z_i − shift)
void exp_shifted_scaled(float* z, int64_t n, float shift, float scale);

}  // namespace echo::vmath
