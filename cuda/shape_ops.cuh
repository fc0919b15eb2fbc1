// Launchers for ops/shape_ops.cpp (f32). Both kernels are pure index maps.
#pragma once
#include <cstdint>

namespace echo::gpu {
// x viewed as [A, n0, B, n1, C]; out [A, n1, B, n0, C]:
//   out[a, j, b, i, c] (+)= x[a, i, b, j, c]      (+= when accumulate)
void transpose_dims(const float* x, float* out, int64_t A, int64_t n0, int64_t B, int64_t n1, int64_t C,
                    bool accumulate);
// src viewed as [A, src_n, C], dst as [A, dst_n, C]; for i < count:
//   dst[a, dst_offset + i, c] (+)= src[a, src_offset + i, c]
void copy_block(const float* src, int64_t src_n, int64_t src_offset, float* dst, int64_t dst_n,
                int64_t dst_offset, int64_t A, int64_t count, int64_t C, bool accumulate);
}  // namespace echo::gpu
