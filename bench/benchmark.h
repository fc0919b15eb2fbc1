// The interface between a benchmark and `echo-lm bench`.
//
// A benchmark lives in bench/bench_<name>.{h,cpp}; its header declares one
// function `Benchmark benchmark_<name>();` and train/cli_bench.cpp lists it in
// one line. The CLI parses `--size KEY=N` flags against the benchmark's
// default_sizes (unknown keys are an error), so run() always sees every key.
// run() returns one JSON object per measured case (times in ms, sizes,
// throughput); the CLI prints each as one line, adding "bench" and "device".
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <vector>

#include "autograd/tensor.h"

namespace echo::bench {

using Sizes = std::map<std::string, int64_t>;

struct BenchConfig {
  Device device = Device::CPU;
  Sizes sizes;      // every key of the benchmark's default_sizes, overrides applied
  int iters = 5;    // timed runs per case (median reported)
  int warmup = 1;
  int64_t size(const std::string& key) const {
    auto it = sizes.find(key);
    if (it == sizes.end()) throw std::runtime_error("benchmark reads size '" + key + "' it does not declare");
    return it->second;
  }
};

struct Benchmark {
  std::string name;
  std::string description;  // one line for `echo-lm bench --list`
  Sizes default_sizes;
  std::function<std::vector<nlohmann::json>(const BenchConfig&)> run;
};

}  // namespace echo::bench
