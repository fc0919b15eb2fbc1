// Timing helpers for the benchmarks. Timing lives here and in `echo-lm bench`,
// never in pass/fail tests.
#pragma once

#include <algorithm>
#include <chrono>
#include <functional>
#include <nlohmann/json.hpp>
#include <vector>

#include "autograd/device.h"

namespace echo::bench {

// FLOPs of one op call, forward and backward (a multiply-add is 2 FLOP); each
// op's benchmark file documents what it counts. `pairs`: the (query, key) pairs
// of an attention, for the exp count.
struct OpFlops {
  double forward = 0, backward = 0, pairs = 0;
};

// Sorted wall times in milliseconds of fn() over `iters` runs after `warmup`
// runs; synchronises the GPU around each run so CUDA timings are complete.
inline std::vector<double> times_ms(const std::function<void()>& fn, int iters, int warmup) {
  for (int i = 0; i < warmup; ++i) fn();
  std::vector<double> t;
  for (int i = 0; i < iters; ++i) {
    device_synchronize();
    auto a = std::chrono::steady_clock::now();
    fn();
    device_synchronize();
    auto b = std::chrono::steady_clock::now();
    t.push_back(std::chrono::duration<double, std::milli>(b - a).count());
  }
  std::sort(t.begin(), t.end());
  return t;
}

// Median of times_ms (iters >= 1).
inline double median_ms(const std::function<void()>& fn, int iters = 5, int warmup = 1) {
  const std::vector<double> t = times_ms(fn, iters, warmup);
  return t[t.size() / 2];
}

// The timing fields of an op benchmark's record, from the sorted times of
// times_ms: medians (`*_ms`), minima (`*_min_ms`: a shared machine's load only
// adds time), the FLOPs of the forward and of forward+backward, and the rates.
inline void add_timing_fields(nlohmann::json& j, const std::vector<double>& fwd, const std::vector<double>& fwd_bwd,
                              double forward_flop, double backward_flop) {
  const double fwd_ms = fwd[fwd.size() / 2], fwd_bwd_ms = fwd_bwd[fwd_bwd.size() / 2];
  j["forward_ms"] = fwd_ms;
  j["forward_backward_ms"] = fwd_bwd_ms;
  j["forward_min_ms"] = fwd.front();
  j["forward_backward_min_ms"] = fwd_bwd.front();
  j["forward_gflop"] = forward_flop / 1e9;
  j["forward_backward_gflop"] = (forward_flop + backward_flop) / 1e9;
  j["forward_gflops"] = forward_flop / (fwd_ms * 1e6);
  j["forward_backward_gflops"] = (forward_flop + backward_flop) / (fwd_bwd_ms * 1e6);
}

}  // namespace echo::bench
