// `echo-lm bench NAME`: runs one benchmark of bench/ and prints one JSON object
// per measured case, one per line.
#include <iostream>
#include <memory>

#include "autograd/device.h"
#include "bench/bench_causal_attention.h"
#include "bench/bench_koopman_fit.h"
#include "bench/bench_ssd_scan.h"
#include "bench/bench_unary.h"
#include "train/cli.h"

namespace echo::cli {

namespace {

// Every benchmark, one line each (the function its bench/bench_<name>.h declares).
std::vector<bench::Benchmark> benchmarks() {
  return {
      bench::benchmark_unary(),
      bench::benchmark_koopman_fit(),
      bench::benchmark_ssd_scan(),
      bench::benchmark_causal_attention(),
  };
}

std::string benchmark_list() {
  std::string s = "Benchmarks (sizes = defaults):";
  for (const auto& b : benchmarks()) {
    s += "\n  " + b.name + ": " + b.description + ";";
    for (const auto& [k, v] : b.default_sizes) s += " " + k + "=" + std::to_string(v);
  }
  return s;
}

struct BenchArgs {
  std::string name, device = "cpu";
  std::vector<std::string> sizes;
  int iters = 5, warmup = 1;
  bool list = false;
};

// "T=4096" -> ("T", 4096), checked against the benchmark's keys.
void apply_size(const bench::Benchmark& b, const std::string& spec, bench::Sizes& sizes) {
  const size_t eq = spec.find('=');
  const std::string key = spec.substr(0, eq);
  if (eq == std::string::npos || key.empty() || eq + 1 == spec.size())
    throw std::runtime_error("bench " + b.name + ": --size wants KEY=N, got '" + spec + "'");
  if (!b.default_sizes.count(key)) {
    std::string keys;
    for (const auto& [k, v] : b.default_sizes) keys += (keys.empty() ? "" : ", ") + k;
    throw std::runtime_error("bench " + b.name + ": unknown size '" + key + "' (sizes: " + keys + ")");
  }
  const std::string value = spec.substr(eq + 1);
  size_t used = 0;
  long long n = 0;
  try {
    n = std::stoll(value, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used != value.size()) throw std::runtime_error("bench " + b.name + ": --size " + key + " wants an integer, got '" + value + "'");
  sizes[key] = n;
}

void run_bench_command(const BenchArgs& a) {
  if (a.list) {
    std::cout << benchmark_list() << "\n";
    return;
  }
  if (a.name.empty()) throw std::runtime_error("bench: name a benchmark (see --list)");
  const auto all = benchmarks();
  const bench::Benchmark* b = nullptr;
  for (const auto& x : all)
    if (x.name == a.name) b = &x;
  if (!b) {
    std::string names;
    for (const auto& x : all) names += (names.empty() ? "" : ", ") + x.name;
    throw std::runtime_error("bench: unknown benchmark '" + a.name + "' (benchmarks: " + names + ")");
  }
  bench::BenchConfig cfg;
  cfg.device = parse_device(a.device);
  if (cfg.device == Device::CUDA && !cuda_available())
    throw std::runtime_error("bench " + b->name + ": --device cuda: " + cuda_unavailable_reason());
  if (a.iters < 1 || a.warmup < 0) throw std::runtime_error("bench: --iters must be >= 1 and --warmup >= 0");
  cfg.iters = a.iters;
  cfg.warmup = a.warmup;
  cfg.sizes = b->default_sizes;
  for (const auto& s : a.sizes) apply_size(*b, s, cfg.sizes);
  for (auto record : b->run(cfg)) {
    nlohmann::json line = {{"bench", b->name}, {"device", device_name(cfg.device)}};
    line.update(record);
    std::cout << line.dump() << "\n" << std::flush;
  }
}

}  // namespace

void add_bench_commands(CLI::App& app) {
  auto args = std::make_shared<BenchArgs>();
  CLI::App* cmd = app.add_subcommand(
      "bench", "Time one benchmark; prints one JSON object per measured case (median of --iters runs).");
  cmd->add_option("name", args->name, "the benchmark (see --list)");
  cmd->add_flag("--list", args->list, "list the benchmarks and their sizes");
  add_device_flag(*cmd, args->device);
  cmd->add_option("--size", args->sizes, "override a size, KEY=N (repeatable; keys per benchmark, see --list)")
      ->allow_extra_args(false)
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  cmd->add_option("--iters", args->iters, "timed runs per case")->capture_default_str();
  cmd->add_option("--warmup", args->warmup, "untimed runs before timing")->capture_default_str();
  cmd->footer(benchmark_list());
  cmd->callback([args] { run_bench_command(*args); });
}

}  // namespace echo::cli
