// Helpers of the reliability tests: a tiny model config, losses from a run's
// metrics, and whether this process runs under a sanitizer (slow tests shrink).
#pragma once

#include <cstdlib>
#include <fstream>
#include <map>
#include <string>

#include <nlohmann/json.hpp>

#include "models/config.h"
#include "train/trainer.h"

namespace echo::testing {

// Set by the sanitizer stage of scripts/test.sh (ECHO_UNDER_SANITIZER=1): tests
// that run many training steps use fewer, since ASan/UBSan make them ~5-10x slower.
inline bool under_sanitizer() {
  const char* v = std::getenv("ECHO_UNDER_SANITIZER");
  return v && *v && std::string(v) != "0";
}

// A model with an M and an S layer, d_model 32: a few ms per training step.
inline ModelConfig tiny_model_config(const std::string& pattern = "MS") {
  nlohmann::json j = preset("ska-1m").to_json();
  j["d_model"] = 32;
  j["n_layers"] = static_cast<int>(pattern.size());
  j["layer_pattern"] = pattern;
  j["d_ff"] = 48;
  j["mamba"]["d_state"] = 8;
  j["mamba"]["headdim"] = 16;
  j["mamba"]["chunk_size"] = 8;
  j["ska"]["heads"] = 2;
  j["ska"]["rank"] = 8;
  j["ska"]["head_dim_v"] = 8;
  j["ska"]["chunk_size"] = 8;
  j["attn"] = {{"heads", 2}, {"head_dim", 16}, {"rope_base", 10000.0}};
  return parse_config(j);
}

inline TrainOptions tiny_training(const std::string& out, int64_t steps) {
  TrainOptions o;
  o.model = tiny_model_config();
  o.tasks = {"mqar:M=2,gap=5"};
  o.steps = steps;
  o.batch = 4;
  o.warmup = 10;
  o.log_every = 1;
  o.eval_examples = 8;
  o.out = out;
  o.quiet = true;
  return o;
}

// step -> record of every logged training step (evaluation and summary lines skipped).
inline std::map<int64_t, nlohmann::json> step_records(const std::string& metrics_path) {
  std::map<int64_t, nlohmann::json> out;
  std::ifstream f(metrics_path);
  for (std::string line; std::getline(f, line);) {
    auto j = nlohmann::json::parse(line);
    if (j.contains("loss") && !j.contains("eval") && !j.contains("summary")) out[j["step"].get<int64_t>()] = j;
  }
  return out;
}

}  // namespace echo::testing
