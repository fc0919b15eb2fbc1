#include "bench/bench_causal_attention.h"

#include <stdexcept>
#include <vector>

#include "autograd/device.h"
#include "autograd/parallel.h"
#include "autograd/random.h"
#include "autograd/tape.h"
#include "bench/bench_common.h"
#include "ops/causal_attention.h"

namespace echo::bench {

// Multiply-adds count 2 FLOPs; only the causal pairs j ≤ i count, T(T+1)/2 per
// (b, h), each with one dh-long multiply-add per product:
//   forward : S = q'k'ᵀ, O = P V                                   2 products
//   backward: S again (P is recomputed from L), dP = dO Vᵀ,
//             dq' = dS k', dk' = dSᵀ q', dv = Pᵀ dO                 5 products
// RoPE (O(T·dh)) and the softmax's exp (one per pair and pass, reported as
// "exps") are left out of the FLOPs.
OpFlops causal_attention_flops(int64_t b, int64_t T, int64_t H, int64_t dh) {
  OpFlops f;
  f.pairs = static_cast<double>(b * H) * static_cast<double>(T) * static_cast<double>(T + 1) / 2;
  f.forward = 2 * 2 * f.pairs * static_cast<double>(dh);
  f.backward = 5 * 2 * f.pairs * static_cast<double>(dh);
  return f;
}

nlohmann::json bench_causal_attention(const std::string& device, int64_t b, int64_t T, int64_t H, int64_t dh,
                                      int iters, const std::string& dtype, int warmup) {
  if (device != "cpu" && device != "cuda") throw std::runtime_error("bench causal_attention: device must be cpu or cuda");
  if (dtype != "f32" && dtype != "f64") throw std::runtime_error("bench causal_attention: dtype must be f32 or f64");
  if (iters < 1) throw std::runtime_error("bench causal_attention: iters must be >= 1");
  const Device dev = device == "cuda" ? Device::CUDA : Device::CPU;
  const DType type = dtype == "f64" ? DType::F64 : DType::F32;

  Rng rng(1);
  Tensor q = randn({b, T, H, dh}, rng, type, dev), k = randn({b, T, H, dh}, rng, type, dev),
         v = randn({b, T, H, dh}, rng, type, dev), dy = randn({b, T, H, dh}, rng, type, dev);
  const std::vector<double> fwd = times_ms(
      [&] {
        NoGrad ng;
        causal_attention(q, k, v);
      },
      iters, warmup);
  std::vector<Tensor> leaves = {q, k, v};
  for (auto& l : leaves) l = l.detach().set_requires_grad(true);
  const std::vector<double> fwd_bwd = times_ms(
      [&] {
        for (auto& l : leaves) l.zero_grad();
        Tensor y = causal_attention(leaves[0], leaves[1], leaves[2]);
        run_backward({y}, {dy});
      },
      iters, warmup);

  const OpFlops f = causal_attention_flops(b, T, H, dh);
  nlohmann::json j;
  j["bench"] = "causal_attention";
  j["device"] = device;
  j["dtype"] = dtype;
  j["threads"] = dev == Device::CPU ? num_threads() : 0;
  j["b"] = b, j["T"] = T, j["H"] = H, j["dh"] = dh;
  j["iters"] = iters;
  add_timing_fields(j, fwd, fwd_bwd, f.forward, f.backward);
  j["exps"] = 2 * f.pairs;  // forward + backward
  return j;
}

Benchmark benchmark_causal_attention() {
  Benchmark bm;
  bm.name = "causal_attention";
  bm.description = "causal softmax attention with RoPE, forward and forward+backward, with FLOP counts";
  bm.default_sizes = {{"b", 32}, {"T", 1024}, {"H", 4}, {"dh", 16}, {"f64", 0}};
  bm.run = [](const BenchConfig& c) {
    return std::vector<nlohmann::json>{bench_causal_attention(c.device == Device::CUDA ? "cuda" : "cpu", c.size("b"),
                                                              c.size("T"), c.size("H"), c.size("dh"), c.iters,
                                                              c.size("f64") ? "f64" : "f32", c.warmup)};
  };
  return bm;
}

}  // namespace echo::bench
