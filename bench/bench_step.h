// `echo-lm bench step` (spec §6.5): whole training steps of a model — forward,
// loss, backward, the finiteness check, global-norm clipping and AdamW, as
// train/trainer.cpp runs them — timed one by one, with the FLOPs a step must do,
// the memory it peaks at and the times the host waits for the GPU.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

#include "autograd/tensor.h"
#include "bench/bench_common.h"
#include "models/config.h"

namespace echo::bench {

struct StepBenchConfig {
  ModelConfig model;
  std::string model_name;  // for the record
  Device device = Device::CPU;
  std::string precision = "f32";
  int64_t batch = 8, seq = 256;
  int iters = 10, warmup = 2;
  uint64_t seed = 1;
  bool measure_sgemm = true;
  bool profile = false;  // charge the timed steps' time to ops and trainer phases (autograd/tape.h)  // CPU: time OpenBLAS sgemm for the share of its ceiling
};

// FLOPs of one training step (forward + backward) at batch × seq tokens:
// dense = 6 · parameters · tokens (every weight is used once per token in a
// product forward and twice backward; the tied embedding counts once, as the
// output projection), plus the sequence mixers' own products, which depend on T.
struct StepFlops {
  double dense = 0, attention = 0, ssd_scan = 0, koopman_fit = 0;
  double total() const { return dense + attention + ssd_scan + koopman_fit; }
};
StepFlops count_step_flops(const ModelConfig& c, int64_t batch, int64_t seq);

// The device's peak FLOP/s for a matmul precision, when known (real GPUs by
// name; none for the CPU or the emulated device): 0 when unknown.
double device_peak_flops(Device device, const std::string& precision);

// One JSON object: "tokens_per_s", "step_s" (mean of every timed step),
// "step_s_min", "step_s_median", "step_s_max", "gflop_per_step", "gflops_per_s",
// "mfu" (null when the peak is unknown), the FLOP breakdown, "peak_host_bytes",
// on CUDA "peak_device_bytes" and "host_syncs_per_step", and on the CPU the
// measured sgemm GFLOP/s and the share of it reached.
nlohmann::json bench_step(const StepBenchConfig& config);

}  // namespace echo::bench
