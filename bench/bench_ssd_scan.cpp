#include "bench/bench_ssd_scan.h"

#include <algorithm>
#include <stdexcept>
#include <vector>

#include "autograd/device.h"
#include "autograd/parallel.h"
#include "bench/bench_common.h"
#include "autograd/random.h"
#include "autograd/tape.h"
#include "ops/ssd_scan.h"

namespace echo::bench {

// Multiply-adds count 2 FLOPs; the causal Q×Q products count their lower
// triangle only, as the kernels skip the rest. Per full chunk of Q steps:
//   forward : group  CB = C Bᵀ                       Q(Q+1)/2 · N
//             head   Y_diag = M X                    Q(Q+1)/2 · P
//                    Y_off = (C ∘ e) h_cᵀ, S_c       2 · Q P N
//   backward: group  CB, dC += dCB B, dB += dCBᵀ C   3 · Q(Q+1)/2 · N
//             head   dM = dY Xᵀ, dX += Mᵀ dY         2 · Q(Q+1)/2 · P
//                    E_c, V = B dSᵀ, dB_S, U = dY h  4 · Q P N
// Elementwise work (exp, the segment-sum gradients) is O(Q²) per head and left out.
OpFlops ssd_scan_flops(int64_t b, int64_t T, int64_t H, int64_t P, int64_t N, int64_t G, int64_t Q) {
  OpFlops f;
  for (int64_t t0 = 0; t0 < T; t0 += Q) {
    const double L = static_cast<double>(std::min(Q, T - t0));
    const double tri = L * (L + 1) / 2;
    f.forward += 2 * (G * tri * N + H * (tri * P + 2 * L * P * N));
    f.backward += 2 * (G * 3 * tri * N + H * (2 * tri * P + 4 * L * P * N));
  }
  f.forward *= static_cast<double>(b);
  f.backward *= static_cast<double>(b);
  return f;
}

nlohmann::json bench_ssd_scan(const std::string& device, int64_t b, int64_t T, int64_t H, int64_t P, int64_t N,
                              int iters, int64_t G, int64_t chunk, const std::string& dtype, int warmup) {
  if (device != "cpu" && device != "cuda") throw std::runtime_error("bench ssd_scan: device must be cpu or cuda");
  if (dtype != "f32" && dtype != "f64") throw std::runtime_error("bench ssd_scan: dtype must be f32 or f64");
  const Device dev = device == "cuda" ? Device::CUDA : Device::CPU;
  const DType type = dtype == "f64" ? DType::F64 : DType::F32;
  const size_t el = dtype_size(type);

  Rng rng(1);
  auto make = [&](const Shape& s, double lo, double hi) { return rand_uniform(s, rng, lo, hi, type, dev); };
  Tensor x = randn({b, T, H, P}, rng, type, dev), B = randn({b, T, G, N}, rng, type, dev),
         C = randn({b, T, G, N}, rng, type, dev), D = randn({H}, rng, type, dev);
  Tensor dt = make({b, T, H}, 0.01, 0.2), A = make({H}, -8.0, -1.0);
  Tensor dy = randn({b, T, H, P}, rng, type, dev), dhf = randn({b, H, P, N}, rng, type, dev);

  if (iters < 1) throw std::runtime_error("bench ssd_scan: iters must be >= 1");
  // Sorted times (bench_common.h): the median and the minimum are reported, the
  // minimum because a shared machine's load only ever adds time.
  const std::vector<double> fwd = times_ms(
      [&] {
        NoGrad ng;
        ssd_scan(x, dt, A, B, C, D, Tensor(), chunk);
      },
      iters, warmup);
  std::vector<Tensor> leaves = {x, dt, A, B, C, D};
  for (auto& l : leaves) l = l.detach().set_requires_grad(true);
  const std::vector<double> fwd_bwd = times_ms(
      [&] {
        for (auto& l : leaves) l.zero_grad();
        SsdResult r = ssd_scan(leaves[0], leaves[1], leaves[2], leaves[3], leaves[4], leaves[5], Tensor(), chunk);
        run_backward({r.y, r.h_final}, {dy, dhf});
      },
      iters, warmup);
  const double fwd_ms = fwd[fwd.size() / 2], fwd_bwd_ms = fwd_bwd[fwd_bwd.size() / 2];

  const OpFlops f = ssd_scan_flops(b, T, H, P, N, G, chunk);
  // The least the op must move: forward reads x, dt, B, C (A, D are tiny) and writes
  // y and h_final; backward also reads dy, dh_final and the saved chunk states
  // and writes dx, ddt, dB, dC.
  const double chunks = static_cast<double>((T + chunk - 1) / chunk);
  const double io_in = static_cast<double>(b * T * (H * P + H + 2 * G * N));
  const double io_out = static_cast<double>(b * T * H * P + b * H * P * N);
  const double states = static_cast<double>(b * H) * chunks * P * N;
  const double fwd_bytes = el * (io_in + io_out);
  const double bwd_bytes = el * (io_in + io_out + states + io_in);
  nlohmann::json j;
  j["bench"] = "ssd_scan";
  j["device"] = device;
  j["dtype"] = dtype;
  j["threads"] = dev == Device::CPU ? num_threads() : 0;
  j["b"] = b, j["T"] = T, j["H"] = H, j["P"] = P, j["N"] = N, j["G"] = G, j["chunk"] = chunk;
  j["iters"] = iters;
  add_timing_fields(j, fwd, fwd_bwd, f.forward, f.backward);
  j["forward_bytes"] = fwd_bytes;
  j["forward_backward_bytes"] = fwd_bytes + bwd_bytes;
  j["forward_gb_per_s"] = fwd_bytes / (fwd_ms * 1e6);
  j["forward_backward_gb_per_s"] = (fwd_bytes + bwd_bytes) / (fwd_bwd_ms * 1e6);
  return j;
}

Benchmark benchmark_ssd_scan() {
  Benchmark bm;
  bm.name = "ssd_scan";
  bm.description = "Mamba-2 chunked selective scan, forward and forward+backward, with FLOP/byte counts";
  bm.default_sizes = {{"b", 4}, {"T", 1024}, {"H", 8}, {"P", 64}, {"N", 64}, {"G", 1}, {"chunk", 64}, {"f64", 0}};
  bm.run = [](const BenchConfig& c) {
    return std::vector<nlohmann::json>{bench_ssd_scan(
        c.device == Device::CUDA ? "cuda" : "cpu", c.size("b"), c.size("T"), c.size("H"), c.size("P"), c.size("N"),
        c.iters, c.size("G"), c.size("chunk"), c.size("f64") ? "f64" : "f32", c.warmup)};
  };
  return bm;
}

}  // namespace echo::bench
