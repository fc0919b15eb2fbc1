#include "bench/bench_koopman_fit.h"

#include <cmath>
#include <vector>

#include "autograd/parallel.h"
#include "autograd/random.h"
#include "autograd/tape.h"
#include "bench/bench_common.h"
#include "ops/koopman_fit.h"

namespace echo::bench {
namespace {

Tensor normalised_randn(const Shape& shape, Rng& rng, DType dtype, Device device) {
  std::vector<double> a = randn(shape, rng, DType::F64).to_vector();
  const int64_t r = shape.back();
  for (size_t i = 0; i < a.size(); i += r) {
    double s = 0;
    for (int64_t j = 0; j < r; ++j) s += a[i + j] * a[i + j];
    for (int64_t j = 0; j < r; ++j) a[i + j] /= std::sqrt(s);
  }
  return Tensor::from_vector(a, shape, dtype, device);
}

// Work counts of the algorithm as implemented (a multiply-add is 2 FLOP).
struct Counts {
  double forward_flop = 0, backward_flop = 0, forward_bytes = 0, backward_bytes = 0;
};
Counts count_work(const KoopmanBenchConfig& c) {
  const double b = c.b, T = c.T, H = c.H, r = c.r, P = c.P, K = c.power_steps, it = c.power_iters;
  const double n_chunks = std::ceil(T / double(c.chunk_size));
  const double n_ops = c.prefix ? 1 : n_chunks - 1;  // chunk mode: operator 0 is empty
  const double r3 = r * r * r, r2 = r * r;
  const double stats = 2 * T * (2 * r2 + r * P);                 // ΔG, ΔM, ΔCᵀ
  const double op = r3 / 3 + 2 * r3 + (4 * it + 2) * r2          // Cholesky, W, power iteration
                    + 2 * r3 * std::max(0.0, K - 1) + 2 * r3     // powers, Z
                    + 2 * r2 * P;                                 // Rᵀ = Zᵀ Cᵀ
  const double readout = 2 * T * r * P;
  const double op_back = 4 * r2 * P + 2 * r3 + 2 * r3 * K * 2 + 2 * r3 * std::max(0.0, K - 1) + 2 * r3 + 4 * r3;
  const double tokens_back = 2 * T * r * P /* dq */ + 2 * T * (3 * r2 + 3 * r * P);
  const double readout_back = 2 * T * r * P;
  Counts n;
  n.forward_flop = b * H * (stats + n_ops * op + readout);
  n.backward_flop = b * H * (readout_back + n_ops * op_back + tokens_back);
  const double elem = static_cast<double>(dtype_size(c.dtype));
  const double io = b * T * H * (2 * r + P + (c.beta ? 1 : 0));  // k, q, v (β)
  n.forward_bytes = elem * (io + b * T * H * P);                 // + y
  n.backward_bytes = elem * (io + b * T * H * P + 2 * (b * T * H * (2 * r + P)));  // + dy, dk/dq/dv read+write
  return n;
}

}  // namespace

nlohmann::json bench_koopman_fit(const KoopmanBenchConfig& c) {
  if (c.threads > 0) set_num_threads(c.threads);
  Rng rng(c.seed);
  const DType dt = c.dtype;
  const Device dev = c.device;
  Tensor k = normalised_randn({c.b, c.T, c.H, c.r}, rng, dt, dev);
  Tensor q = normalised_randn({c.b, c.T, c.H, c.r}, rng, dt, dev);
  Tensor v = randn({c.b, c.T, c.H, c.P}, rng, dt, dev);
  Tensor gamma = Tensor::scalar(0.9, dt, dev);
  Tensor beta = c.beta ? rand_uniform({c.b, c.T, c.H}, rng, 0.5, 1.0, dt, dev) : Tensor();
  Tensor coef = c.coef ? Tensor::full({c.H, int64_t(c.power_steps) + 1}, 1.0 / (c.power_steps + 1), dt, dev) : Tensor();
  Tensor mask;
  if (c.prefix) {  // the first 3/4 of the sequence is the context
    std::vector<int64_t> m(c.b * c.T);
    for (int64_t n = 0; n < c.b; ++n)
      for (int64_t t = 0; t < c.T; ++t) m[n * c.T + t] = t < 3 * c.T / 4 ? 1 : 0;
    mask = Tensor::from_ints(m, {c.b, c.T}).to(dev);
  }
  KoopmanOptions opt;
  opt.chunk_size = c.chunk_size;
  opt.ridge = c.ridge;
  opt.power_steps = c.power_steps;
  opt.power_iters = c.power_iters;

  const double forward_ms = median_ms(
      [&] {
        NoGrad no_grad;
        koopman_fit(k, q, v, gamma, beta, mask, coef, opt);
      },
      c.iters, c.warmup);

  std::vector<Tensor*> leaves = {&k, &q, &v, &gamma};
  if (beta.defined()) leaves.push_back(&beta);
  if (coef.defined()) leaves.push_back(&coef);
  for (Tensor* t : leaves) t->set_requires_grad(true);
  const Tensor seed = randn({c.b, c.T, c.H, c.P}, rng, dt, dev);
  const double forward_backward_ms = median_ms(
      [&] {
        for (Tensor* t : leaves) t->zero_grad();
        Tensor y = koopman_fit(k, q, v, gamma, beta, mask, coef, opt);
        y.backward(seed);
      },
      c.iters, c.warmup);

  const Counts n = count_work(c);
  nlohmann::json j;
  j["bench"] = "koopman_fit";
  j["device"] = device_name(dev);
  j["dtype"] = dtype_name(dt);
  j["mode"] = c.prefix ? "prefix" : "chunk";
  j["b"] = c.b;
  j["T"] = c.T;
  j["H"] = c.H;
  j["r"] = c.r;
  j["P"] = c.P;
  j["chunk_size"] = c.chunk_size;
  j["power_steps"] = c.power_steps;
  j["power_iters"] = c.power_iters;
  j["beta"] = c.beta;
  j["coef"] = c.coef;
  j["threads"] = dev == Device::CPU ? num_threads() : 0;
  j["forward_ms"] = forward_ms;
  j["forward_backward_ms"] = forward_backward_ms;
  j["forward_gflop"] = n.forward_flop * 1e-9;
  j["backward_gflop"] = n.backward_flop * 1e-9;
  j["forward_gflops"] = n.forward_flop * 1e-6 / forward_ms;
  j["forward_backward_gflops"] = (n.forward_flop + n.backward_flop) * 1e-6 / forward_backward_ms;
  j["forward_bytes"] = n.forward_bytes;
  j["backward_bytes"] = n.backward_bytes;
  return j;
}

}  // namespace echo::bench

namespace echo::bench {
Benchmark benchmark_koopman_fit() {
  Benchmark b;
  b.name = "koopman_fit";
  b.description = "closed-form Koopman fit (SKA), forward and forward+backward, with FLOP/byte counts";
  b.default_sizes = {{"b", 4}, {"T", 1024}, {"H", 4}, {"r", 24}, {"P", 32}, {"K", 2}, {"chunk", 64}, {"prefix", 0}};
  b.run = [](const BenchConfig& c) {
    KoopmanBenchConfig k;
    k.b = c.size("b");
    k.T = c.size("T");
    k.H = c.size("H");
    k.r = c.size("r");
    k.P = c.size("P");
    k.power_steps = static_cast<int>(c.size("K"));
    k.chunk_size = c.size("chunk");
    k.prefix = c.size("prefix") != 0;
    k.device = c.device;
    k.iters = c.iters;
    k.warmup = c.warmup;
    return std::vector<nlohmann::json>{bench_koopman_fit(k)};
  };
  return b;
}
OpFlops koopman_fit_flops(const KoopmanBenchConfig& c) {
  const Counts n = count_work(c);
  return {n.forward_flop, n.backward_flop, 0};
}

}  // namespace echo::bench
