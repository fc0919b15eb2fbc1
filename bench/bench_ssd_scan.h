// Benchmark of ssd_scan (spec §1.1): forward and forward+backward at one shape,
// with the FLOPs and the minimal bytes the op must move (docs/ssd.md §5).
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

namespace echo::bench {

// device "cpu" or "cuda"; dtype "f32" or "f64" (CUDA: f32). Times are medians of
// `iters` runs after one warm-up, in ms. Returns one JSON object.
nlohmann::json bench_ssd_scan(const std::string& device, int64_t b, int64_t T, int64_t H, int64_t P, int64_t N,
                              int iters, int64_t G = 1, int64_t chunk = 64, const std::string& dtype = "f32");

}  // namespace echo::bench
