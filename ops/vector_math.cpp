#include "ops/vector_math.h"

#include "ops/exp_poly.h"

// Sanitizer builds keep the baseline only (as ops/ssd_scan.cpp).
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__SANITIZE_ADDRESS__)
#define ECHO_VMATH_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define ECHO_VMATH_CLONES
#endif

namespace echo::vmath {

namespace {
__attribute__((always_inline)) inline float sigmoid_of(float z) { return 1.0f / (1.0f + exp_poly(-z)); }
}  // namespace

ECHO_VMATH_CLONES void sigmoid(const float* z, float* s, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) s[i] = sigmoid_of(z[i]);
}

ECHO_VMATH_CLONES void silu(const float* x, float* y, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) y[i] = x[i] / (1.0f + exp_poly(-x[i]));
}

ECHO_VMATH_CLONES void exp(const float* x, float* y, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) y[i] = exp_poly(x[i]);
}

ECHO_VMATH_CLONES void silu_backward(const float* x, const float* dy, float* dx, int64_t n, bool add) {
  if (add) {
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) {
      const float s = sigmoid_of(x[i]);
      dx[i] += dy[i] * (s * (1.0f + x[i] * (1.0f - s)));
    }
  } else {
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) {
      const float s = sigmoid_of(x[i]);
      dx[i] = dy[i] * (s * (1.0f + x[i] * (1.0f - s)));
    }
  }
}

ECHO_VMATH_CLONES float sum_exp_shifted(const float* z, int64_t n, float shift) {
  float s = 0;
#pragma omp simd reduction(+ : s)
  for (int64_t i = 0; i < n; ++i) s += exp_poly(z[i] - shift);
  return s;
}

ECHO_VMATH_CLONES void exp_shifted_scaled(float* z, int64_t n, float shift, float scale) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) z[i] = scale * exp_poly(z[i] - shift);
}

}  // namespace echo::vmath
