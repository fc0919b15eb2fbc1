// Launchers for ops/binary.cpp. Layout: a has n elements, b has m elements with
// n = rows·m (b broadcast over the rows of a); element i of a pairs with b[i % m].
#pragma once
#include <cstdint>

namespace echo::gpu {
// kind: 0 add, 1 sub, 2 mul, 3 div (same order as ops/binary.cpp)
void binary_forward(int kind, const float* a, const float* b, float* y, int64_t n, int64_t m);
// da += ∂y/∂a · dy  (da may be null: nothing to do)
void binary_backward_a(int kind, const float* a, const float* b, const float* dy, float* da,
                       int64_t n, int64_t m);
// db[j] += Σ_r ∂y/∂b · dy over the rows r, in the CPU reference's fixed row
// chunks (ops/reductions.h); partial holds [row_chunks(n/m), m] floats and may
// be null when there is a single chunk.
void binary_backward_b(int kind, const float* a, const float* b, const float* dy, float* db,
                       float* partial, int64_t n, int64_t m);
// y = alpha·x + beta
void affine_forward(const float* x, float* y, int64_t n, float alpha, float beta);
// dx += alpha·dy
void affine_backward(const float* dy, float* dx, int64_t n, float alpha);
}  // namespace echo::gpu
