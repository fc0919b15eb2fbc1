// Helpers of the reliability tests: a tiny model config, losses from a run's
// metrics, and whether this process runs under a sanitizer (slow tests shrink).
#pragma once

#include <cstdlib>
#include <fstream>
#include <map>
#include <string>

#include <nlohmann/json.hpp>

#include "models/config.h"
#include "train/train_util.h"
#include "train/trainer.h"

namespace echo::testing {

// Set by the sanitizer stage of scripts/test.sh (ECHO_UNDER_SANITIZER=1): tests
// that run many training steps use fewer, since ASan/UBSan make them ~5-10x slower.
inline bool under_sanitizer() {
  const char* v = std::getenv("ECHO_UNDER_SANITIZER");
  return v && *v && std::string(v) != "0";
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
