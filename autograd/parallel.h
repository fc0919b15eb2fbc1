// parallel_for over [0, n) with OpenMP's static schedule: each index runs
// exactly once and the partition depends only on n and the thread count, so a
// loop whose iterations write disjoint outputs is deterministic. Reductions
// must not be split across iterations with atomics; reduce per index instead.
#pragma once

#include <cstdint>

namespace echo {

int num_threads();
void set_num_threads(int n);  // also sets OpenBLAS's thread count

template <typename F> void parallel_for(int64_t n, F&& f) {
  if (n <= 1) {  // no thread team for a single item
    if (n == 1) f(0);
    return;
  }
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) f(i);
}

// parallel_for over blocks [k0, k1) of kParallelBlock consecutive indices: for
// element-wise loops, whose body, a plain loop over one block, vectorises.
constexpr int64_t kParallelBlock = 16384;
template <typename F> void parallel_blocks(int64_t n, F&& f) {
  parallel_for((n + kParallelBlock - 1) / kParallelBlock, [&](int64_t b) {
    const int64_t k0 = b * kParallelBlock;
    f(k0, n - k0 < kParallelBlock ? n : k0 + kParallelBlock);
  });
}

}  // namespace echo
