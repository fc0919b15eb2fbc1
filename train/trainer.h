// The training loop behind `echo-lm train` (spec §6.3): AdamW with warmup +
// cosine, global-norm clipping, gradient accumulation, NaN/Inf and loss-spike
// guards, periodic held-out evaluation, JSONL metrics, atomic checkpoints with
// exact resume, and a progress line.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "models/config.h"
#include "train/train_options.h"

namespace echo {

struct TrainSummary {
  int64_t final_step = 0;
  double final_loss = 0;
  nlohmann::json final_eval;  // per task
  double seconds = 0;
  bool interrupted = false;
  bool stopped_early = false;
  std::string stop_reason;  // why the run ended before `steps`, when it did
};

// Runs (or resumes) a training run into options.out. Throws on bad input before
// any training starts; SIGINT stops after the current step with a checkpoint.
TrainSummary train(const TrainOptions& options);

}  // namespace echo
