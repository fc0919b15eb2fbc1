// Timing helpers for the benchmarks. Timing lives here and in `echo-lm bench`,
// never in pass/fail tests.
#pragma once

#include <algorithm>
#include <chrono>
#include <functional>
#include <vector>

#include "autograd/device.h"

namespace echo::bench {

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

}  // namespace echo::bench
