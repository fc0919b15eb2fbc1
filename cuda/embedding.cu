// CUDA twin of ops/embedding.cpp.
//   forward:  one thread per output element, a gather.
//   backward: one block per vocabulary row v, threads over the d columns; each
//             thread sums dy over the tokens whose id is v in token order (the
//             CSR lists built on the host), then adds once into dweight. No
//             atomics, so repeated ids accumulate in a fixed order. Cost: one
//             pass over dy plus V mostly-empty blocks.
#include "cuda/common.cuh"
#include "cuda/embedding.cuh"

namespace echo::gpu {
namespace {

template <typename Id>
__global__ void forward_kernel(const float* weight, const Id* ids, float* out, int64_t n_tokens, int64_t d) {
  ECHO_GRID_STRIDE(e, n_tokens * d) {
    const int64_t t = e / d, c = e % d;
    out[e] = weight[static_cast<int64_t>(ids[t]) * d + c];
  }
}

__global__ void backward_kernel(const float* dy, const int32_t* row_start, const int32_t* order, float* dweight,
                                int64_t d) {
  const int64_t v = blockIdx.x;
  const int32_t begin = row_start[v], end = row_start[v + 1];
  if (begin == end) return;
  for (int64_t c = threadIdx.x; c < d; c += blockDim.x) {
    float acc = 0.f;
    for (int32_t p = begin; p < end; ++p) acc += dy[static_cast<int64_t>(order[p]) * d + c];
    dweight[v * d + c] += acc;
  }
}

}  // namespace

void embedding_forward(const float* weight, const void* ids, bool ids_are_i64, float* out, int64_t n_tokens,
                       int64_t d) {
  if (n_tokens * d == 0) return;
  if (ids_are_i64)
    ECHO_LAUNCH(forward_kernel, grid_for(n_tokens * d), kThreads)(weight, static_cast<const int64_t*>(ids), out, n_tokens, d);
  else
    ECHO_LAUNCH(forward_kernel, grid_for(n_tokens * d), kThreads)(weight, static_cast<const int32_t*>(ids), out, n_tokens, d);
  check_launch("embedding_forward");
}

void embedding_backward(const float* dy, const int32_t* row_start, const int32_t* order, float* dweight,
                        int64_t V, int64_t d) {
  if (V == 0 || d == 0) return;
  if (V > 0x7fffffffLL) throw std::runtime_error("embedding_backward: vocabulary too large for one grid");
  const int threads = d >= kThreads ? kThreads : static_cast<int>((d + 31) / 32 * 32);
  ECHO_LAUNCH(backward_kernel, static_cast<unsigned>(V), threads)(dy, row_start, order, dweight, d);
  check_launch("embedding_backward");
}

}  // namespace echo::gpu
