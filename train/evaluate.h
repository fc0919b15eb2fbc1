// Accuracy of a model on held-out task examples: argmax of the logits at every
// scored position, overall and per query slot (slot i = the i-th scored
// position of an example), with the task's chance levels beside it.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "data/tasks.h"
#include "data/text_data.h"
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

// Validation loss on text (spec §6.4): the mean next-token cross-entropy over
// every position of the fixed validation windows (in nats), its perplexity
// exp(loss), and bits: loss / ln 2 per token, which for a byte-level vocabulary
// (vocab_size = 256, one token per byte) is bits per byte.
struct TextEvalResult {
  double loss = 0;
  int64_t tokens = 0, windows = 0;
  bool byte_level = false;
  double perplexity() const;
  double bits() const;  // per byte when byte_level, else per token
  // {"val_loss", "val_perplexity", "val_bpb" | "val_bits_per_token", "val_tokens", "val_windows"}
  nlohmann::json to_json() const;
};

TextEvalResult evaluate_text(LanguageModel& model, const TextData& data, int64_t batch = 16);

}  // namespace echo
