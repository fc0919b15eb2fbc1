// HDF5 checkpoints (spec §5).
//
//   /                 attrs: format = "echo-lm", format_version = 1, config (model
//                     JSON), train_config (JSON, optional), step (int64)
//   /model/<path>     float32, one dataset per parameter (<path> = name with . -> /)
//   /optimizer/m/<path>, /optimizer/v/<path>
//                     AdamW first and second moments; attrs on /optimizer: step,
//                     beta1, beta2, eps, weight_decay
//   /state/...        data_rng [4] (the data stream's xoshiro state, as int64
//                     bit patterns), attrs: step, loss_ema, bad_steps, loss_scale,
//                     schedule_step
//
// Writes are atomic (h5::atomic_write: temporary file in the same directory,
// fsync, rename, fsync the directory). Loading checks format, version, every
// parameter's presence and shape (and that no unknown one is present) and names
// the first problem; an unreadable or truncated file is an error, never a crash.
#pragma once

#include <array>
#include <memory>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "models/lm.h"
#include "train/optimizer.h"

namespace echo {

constexpr int64_t kCheckpointFormatVersion = 1;

// Everything besides parameters and moments that an exact resume needs.
struct TrainState {
  int64_t step = 0;
  std::array<uint64_t, 4> data_rng{};
  double loss_ema = 0;
  int64_t bad_steps = 0;
  double loss_scale = 1.0;
};

struct CheckpointContents {
  nlohmann::json config;                     // model config
  std::optional<nlohmann::json> train_config;
  int64_t step = 0;
};

// Writes model (+ optimizer and state when given) to `path` atomically.
void save_checkpoint(const std::string& path, const LanguageModel& model, const AdamW* optimizer,
                     const TrainState* state, const nlohmann::json* train_config);

// Reads the root attributes only (format checked).
CheckpointContents read_checkpoint_header(const std::string& path);

// Builds the model the checkpoint describes and loads its parameters (CPU, f32).
std::unique_ptr<LanguageModel> load_model(const std::string& path);

// Loads parameters into an existing model with the same config (names/shapes checked).
void load_parameters(const std::string& path, LanguageModel& model);

// Loads AdamW moments and step, and the training state.
void load_training_state(const std::string& path, AdamW& optimizer, TrainState& state);

}  // namespace echo
