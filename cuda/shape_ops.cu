// CUDA twin of ops/shape_ops.cpp: one thread per destination element, the
// same index maps as the CPU loops.
#include "cuda/common.cuh"
#include "cuda/shape_ops.cuh"

namespace echo::gpu {
namespace {

// Output index o = (((a·n1 + j)·B + b)·n0 + i)·C + c.
__global__ void transpose_kernel(const float* x, float* out, int64_t A, int64_t n0, int64_t B, int64_t n1,
                                 int64_t C, bool accumulate) {
  const int64_t total = A * n1 * B * n0 * C;
  ECHO_GRID_STRIDE(o, total) {
    int64_t rest = o;
    const int64_t c = rest % C; rest /= C;
    const int64_t i = rest % n0; rest /= n0;
    const int64_t b = rest % B; rest /= B;
    const int64_t j = rest % n1;
    const int64_t a = rest / n1;
    const float v = x[(((a * n0 + i) * B + b) * n1 + j) * C + c];
    if (accumulate) out[o] += v;
    else out[o] = v;
  }
}

__global__ void copy_block_kernel(const float* src, int64_t src_n, int64_t src_offset, float* dst, int64_t dst_n,
                                  int64_t dst_offset, int64_t A, int64_t count, int64_t C, bool accumulate) {
  ECHO_GRID_STRIDE(e, A * count * C) {
    const int64_t c = e % C;
    const int64_t i = (e / C) % count;
    const int64_t a = e / (C * count);
    const float v = src[(a * src_n + src_offset + i) * C + c];
    float& d = dst[(a * dst_n + dst_offset + i) * C + c];
    if (accumulate) d += v;
    else d = v;
  }
}

}  // namespace

void transpose_dims(const float* x, float* out, int64_t A, int64_t n0, int64_t B, int64_t n1, int64_t C,
                    bool accumulate) {
  const int64_t total = A * n0 * B * n1 * C;
  if (total == 0) return;
  ECHO_LAUNCH(transpose_kernel, grid_for(total), kThreads)(x, out, A, n0, B, n1, C, accumulate);
  check_launch("transpose");
}
void copy_block(const float* src, int64_t src_n, int64_t src_offset, float* dst, int64_t dst_n,
                int64_t dst_offset, int64_t A, int64_t count, int64_t C, bool accumulate) {
  const int64_t total = A * count * C;
  if (total == 0) return;
  ECHO_LAUNCH(copy_block_kernel, grid_for(total), kThreads)(src, src_n, src_offset, dst, dst_n, dst_offset, A, count, C,
                                                   accumulate);
  check_launch("copy_block (slice/concat)");
}

}  // namespace echo::gpu
