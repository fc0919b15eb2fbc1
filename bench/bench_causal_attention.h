// Benchmark of causal_attention (spec §1.6): forward and forward+backward at one
// shape, with the FLOPs of its matrix products.
#pragma once

#include "bench/bench_common.h"

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

#include "bench/benchmark.h"

namespace echo::bench {

// device "cpu" or "cuda"; dtype "f32" or "f64" (CUDA: f32). Times in ms: median
// (and minimum) of `iters` runs after `warmup` runs. Returns one JSON object:
// {"bench":"causal_attention", shape..., "forward_ms", "forward_backward_ms",
//  "forward_min_ms", "forward_backward_min_ms", "forward_gflop",
//  "forward_backward_gflop", "forward_gflops", "forward_backward_gflops", "exps"}.
nlohmann::json bench_causal_attention(const std::string& device, int64_t b, int64_t T, int64_t H, int64_t dh,
                                      int iters, const std::string& dtype = "f32", int warmup = 1);

// `echo-lm bench causal_attention [--size b=32 --size T=1024 --size H=4 --size dh=16 --size f64=1]`.
Benchmark benchmark_causal_attention();

// FLOPs of causal_attention at q/k/v [b,T,H,dh] (bench_causal_attention.cpp
// lists what counts).
OpFlops causal_attention_flops(int64_t b, int64_t T, int64_t H, int64_t dh);

}  // namespace echo::bench
