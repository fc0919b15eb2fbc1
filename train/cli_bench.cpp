// `echo-lm bench NAME`: runs one benchmark of bench/ and prints one JSON object
// per measured case, one per line.
#include <iostream>
#include <memory>

#include "autograd/device.h"
#include "bench/bench_causal_attention.h"
#include "bench/bench_koopman_fit.h"
#include "bench/bench_ssd_scan.h"
#include "bench/bench_step.h"
#include "bench/bench_unary.h"
#include "autograd/parallel.h"
#include "models/config.h"
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
  std::string s = "Benchmarks (sizes = defaults):\n  step: whole training steps of a model (spec §6.5): "
                  "--model P [--set K=V]... --batch B --seq T [--precision f32|bf16] [--threads N] [--profile]; "
                  "default --iters 10 --warmup 2";
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
  // bench step
  std::string model, precision = "f32";
  std::vector<std::string> sets;
  int64_t batch = 8, seq = 256;
  int threads = 0;
  bool profile = false;
};

// `echo-lm bench step`: one JSON object for the model's training step.
void run_step_bench(const BenchArgs& a, bool iters_given, bool warmup_given) {
  if (a.model.empty()) throw std::runtime_error("bench step: --model PRESET (or a config file) is required");
  if (!a.sizes.empty()) throw std::runtime_error("bench step: --size is for the op benchmarks; use --batch and --seq");
  if (a.threads > 0) set_num_threads(a.threads);
  bench::StepBenchConfig c;
  nlohmann::json model_json = preset_or_file(a.model).to_json();
  for (const auto& s : a.sets) apply_override(model_json, s);
  c.model = parse_config(model_json);
  c.model_name = a.model;
  c.device = parse_device(a.device);
  c.precision = a.precision;
  c.batch = a.batch;
  c.seq = a.seq;
  c.profile = a.profile;
  if (iters_given) c.iters = a.iters;
  if (warmup_given) c.warmup = a.warmup;
  nlohmann::json line = {{"bench", "step"}, {"device", device_name(c.device)}};
  line.update(bench::bench_step(c));
  std::cout << line.dump() << "\n" << std::flush;
}

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
  if (a.name != "step" && (!a.model.empty() || !a.sets.empty()))
    throw std::runtime_error("bench " + a.name + ": --model and --set are for bench step");
  const auto all = benchmarks();
  const bench::Benchmark* b = nullptr;
  for (const auto& x : all)
    if (x.name == a.name) b = &x;
  if (!b) {
    std::string names = "step";
    for (const auto& x : all) names += ", " + x.name;
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
  cmd->add_option("--model", args->model, "bench step: preset name or config file");
  cmd->add_option("--set", args->sets, "bench step: override a model config key, e.g. --set ska.mode=prefix (repeatable)");
  cmd->add_option("--batch", args->batch, "bench step: sequences per step")->capture_default_str();
  cmd->add_option("--seq", args->seq, "bench step: tokens per sequence")->capture_default_str();
  cmd->add_option("--precision", args->precision, "bench step: matmul precision f32 or bf16")
      ->check(CLI::IsMember({"f32", "bf16"}))
      ->capture_default_str();
  cmd->add_option("--threads", args->threads, "bench step: CPU threads (0 = all)")->capture_default_str();
  cmd->add_flag("--profile", args->profile,
                "bench step: add \"profile\": milliseconds per step of every op (forward, backward) and trainer phase");
  cmd->footer(benchmark_list());
  cmd->callback([args, cmd] {
    if (!args->list && args->name == "step")
      run_step_bench(*args, cmd->count("--iters") > 0, cmd->count("--warmup") > 0);
    else
      run_bench_command(*args);
  });
}

}  // namespace echo::cli
