#pragma once
#include <cstdint>
#include <vector>

namespace echo::gpu {
// Fused AdamW update of one parameter tensor (see train/optimizer.h for the math).
// bias1 = 1 − β₁ᵗ, bias2 = 1 − β₂ᵗ, decay_factor = 1 − lr·wd (1 when no decay).
void adamw_step(float* p, const float* g, float* m, float* v, int64_t n, float lr, float beta1,
                float beta2, float eps, float bias1, float bias2, float decay_factor);
// One gradient tensor of a reduction over many: data (f32, on the device) and
// n; first_block and blocks are filled in by plan_sum_squares.
struct GradSlice {
  const float* data;
  int64_t n;
  int64_t first_block, blocks;
};
// Plans the reduction (fills first_block/blocks) and returns the workspace it
// needs, in doubles on the device (from the caching allocator: no
// cudaMalloc/cudaFree per step).
int64_t plan_sum_squares(std::vector<GradSlice>& slices);
// Σ over every slice of Σ g² (in double) and whether every element is finite:
// two deterministic passes on the device and one copy of the two results back.
double sum_squares(const std::vector<GradSlice>& slices, double* workspace, bool* finite);
}  // namespace echo::gpu
