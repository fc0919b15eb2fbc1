// Element-wise primitives the Tensor class itself needs on the GPU (fill, cast,
// accumulate). They live with autograd/ because Tensor methods use them; the
// kernels are in autograd/device_kernels.cu. Declared for every build; the
// definitions exist only when ECHO_HAVE_CUDA.
#pragma once

#include <cstdint>

namespace echo::devk {

void fill_f32(float* dst, int64_t n, float value);
void fill_f64(double* dst, int64_t n, double value);
void fill_bytes_zero(void* dst, int64_t bytes);
// dst += alpha * src
void axpy_f32(float* dst, const float* src, int64_t n, float alpha);
void axpy_f64(double* dst, const double* src, int64_t n, double alpha);
// Casts between the floating storage types (f32, f64, bf16 as uint16).
void cast_f32_to_f64(double* dst, const float* src, int64_t n);
void cast_f64_to_f32(float* dst, const double* src, int64_t n);
void cast_f32_to_bf16(uint16_t* dst, const float* src, int64_t n);
void cast_bf16_to_f32(float* dst, const uint16_t* src, int64_t n);

}  // namespace echo::devk
