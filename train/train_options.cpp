#include "train/train_options.h"

#include <stdexcept>

namespace echo {

using S = OptionStored;

const std::vector<TrainOptionField>& train_option_fields() {
  static const std::vector<TrainOptionField> fields = {
      {"tasks", nullptr, "task specs (a mixture)", &TrainOptions::tasks},
      {"data", "--data",
       "train next-token prediction on token files: FILE or GLOB of raw uint16/uint32 ids or llm.c shards "
       "(docs/language_modelling.md); not with --task",
       &TrainOptions::data, S::with_text_data, {}, false},
      {"val_data", "--val-data", "validation token files (FILE or GLOB); default: the held-out tail of --data",
       &TrainOptions::val_data, S::with_text_data, {}, false},
      {"val_fraction", "--val-fraction",
       "without --val-data: the last fraction of the --data tokens, held out for validation (0 = none)",
       &TrainOptions::val_fraction, S::with_text_data},
      {"seq_len", "--seq-len", "tokens per training / validation window (with --data)", &TrainOptions::seq_len,
       S::with_text_data},
      {"data_width", "--data-width",
       "width of raw (headerless) token files: auto (uint16 when vocab_size <= 65536, else uint32), u16, u32; "
       "llm.c shards carry theirs",
       &TrainOptions::data_width, S::with_text_data, {"auto", "u16", "u32"}},
      {"steps", "--steps", "optimizer steps (the schedule's length)", &TrainOptions::steps},
      {"stop_after", "--stop-after", "stop after this step with a checkpoint (resume later)",
       &TrainOptions::stop_after, S::command_line_only, {}, false},
      {"batch", "--batch", "sequences per micro-batch (under mpirun: the global batch, split among the ranks)",
       &TrainOptions::batch},
      {"grad_accum", "--grad-accum", "micro-batches per step", &TrainOptions::grad_accum},
      {"lr", "--lr", "peak learning rate", &TrainOptions::lr},
      {"min_lr_ratio", "--min-lr-ratio", "final lr as a fraction of the peak", &TrainOptions::min_lr_ratio},
      {"warmup", "--warmup", "linear warmup steps", &TrainOptions::warmup},
      {"weight_decay", "--weight-decay", "AdamW decoupled weight decay", &TrainOptions::weight_decay},
      {"beta1", "--beta1", "AdamW β₁", &TrainOptions::beta1},
      {"beta2", "--beta2", "AdamW β₂", &TrainOptions::beta2},
      {"clip", "--clip", "clip the global gradient norm (0 = off)", &TrainOptions::clip},
      {"spike_factor", "--spike-factor", "skip steps whose loss exceeds this × running mean (0 = off)",
       &TrainOptions::spike_factor},
      {"max_bad_steps", "--max-bad-steps", "abort after this many non-finite steps in a row",
       &TrainOptions::max_bad_steps},
      {"seed", "--seed", "seed of the initialisation, the data and the eval examples", &TrainOptions::seed},
      {"device", "--device", "where to run: cpu or cuda", &TrainOptions::device, S::always, {"cpu", "cuda"}},
      {"precision", "--precision",
       "matmul precision: f32, or bf16 (bf16 matmul inputs, fp32 accumulation and master weights)",
       &TrainOptions::precision, S::always, {"f32", "bf16"}},
      {"threads", "--threads", "CPU threads (0 = all)", &TrainOptions::threads, S::command_line_only},
      {"log_every", "--log-every", "progress line and metrics record every N steps", &TrainOptions::log_every},
      {"eval_every", "--eval-every", "held-out evaluation every N steps (0 = at the end only)",
       &TrainOptions::eval_every},
      {"eval_examples", "--eval-examples", "held-out examples per task and evaluation", &TrainOptions::eval_examples},
      {"early_stop_accuracy", "--early-stop-accuracy",
       "stop once every task's held-out accuracy is >= this at --early-stop-evals consecutive evaluations "
       "(needs --eval-every; 0 = off)",
       &TrainOptions::early_stop_accuracy, S::with_early_stop},
      {"early_stop_evals", "--early-stop-evals", "consecutive evaluations for --early-stop-accuracy",
       &TrainOptions::early_stop_evals, S::with_early_stop},
      {"ckpt_every", "--ckpt-every", "checkpoint every N steps (0 = at the end only)", &TrainOptions::ckpt_every},
      {"keep_last", "--keep-last", "step checkpoints kept", &TrainOptions::keep_last},
  };
  return fields;
}

nlohmann::json TrainOptions::to_json() const {
  const bool text = !data.empty(), early_stop = early_stop_accuracy > 0;
  nlohmann::json j = nlohmann::json::object();
  for (const auto& f : train_option_fields()) {
    if (f.stored == S::command_line_only || (f.stored == S::with_text_data && !text) ||
        (f.stored == S::with_early_stop && !early_stop))
      continue;
    std::visit([&](auto member) { j[f.key] = this->*member; }, f.member);
  }
  if (text) j["tasks"] = nlohmann::json::array();  // a text run trains on no task
  return j;
}

namespace {

std::string quoted_alternatives(const std::vector<std::string>& choices) {
  std::string s;
  for (size_t i = 0; i < choices.size(); ++i)
    s += (i == 0 ? "" : i + 1 == choices.size() ? " or " : ", ") + ("\"" + choices[i] + "\"");
  return s;
}

// Reads one JSON value into the member it names, with an error naming the key.
struct JsonToMember {
  const nlohmann::json& value;
  const TrainOptionField& field;
  TrainOptions& options;

  [[noreturn]] void wrong(const std::string& expected) const {
    throw std::runtime_error(std::string("train config: train.") + field.key + ": expected " + expected + ", got " +
                             value.dump());
  }
  template <typename T>
  void operator()(T TrainOptions::*member) const {
    if constexpr (std::is_same_v<T, std::string>) {
      if (!value.is_string()) wrong(field.choices.empty() ? "a string" : quoted_alternatives(field.choices));
      options.*member = value.get<std::string>();
    } else if constexpr (std::is_same_v<T, std::vector<std::string>>) {
      if (!value.is_array()) wrong("a list of strings");
      for (const auto& e : value)
        if (!e.is_string()) wrong("a list of strings");
      options.*member = value.get<std::vector<std::string>>();
    } else {
      if (!value.is_number()) wrong("a number");
      options.*member = value.get<T>();
    }
  }
};

}  // namespace

void apply_train_json(const nlohmann::json& j, TrainOptions& o) {
  if (!j.is_object()) throw std::runtime_error("train config: 'train' must be an object");
  const auto& fields = train_option_fields();
  for (auto it = j.begin(); it != j.end(); ++it) {
    const TrainOptionField* field = nullptr;
    for (const auto& f : fields)
      if (it.key() == f.key && f.stored != S::command_line_only) field = &f;
    if (!field) throw std::runtime_error("train config: unknown key 'train." + it.key() + "'");
    std::visit(JsonToMember{it.value(), *field, o}, field->member);
  }
}

}  // namespace echo
