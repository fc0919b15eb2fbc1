// The options of a training run, defined once. Each option is a member of
// TrainOptions and one row of train_option_fields(): its key in config.json and
// in a train config's "train" object, its `echo-lm train` flag and help, and
// when it is stored. The JSON writer, the JSON reader and the command line
// (train/cli_train.cpp) are all generated from that table, so an option added
// there is everywhere at once (spec §6.3).
#pragma once

#include <cstdint>
#include <string>
#include <variant>
#include <vector>

#include <nlohmann/json.hpp>

#include "models/config.h"

namespace echo {

struct TrainOptions {
  ModelConfig model;
  std::vector<std::string> tasks{"mqar:M=4,gap=64"};
  // Text (spec §6.4): when `data` is set the run trains next-token prediction on
  // token files (data/text_data.h) and `tasks` is unused.
  std::string data, val_data;
  double val_fraction = 0.01;
  int64_t seq_len = 256;
  std::string data_width = "auto";  // raw files: "auto" (uint16 if vocab ≤ 65536), "u16", "u32"
  int64_t steps = 1000;
  int64_t stop_after = 0;   // stop (with a checkpoint) after this step; 0 = run to `steps`
  int64_t batch = 32;
  int64_t grad_accum = 1;
  double lr = 3e-3;
  double min_lr_ratio = 0.1;
  int64_t warmup = 100;
  double weight_decay = 0.1;
  double beta1 = 0.9, beta2 = 0.95;
  double clip = 1.0;            // global grad-norm clip; 0 = off
  double spike_factor = 0;      // skip a step whose loss exceeds factor × running mean; 0 = off
  int64_t max_bad_steps = 5;    // abort after this many non-finite steps in a row
  uint64_t seed = 1;
  std::string device = "cpu";
  std::string precision = "f32";  // matmul precision: "f32" or "bf16" (ops/matmul.h)
  int threads = 0;              // CPU threads; 0 = all
  int64_t log_every = 10;
  int64_t eval_every = 0;       // 0 = only at the end
  int64_t eval_examples = 256;  // per task; for text: the number of fixed validation windows
  // Early stop (tasks only): end the run once every task's held-out accuracy is
  // ≥ early_stop_accuracy at early_stop_evals consecutive periodic evaluations.
  double early_stop_accuracy = 0;  // 0 = off
  int64_t early_stop_evals = 3;
  int64_t ckpt_every = 0;       // 0 = only at the end
  int64_t keep_last = 3;
  std::string out;
  bool resume = false;
  bool quiet = false;

  nlohmann::json to_json() const;  // the "train" part of config.json
};

// When an option is part of config.json (and accepted in a train config).
enum class OptionStored {
  always,
  with_text_data,    // only when `data` is set
  with_early_stop,   // only when early_stop_accuracy > 0
  command_line_only, // a property of this invocation (threads, stop_after), never stored or read from files
};

struct TrainOptionField {
  using Member = std::variant<int TrainOptions::*, int64_t TrainOptions::*, uint64_t TrainOptions::*,
                              double TrainOptions::*, std::string TrainOptions::*,
                              std::vector<std::string> TrainOptions::*>;
  const char* key;   // JSON key
  const char* flag;  // `echo-lm train` flag; nullptr: files only (tasks: the CLI's --task is separate)
  const char* help;
  Member member;
  OptionStored stored = OptionStored::always;
  std::vector<std::string> choices = {};  // allowed string values, when fixed
  bool show_default = true;               // print the default in --help
};

// Every option, in the order `echo-lm train --help` lists them.
const std::vector<TrainOptionField>& train_option_fields();

// Training keys of a JSON train config ({"model": ..., "train": {...}}); unknown
// keys and wrong types are errors naming them.
void apply_train_json(const nlohmann::json& train, TrainOptions& options);

}  // namespace echo
