#include "bench/bench_step.h"

#include <cblas.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <map>
#include <numeric>
#include <stdexcept>
#include <vector>

#include "autograd/device.h"
#include "autograd/parallel.h"
#include "autograd/random.h"
#include "autograd/tape.h"
#include "bench/bench_causal_attention.h"
#include "bench/bench_koopman_fit.h"
#include "bench/bench_ssd_scan.h"
#include "models/lm.h"
#include "models/params.h"
#include "ops/matmul.h"
#include "train/optimizer.h"

#if ECHO_HAVE_CUDA
#include <cuda_runtime.h>
#endif

namespace echo::bench {

StepFlops count_step_flops(const ModelConfig& c, int64_t b, int64_t T) {
  StepFlops f;
  f.dense = 6.0 * static_cast<double>(parameter_count(c)) * static_cast<double>(b * T);
  for (char letter : c.layer_pattern) {
    OpFlops op;
    if (letter == 'A') {
      op = causal_attention_flops(b, T, c.attn->heads, c.attn->head_dim);
      f.attention += op.forward + op.backward;
    } else if (letter == 'M') {
      const MambaConfig& m = *c.mamba;
      op = ssd_scan_flops(b, T, m.nheads(c.d_model), m.headdim, m.d_state, m.ngroups, m.chunk_size);
      f.ssd_scan += op.forward + op.backward;
    } else if (letter == 'S') {
      const SkaConfig& s = *c.ska;
      KoopmanBenchConfig k;
      k.b = b, k.T = T, k.H = s.heads, k.r = s.rank, k.P = s.head_dim_v, k.chunk_size = s.chunk_size;
      k.power_steps = static_cast<int>(s.power_steps), k.power_iters = static_cast<int>(s.power_iters);
      k.prefix = s.mode == "prefix";
      op = koopman_fit_flops(k);
      f.koopman_fit += op.forward + op.backward;
    }
  }
  return f;
}

double device_peak_flops(Device device, const std::string& precision) {
#if ECHO_HAVE_CUDA && !ECHO_CUDA_EMULATED
  if (device == Device::CUDA && cuda_available()) {
    cudaDeviceProp prop{};
    if (cudaGetDeviceProperties(&prop, 0) != cudaSuccess) return 0;
    const std::string name = prop.name;
    // Dense peaks of the SXM parts from their datasheets: bf16 tensor cores,
    // and fp32 on CUDA cores (what cuBLAS SGEMM uses without TF32).
    struct Peak { const char* name; double bf16, f32; };
    for (const Peak& p : {Peak{"H200", 989.4e12, 66.9e12}, Peak{"H100", 989.4e12, 66.9e12},
                          Peak{"A100", 312e12, 19.5e12}})
      if (name.find(p.name) != std::string::npos) return precision == "bf16" ? p.bf16 : p.f32;
  }
#endif
  (void)device, (void)precision;
  return 0;
}

namespace {

// OpenBLAS sgemm on n×n matrices with the engine's thread count: the CPU's
// practical matmul ceiling (bench/roofline.cpp measures the same more carefully).
double measure_sgemm_gflops(int n = 1024, int reps = 5) {
  std::vector<float> A(size_t(n) * n, 1.0f), B(size_t(n) * n, 0.5f), C(size_t(n) * n);
  double best = 0;
  for (int r = 0; r < reps; ++r) {
    auto t0 = std::chrono::steady_clock::now();
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, A.data(), n, B.data(), n, 0.0f,
                C.data(), n);
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    best = std::max(best, 2.0 * n * n * n / s / 1e9);
  }
  return best;
}

}  // namespace

