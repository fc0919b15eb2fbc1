// The `echo-lm` subcommands. Each group lives in its own train/cli_<group>.cpp
// and registers itself on the app with one add_<group>_commands() call in
// train/main.cpp. A subcommand parses its flags into a struct owned by its
// callback and does its work there; it reports a bad input by throwing
// (std::runtime_error with a one-line message), which main() prints as one line
// on stderr with a non-zero exit status.
//
// Only train/main.cpp and train/cli_*.cpp see CLI11; the work itself lives in
// the library (echo_core) so that tests can call it without the binary.
#pragma once

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>

#include "autograd/tensor.h"

namespace echo::cli {

void add_op_commands(CLI::App& app);     // op, gradcheck        (cli_op.cpp)
void add_bench_commands(CLI::App& app);  // bench                (cli_bench.cpp)
void add_model_commands(CLI::App& app);  // init, info, forward, generate (cli_model.cpp)
void add_train_commands(CLI::App& app);  // train, eval          (cli_train.cpp)
void add_experiment_commands(CLI::App& app);  // experiment   (cli_experiment.cpp)
void add_data_commands(CLI::App& app);   // data tokenize, data check (cli_data.cpp)

// ---- shared flag helpers ----------------------------------------------------------

// --set KEY=VALUE on a model config JSON: "a.b.c=value", the value parsed as JSON
// when it is JSON (numbers, true, "x"), else taken as a string. The key must
// exist (cli_train.cpp).
void apply_override(nlohmann::json& config, const std::string& text);

inline Device parse_device(const std::string& s) {
  if (s == "cpu") return Device::CPU;
  if (s == "cuda") return Device::CUDA;
  throw std::runtime_error("--device must be cpu or cuda, got '" + s + "'");
}

inline DType parse_float_dtype(const std::string& s) {
  if (s == "f32") return DType::F32;
  if (s == "f64") return DType::F64;
  throw std::runtime_error("--dtype must be f32 or f64, got '" + s + "'");
}

// --device cpu|cuda (default cpu)
inline CLI::Option* add_device_flag(CLI::App& cmd, std::string& device) {
  return cmd.add_option("--device", device, "where to run: cpu or cuda")
      ->check(CLI::IsMember({"cpu", "cuda"}))
      ->capture_default_str();
}

}  // namespace echo::cli
