// Timing of koopman_fit (forward, forward+backward) at one shape, with the FLOP
// and byte counts of the algorithm in ops/koopman_fit.cpp. `echo-lm bench
// koopman_fit` prints the returned JSON; bench/torch_koopman_fit.py times the
// same math in PyTorch for comparison.
#pragma once

#include "bench/bench_common.h"

#include <nlohmann/json.hpp>

#include "autograd/tensor.h"

namespace echo::bench {

struct KoopmanBenchConfig {
  int64_t b = 4, T = 1024, H = 4, r = 24, P = 32;
  int64_t chunk_size = 64;
  int power_steps = 2, power_iters = 6;
  double ridge = 1e-3;
  bool prefix = false;  // prefix (mask) mode instead of chunk mode
  bool beta = false;    // pass write weights β
  bool coef = false;    // pass the polynomial filter
  DType dtype = DType::F32;
  Device device = Device::CPU;
  int threads = 0;      // > 0: set the CPU thread count first
  int iters = 10, warmup = 2;
  uint64_t seed = 1;
};

// {"bench":"koopman_fit", shape..., "forward_ms", "forward_backward_ms" (medians),
//  "forward_gflop", "backward_gflop", "forward_gflops", "forward_backward_gflops",
//  "forward_bytes", "backward_bytes"}.
nlohmann::json bench_koopman_fit(const KoopmanBenchConfig& config);

}  // namespace echo::bench

#include "bench/benchmark.h"

namespace echo::bench {
// `echo-lm bench koopman_fit [--size b=4,T=1024,H=4,r=24,P=32,K=2,chunk=64,prefix=0]`.
Benchmark benchmark_koopman_fit();
// FLOPs of koopman_fit at the config's shape (the work count of bench_koopman_fit.cpp).
OpFlops koopman_fit_flops(const KoopmanBenchConfig& c);

}  // namespace echo::bench
