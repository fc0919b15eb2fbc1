// `echo-lm train` and `echo-lm eval` (spec §6.3).
#include <climits>
#include <cstdlib>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <memory>

#include "models/config.h"
#include "train/checkpoint.h"
#include "train/distributed.h"
#include "train/cli.h"
#include "train/evaluate.h"
#include "train/trainer.h"

namespace echo::cli {

namespace {

struct TrainArgs {
  std::string model, config;
  std::vector<std::string> sets;
  TrainOptions options;
  std::vector<std::string> tasks;
  bool deterministic = false;
};

struct EvalArgs {
  std::string checkpoint, device = "cpu", data, data_width = "auto";
  int64_t seq_len = 0, windows = 0, batch = 16;
  std::vector<std::string> tasks;
  int64_t examples = 512;
  uint64_t seed = 12345;
  bool json = false;
};

}  // namespace

// "a.b.c=value": value parsed as JSON when it is JSON (numbers, true, "x"),
// else taken as a string.
void apply_override(nlohmann::json& config, const std::string& text) {
  auto eq = text.find('=');
  if (eq == std::string::npos || eq == 0) throw std::runtime_error("--set '" + text + "': expected KEY=VALUE");
  std::string key = text.substr(0, eq), raw = text.substr(eq + 1);
  nlohmann::json value;
  try {
    value = nlohmann::json::parse(raw);
  } catch (...) {
    value = raw;
  }
  nlohmann::json* node = &config;
  size_t start = 0;
  for (;;) {
    auto dot = key.find('.', start);
    std::string part = key.substr(start, dot - start);
    if (dot == std::string::npos) {
      if (!node->is_object() || !node->contains(part))
        throw std::runtime_error("--set " + key + ": the model config has no key '" + key + "'");
      (*node)[part] = value;
      return;
    }
    if (!node->contains(part) || !(*node)[part].is_object())
      throw std::runtime_error("--set " + key + ": the model config has no object '" + key.substr(0, dot) + "'");
    node = &(*node)[part];
    start = dot + 1;
  }
}

void add_train_commands(CLI::App& app) {
  auto a = std::make_shared<TrainArgs>();
  TrainOptions& o = a->options;
  CLI::App* t = app.add_subcommand(
      "train", "Train a model on synthetic tasks (--task) or on token files (--data). The run directory gets config.json, metrics.jsonl, "
               "ckpt_<step>.h5 and latest.h5; --resume continues from latest.h5 bit-identically (CPU).");
  t->add_option("--model", a->model, "preset name");
  t->add_option("--config", a->config,
                "model config JSON (spec §3), or a train config {\"model\": {...} or \"preset\", \"train\": {...}}");
  t->add_option("--set", a->sets, "override a model config key, e.g. --set ska.power_steps=1 (repeatable)");
  t->add_option("--task", a->tasks, "task SPEC name:key=value,... (repeatable: a mixture)");
  // Every training option, as train/train_options.cpp defines it.
  for (const TrainOptionField& f : train_option_fields()) {
    if (!f.flag) continue;
    CLI::Option* opt = std::visit([&](auto member) { return t->add_option(f.flag, o.*member, f.help); }, f.member);
    if (!f.choices.empty()) opt->check(CLI::IsMember(f.choices));
    if (f.show_default) opt->capture_default_str();
  }
  t->add_option("--out", o.out, "run directory")->required();
  t->add_flag("--resume", o.resume, "continue from DIR/latest.h5");
  t->add_flag("--quiet", o.quiet, "no progress lines");
  t->add_flag("--deterministic", a->deterministic,
              "bit-reproducible runs (docs/reliability.md): CPU runs and our CUDA kernels always are; this also "
              "fixes cuBLAS's workspace (CUBLAS_WORKSPACE_CONFIG=:4096:8)");
  t->callback([a, t] {
    TrainOptions& o = a->options;
    const bool resume = o.resume;
    // Options from a file's "train" object, then the flags given on the command line on top.
    auto apply_file_then_flags = [&](const nlohmann::json& train_json) {
      TrainOptions from_flags = o;
      apply_train_json(train_json, o);
      auto given = [&](const char* name) { return t->get_option(name)->count() > 0; };
      for (const TrainOptionField& f : train_option_fields())
        if (f.flag && given(f.flag)) std::visit([&](auto member) { o.*member = from_flags.*member; }, f.member);
    };
    if (resume && a->model.empty() && a->config.empty()) {
      // --resume alone: the stored training options, with any flag given on top.
      const std::string latest = o.out + "/latest.h5";
      CheckpointContents header = read_checkpoint_header(latest);
      if (header.train_config) apply_file_then_flags(*header.train_config);
    } else {
      if (!a->model.empty() && !a->config.empty()) throw std::runtime_error("give either --model or --config, not both");
      nlohmann::json model_json;
      if (!a->model.empty()) {
        model_json = preset(a->model).to_json();
      } else if (!a->config.empty()) {
        std::ifstream f(a->config);
        if (!f) throw std::runtime_error("--config " + a->config + ": cannot open the file");
        nlohmann::json j;
        try {
          j = nlohmann::json::parse(f);
        } catch (const nlohmann::json::exception& e) {
          throw std::runtime_error("--config " + a->config + ": not valid JSON: " + e.what());
        }
        if (j.is_object() && (j.contains("model") || j.contains("train"))) {
          for (auto it = j.begin(); it != j.end(); ++it)
            if (it.key() != "model" && it.key() != "train")
              throw std::runtime_error("--config " + a->config + ": unknown top-level key '" + it.key() +
                                       "' (a train config has 'model' and 'train')");
          if (!j.contains("model")) throw std::runtime_error("--config " + a->config + ": key 'model' missing");
          model_json = j["model"].is_string() ? preset(j["model"].get<std::string>()).to_json() : j["model"];
          if (j.contains("train")) apply_file_then_flags(j["train"]);
        } else {
          model_json = j;
        }
      } else {
        throw std::runtime_error("one of --model PRESET or --config FILE is required (or --resume)");
      }
      for (const auto& s : a->sets) apply_override(model_json, s);
      o.model = parse_config(model_json);
    }
    if (!a->tasks.empty() && !o.data.empty())
      throw std::runtime_error("--data and --task cannot be mixed: a run trains either on token files or on synthetic "
                               "tasks");
    if (!a->tasks.empty()) o.tasks = a->tasks;
    // cuBLAS reads the variable when its handle is created (first CUDA product,
    // inside train()); a value the user set wins.
    if (a->deterministic) setenv("CUBLAS_WORKSPACE_CONFIG", ":4096:8", 0);
    TrainSummary s = train(o);
    if (!dist::is_root()) return;  // rank 0 reports for the job
    std::cout << "done: step " << s.final_step << ", final loss " << std::fixed << std::setprecision(4)
              << s.final_loss << ", " << std::setprecision(1) << s.seconds << " s"
              << (s.interrupted ? " (interrupted; resume with --resume)" : "")
              << (s.stopped_early ? " (stopped early: " + s.stop_reason + ")" : "") << "\n";
    if (s.final_eval.contains("val_loss")) {
      for (auto it = s.final_eval.begin(); it != s.final_eval.end(); ++it)
        if (it.key() != "val_tokens" && it.key() != "val_windows")
          std::cout << "final " << it.key() << ": " << std::setprecision(4) << it.value().get<double>() << "\n";
      return;
    }
    for (auto it = s.final_eval.begin(); it != s.final_eval.end(); ++it)
      std::cout << "final accuracy " << it.key() << ": " << std::setprecision(4) << it.value()["accuracy"].get<double>()
                << "\n";
  });

  auto e = std::make_shared<EvalArgs>();
  CLI::App* ev = app.add_subcommand("eval", "With --data: validation loss, perplexity and bits per byte (vocab 256) "
                                            "or per token on token files. With --task: accuracy of a checkpoint on "
                                            "held-out task examples, overall and per "
                                            "query slot, with the chance levels beside it.");
  ev->add_option("--checkpoint", e->checkpoint, "checkpoint CK.h5")->required();
  ev->add_option("--task", e->tasks, "task SPEC (repeatable)");
  ev->add_option("--data", e->data, "or: validation loss on every window of these token files (FILE or GLOB)");
  ev->add_option("--seq-len", e->seq_len, "with --data: window length (default: the run's seq_len, else 256)");
  ev->add_option("--windows", e->windows, "with --data: at most this many windows, evenly spread (0 = all)")
      ->capture_default_str();
  ev->add_option("--batch", e->batch, "with --data: windows per forward")->capture_default_str();
  ev->add_option("--data-width", e->data_width, "with --data: width of raw token files (auto, u16, u32)")
      ->check(CLI::IsMember({"auto", "u16", "u32"}))
      ->capture_default_str();
  ev->add_option("--examples", e->examples, "examples per task")->capture_default_str();
  ev->add_option("--seed", e->seed, "seed of the examples (use one not used in training)")->capture_default_str();
  ev->add_flag("--json", e->json, "one JSON object per task");
  add_device_flag(*ev, e->device);
  ev->callback([e] {
    if (e->examples < 1) throw std::runtime_error("--examples must be ≥ 1");
    if (e->tasks.empty() == e->data.empty()) throw std::runtime_error("eval: give --task SPEC or --data FILE (one of them)");
    auto model = load_model(e->checkpoint);
    model->to(parse_device(e->device));
    if (!e->data.empty()) {
      int64_t seq_len = e->seq_len;
      if (seq_len == 0) {
        CheckpointContents h = read_checkpoint_header(e->checkpoint);
        seq_len = h.train_config && h.train_config->contains("seq_len") ? (*h.train_config)["seq_len"].get<int64_t>()
                                                                         : 256;
      }
      if (e->windows < 0 || e->batch < 1) throw std::runtime_error("eval: --windows must be >= 0 and --batch >= 1");
      TextData data(TextDataOptions{"", e->data, 0.0, seq_len, model->config().vocab_size, e->data_width,
                                    e->windows > 0 ? e->windows : INT64_MAX});
      TextEvalResult r = evaluate_text(*model, data, e->batch);
      if (e->json) {
        nlohmann::json j = r.to_json();
        j["data"] = e->data;
        j["seq_len"] = seq_len;
        std::cout << j.dump() << "\n";
      } else {
        std::cout << e->data << ": val_loss " << std::fixed << std::setprecision(4) << r.loss << ", perplexity "
                  << std::setprecision(3) << r.perplexity() << ", " << std::setprecision(4) << r.bits()
                  << (r.byte_level ? " bits per byte" : " bits per token") << " over " << r.tokens << " tokens ("
                  << r.windows << " windows of " << seq_len << ")\n";
      }
      return;
    }
    for (size_t i = 0; i < e->tasks.size(); ++i) {
      auto task = make_task(e->tasks[i]);
      if (task->vocab_size() > model->config().vocab_size)
        throw std::runtime_error("eval: task " + e->tasks[i] + " needs vocab " + std::to_string(task->vocab_size()) +
                                 ", the model has " + std::to_string(model->config().vocab_size));
      EvalResult r = evaluate(*model, *task, e->examples, e->seed + i);
      if (e->json) {
        std::cout << r.to_json().dump() << "\n";
        continue;
      }
      std::cout << r.task << ": accuracy " << std::fixed << std::setprecision(4) << r.accuracy << " over "
                << r.scored << " queries in " << r.examples << " examples (uniform guess " << r.chance_uniform
                << ", informed guess " << r.chance_informed << ")\n  per slot:";
      for (double p : r.per_slot) std::cout << " " << std::setprecision(3) << p;
      std::cout << "\n";
    }
  });
}

}  // namespace echo::cli
