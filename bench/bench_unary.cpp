#include "bench/bench_unary.h"

#include "autograd/random.h"
#include "autograd/tape.h"
#include "bench/bench_common.h"
#include "ops/unary.h"

namespace echo::bench {

Benchmark benchmark_unary() {
  Benchmark b;
  b.name = "unary";
  b.description = "silu forward and forward+backward on n f32 elements (memory bandwidth)";
  b.default_sizes = {{"n", 1 << 24}};
  b.run = [](const BenchConfig& cfg) {
    const int64_t n = cfg.size("n");
    if (n <= 0) throw std::runtime_error("bench unary: n must be positive");
    Rng rng(1);
    Tensor x = randn({n}, rng, DType::F32, cfg.device);
    Tensor seed = randn({n}, rng, DType::F32, cfg.device);
    const double fwd = median_ms([&] { NoGrad ng; silu(x); }, cfg.iters, cfg.warmup);
    const double fwd_bwd = median_ms(
        [&] {
          Tensor leaf = x.detach().set_requires_grad(true);
          silu(leaf).backward(seed);
        },
        cfg.iters, cfg.warmup);
    // Forward reads x and writes y; the backward reads x and dy and adds into dx.
    const double bytes_fwd = 2.0 * n * sizeof(float);
    return std::vector<nlohmann::json>{
        {{"case", "forward"}, {"n", n}, {"ms", fwd}, {"GB_per_s", bytes_fwd / (fwd * 1e6)}},
        {{"case", "forward_backward"}, {"n", n}, {"ms", fwd_bwd}},
    };
  };
  return b;
}

}  // namespace echo::bench
