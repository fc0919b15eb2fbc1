// Launchers for ops/embedding.cpp (f32 weights; ids i32 or i64 on the device).
#pragma once
#include <cstdint>

namespace echo::gpu {
// out[t, c] = weight[ids[t], c]; ids already checked to lie in [0, V).
void embedding_forward(const float* weight, const void* ids, bool ids_are_i64, float* out, int64_t n_tokens,
                       int64_t d);
// dweight[v, c] += Σ_{p in [row_start[v], row_start[v+1])} dy[order[p], c]: the
// tokens grouped by id (CSR, built on the host), summed in token order.
void embedding_backward(const float* dy, const int32_t* row_start, const int32_t* order, float* dweight,
                        int64_t V, int64_t d);
}  // namespace echo::gpu
