#pragma once
#include <cstdint>

namespace echo::gpu {
constexpr int64_t kAttentionMaxHeadDim = 128;  // 32 lanes × 4 registers per row

// RoPE on x [B,T,H,dh] at positions pos_offset..; inverse applies the transpose
// rotation; accumulate adds into y instead of writing it. table: scratch of
// rope_table_floats(T, dh) floats on the device (the cos/sin of each position).
int64_t rope_table_floats(int64_t T, int64_t dh);
void causal_attention_rope(const float* x, float* y, int64_t B, int64_t T, int64_t H, int64_t dh, double base,
                           int64_t pos_offset, bool inverse, bool accumulate, float* table);
// q, k already rotated; o [B,T,H,dh]; lse [B,H,T] = log Σ_j exp(s_ij).
void causal_attention_forward(const float* q, const float* k, const float* v, float* o, float* lse, int64_t B,
                              int64_t T, int64_t H, int64_t dh);
// Writes D [B,H,T] = dO·O (always), dq_rot and dk_rot (when non-null); adds into dv (when non-null).
void causal_attention_backward(const float* q, const float* k, const float* v, const float* o, const float* lse,
                               const float* dout, float* D, float* dq_rot, float* dk_rot, float* dv, int64_t B,
                               int64_t T, int64_t H, int64_t dh);
}  // namespace echo::gpu