nlohmann::json bench_step(const StepBenchConfig& c) {
  if (c.batch < 1 || c.seq < 1) throw std::runtime_error("bench step: --batch and --seq must be >= 1");
  if (c.iters < 1 || c.warmup < 0) throw std::runtime_error("bench step: --iters must be >= 1 and --warmup >= 0");
  if (c.device == Device::CUDA && !cuda_available())
    throw std::runtime_error("bench step: --device cuda: " + cuda_unavailable_reason());
  MatmulPrecisionGuard precision(parse_matmul_precision(c.precision));

  auto model = make_model(c.model, c.seed);
  if (c.device == Device::CUDA) model->to(Device::CUDA);
  std::vector<ParamRef> refs;
  for (const auto& p : model->params().all()) refs.push_back({p.name, p.tensor, !no_weight_decay(p.name)});
  AdamW optimizer(refs, {0.9, 0.95, 1e-8, 0.1});

  // Random tokens, every position scored: the work of a text step. On the host,
  // as the trainer gives them: the model uploads them.
  Rng rng(c.seed + 1);
  const int64_t V = c.model.vocab_size;
  auto random_ids = [&] {
    std::vector<int64_t> ids(static_cast<size_t>(c.batch * c.seq));
    for (auto& id : ids) id = rng.randint(0, V);
    return Tensor::from_ints(ids, {c.batch, c.seq}, DType::I32, Device::CPU);
  };
  const Tensor tokens = random_ids(), targets = random_ids();

  // One step as train/trainer.cpp runs it in one process without logging.
  // With --profile the steps after the warm-up charge their time to the ops
  // (autograd/tape.h) and to the trainer's own phases, named in parentheses.
  bool profiling = false;
  auto phase_end = [&](const char* name, std::chrono::steady_clock::time_point& since) {
    auto now = std::chrono::steady_clock::now();
    if (profiling) op_profile_add(name, 0, std::chrono::duration<double>(now - since).count());
    since = now;
  };
  auto step = [&] {
    auto t = std::chrono::steady_clock::now();
    optimizer.zero_grad();
    op_profile_mark();
    Tensor loss = model->loss(tokens, targets);
    t = std::chrono::steady_clock::now();
    loss.backward();
    const double l = loss.item();
    t = std::chrono::steady_clock::now();
    const GradStats grads = grad_stats(refs);
    const bool finite = std::isfinite(l) && grads.finite;
    const double norm = finite ? grads.norm() : NAN;
    phase_end("(gradient norm, finiteness)", t);
    if (finite) optimizer.step(1e-4, norm > 1.0 ? 1.0 / norm : 1.0);
    phase_end("(AdamW, with the clipping)", t);
  };
  for (int i = 0; i < c.warmup; ++i) step();
  device_synchronize();

  host_reset_peak();
  cuda_reset_peak();
  const HostSyncCounts syncs0 = host_sync_counts();
  if (c.profile) {
    op_profile_take();
    op_profile_enable(true);
    profiling = true;
  }
  std::vector<double> seconds;
  int64_t bench_syncs = 0;  // the synchronisations this loop adds to time the steps
  for (int i = 0; i < c.iters; ++i) {
    auto t0 = std::chrono::steady_clock::now();
    step();
    device_synchronize();
    if (c.device == Device::CUDA) ++bench_syncs;
    seconds.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  const HostSyncCounts syncs1 = host_sync_counts();
  std::map<std::string, OpTimes> op_times;
  if (c.profile) {
    op_profile_enable(false);
    op_times = op_profile_take();
  }

  std::vector<double> sorted = seconds;
  std::sort(sorted.begin(), sorted.end());
  const double mean = std::accumulate(seconds.begin(), seconds.end(), 0.0) / seconds.size();
  const double tokens_per_step = static_cast<double>(c.batch * c.seq);
  const StepFlops flops = count_step_flops(c.model, c.batch, c.seq);
  const double flops_per_s = flops.total() / mean;
  const double peak = device_peak_flops(c.device, c.precision);

  nlohmann::json j;
  j["model"] = c.model_name;
  j["parameters"] = model->num_params();
  j["batch"] = c.batch;
  j["seq"] = c.seq;
  j["precision"] = c.precision;
  j["threads"] = num_threads();
  j["iters"] = c.iters;
  j["warmup"] = c.warmup;
  j["step_s"] = mean;
  j["step_s_min"] = sorted.front();
  j["step_s_median"] = sorted[sorted.size() / 2];
  j["step_s_max"] = sorted.back();
  j["step_s_each"] = seconds;
  j["tokens_per_s"] = tokens_per_step / mean;
  j["gflop_per_step"] = flops.total() / 1e9;
  j["gflop_per_step_parts"] = {{"dense", flops.dense / 1e9}, {"attention", flops.attention / 1e9},
                               {"ssd_scan", flops.ssd_scan / 1e9}, {"koopman_fit", flops.koopman_fit / 1e9}};
  j["gflops_per_s"] = flops_per_s / 1e9;
  j["mfu"] = peak > 0 ? nlohmann::json(flops_per_s / peak) : nlohmann::json(nullptr);
  if (peak > 0) j["peak_tflops"] = peak / 1e12;
  j["peak_host_bytes"] = host_allocator_stats().peak_allocated_bytes;
  if (c.profile) {
    // Milliseconds per step, largest first; "(unattributed)" is the rest of the
    // mean step (loss read-back, the loop itself).
    std::vector<std::pair<std::string, OpTimes>> rows(op_times.begin(), op_times.end());
    auto total = [](const OpTimes& t) { return t.forward_s + t.backward_s; };
    std::sort(rows.begin(), rows.end(), [&](const auto& a, const auto& b) { return total(a.second) > total(b.second); });
    nlohmann::json prof = nlohmann::json::array();
    double charged = 0;
    for (const auto& [name, t] : rows) {
      charged += total(t);
      prof.push_back({{"op", name},
                      {"forward_ms", 1e3 * t.forward_s / c.iters},
                      {"backward_ms", 1e3 * t.backward_s / c.iters},
                      {"calls_per_step", static_cast<double>(std::max(t.forward_calls, t.backward_calls)) / c.iters},
                      {"share", total(t) / (mean * c.iters)}});
    }
    prof.push_back({{"op", "(unattributed)"}, {"forward_ms", 0.0},
                    {"backward_ms", 1e3 * (mean * c.iters - charged) / c.iters}, {"calls_per_step", 0.0},
                    {"share", 1.0 - charged / (mean * c.iters)}});
    j["profile"] = prof;
  }
  if (c.device == Device::CUDA) {
    j["peak_device_bytes"] = cuda_allocator_stats().peak_allocated_bytes;
    j["device_bytes_per_token"] = cuda_allocator_stats().peak_allocated_bytes / tokens_per_step;
    const double waits = static_cast<double>((syncs1.device_to_host_copies - syncs0.device_to_host_copies) +
                                             (syncs1.synchronizations - syncs0.synchronizations - bench_syncs));
    j["host_syncs_per_step"] = waits / c.iters;
    j["device_to_host_copies_per_step"] =
        static_cast<double>(syncs1.device_to_host_copies - syncs0.device_to_host_copies) / c.iters;
#if ECHO_CUDA_EMULATED
    j["emulated_device"] = true;  // the kernels ran on the CPU: times say nothing about a GPU
#endif
  } else if (c.measure_sgemm) {
    const double sgemm = measure_sgemm_gflops();
    j["sgemm_gflops"] = sgemm;
    j["share_of_sgemm"] = flops_per_s / 1e9 / sgemm;
  }
  return j;
}

}  // namespace echo::bench
