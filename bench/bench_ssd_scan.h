// Benchmark of ssd_scan (spec §1.1): forward and forward+backward at one shape,
// with the FLOPs and the minimal bytes the op must move (docs/ssd.md §5).
#pragma once

#include "bench/bench_common.h"

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

#include "bench/benchmark.h"

namespace echo::bench {

// device "cpu" or "cuda"; dtype "f32" or "f64" (CUDA: f32). Times in ms: median
// (and minimum) of `iters` runs after `warmup` runs. Returns one JSON object:
// {"bench":"ssd_scan", shape..., "forward_ms", "forward_backward_ms",
//  "forward_min_ms", "forward_backward_min_ms", "forward_gflop",
//  "forward_backward_gflop", "forward_gflops", "forward_backward_gflops",
//  "forward_bytes", "forward_backward_bytes", "forward_gb_per_s", ...}.
nlohmann::json bench_ssd_scan(const std::string& device, int64_t b, int64_t T, int64_t H, int64_t P, int64_t N,
                              int iters, int64_t G = 1, int64_t chunk = 64, const std::string& dtype = "f32",
                              int warmup = 1);

// `echo-lm bench ssd_scan [--size b=4 --size T=1024 ... --size f64=1]`.
Benchmark benchmark_ssd_scan();

// FLOPs of ssd_scan at x [b,T,H,P], B/C [b,T,G,N], chunk Q (bench_ssd_scan.cpp
// lists what counts).
OpFlops ssd_scan_flops(int64_t b, int64_t T, int64_t H, int64_t P, int64_t N, int64_t G, int64_t Q);

}  // namespace echo::bench
