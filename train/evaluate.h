// Accuracy of a model on held-out task examples: argmax of the logits at every
// scored position, overall and per query slot (slot i = the i-th scored
// position of an example), with the task's chance levels beside it.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "data/tasks.h"
#include "models/lm.h"

namespace echo {

struct EvalResult {
  std::string task;
  int64_t examples = 0;
  int64_t scored = 0;
  double accuracy = 0;
  std::vector<double> per_slot;
  double chance_uniform = 0, chance_informed = 0;
  nlohmann::json to_json() const;
};

// Examples come from Rng(seed): pass a seed never used for training batches.
EvalResult evaluate(LanguageModel& model, const Task& task, int64_t examples, uint64_t seed,
                    int64_t batch = 32);

}  // namespace echo
