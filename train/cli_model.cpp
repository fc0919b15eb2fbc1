// `echo-lm init`, `info`, `forward` and `generate` (spec §6.1, §4).
#include <fstream>
#include <iomanip>
#include <iostream>
#include <memory>
#include <sstream>

#include "data/tasks.h"
#include "data/token_file.h"
#include "data/tokenizer.h"
#include "models/config.h"
#include "models/lm.h"
#include "train/checkpoint.h"
#include "train/cli.h"
#include "train/model_runner.h"

namespace echo::cli {

namespace {

// --model PRESET | --config FILE (exactly one).
ModelConfig model_from_flags(const std::string& preset_name, const std::string& config_file) {
  if (!preset_name.empty() && !config_file.empty())
    throw std::runtime_error("give either --model or --config, not both");
  if (!preset_name.empty()) return preset(preset_name);
  if (!config_file.empty()) return load_config_file(config_file);
  throw std::runtime_error("one of --model PRESET or --config FILE is required");
}

std::string preset_list() {
  std::string s;
  for (const auto& n : preset_names()) s += (s.empty() ? "" : ", ") + n;
  return s;
}

std::vector<int64_t> parse_token_list(const std::string& text) {
  std::vector<int64_t> out;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ',')) {
    if (item.empty()) continue;
    try {
      size_t pos = 0;
      out.push_back(std::stoll(item, &pos));
      if (pos != item.size()) throw std::invalid_argument("");
    } catch (...) {
      throw std::runtime_error("--prompt-ids: '" + item + "' is not a token id (expected e.g. 3,17,42)");
    }
  }
  return out;
}

struct InitArgs {
  std::string model, config, out;
  uint64_t seed = 1;
};
struct InfoArgs {
  std::string model, config, checkpoint;
  std::vector<std::string> sets;
  bool json = false;
};
struct ForwardArgs {
  std::string checkpoint, tokens, out, device = "cpu", dtype = "f32";
};
struct GenerateArgs {
  std::string checkpoint, prompt, prompt_ids, task, tokenizer, device = "cpu";
  GenerateOptions options;
  int64_t prompt_random = 0;
  bool stats = false, json = false;
};

}  // namespace

void add_model_commands(CLI::App& app) {
  auto ia = std::make_shared<InitArgs>();
  CLI::App* init = app.add_subcommand("init", "Write a freshly initialised checkpoint (spec §6.1).");
  init->add_option("--model", ia->model, "preset name (" + preset_list() + ")");
  init->add_option("--config", ia->config, "model config JSON file (spec §3)");
  init->add_option("--seed", ia->seed, "initialisation seed")->capture_default_str();
  init->add_option("--out", ia->out, "checkpoint to write (atomically)")->required();
  init->callback([ia] {
    ModelConfig c = model_from_flags(ia->model, ia->config);
    auto model = make_model(c, ia->seed);
    save_checkpoint(ia->out, *model, nullptr, nullptr, nullptr);
    std::cout << "wrote " << ia->out << ": " << model->num_params() << " parameters, seed " << ia->seed << "\n";
  });

  auto fa = std::make_shared<InfoArgs>();
  CLI::App* info = app.add_subcommand("info", "Print a model's parameter count with a per-layer breakdown.");
  info->add_option("--model", fa->model, "preset name (" + preset_list() + ")");
  info->add_option("--config", fa->config, "model config JSON file");
  info->add_option("--checkpoint", fa->checkpoint, "or a checkpoint");
  info->add_option("--set", fa->sets,
                   "override a config key of --model/--config, e.g. --set vocab_size=256 for a byte-level model");
  info->add_flag("--json", fa->json, "print JSON instead of a table");
  info->callback([fa] {
    std::unique_ptr<LanguageModel> model;
    if (!fa->checkpoint.empty()) {
      if (!fa->model.empty() || !fa->config.empty())
        throw std::runtime_error("give one of --model, --config or --checkpoint");
      model = load_model(fa->checkpoint);
    } else {
      nlohmann::json j = model_from_flags(fa->model, fa->config).to_json();
      for (const auto& set : fa->sets) apply_override(j, set);
      model = make_model(parse_config(j), 1);
    }
    if (fa->json) std::cout << parameter_report(*model).dump(2) << "\n";
    else
      std::cout << "vocab_size " << model->config().vocab_size << ", d_model " << model->config().d_model
                << ", layers " << model->config().layer_pattern << "\n"
                << parameter_report_text(*model);
  });

  auto wa = std::make_shared<ForwardArgs>();
  CLI::App* fwd = app.add_subcommand(
      "forward", "Model runner (spec §6.1): logits for IN.h5's tokens [b,T]; with targets [b,T] (−100 ignored) "
                 "also the loss and grad/<path> for every parameter; mask [b,T] for SKA's prefix mode.");
  fwd->add_option("--checkpoint", wa->checkpoint, "checkpoint CK.h5")->required();
  fwd->add_option("--tokens", wa->tokens, "input IN.h5 (tokens, optional targets and mask)")->required();
  fwd->add_option("--out", wa->out, "output OUT.h5 (written atomically)")->required();
  add_device_flag(*fwd, wa->device);
  fwd->add_option("--dtype", wa->dtype, "compute dtype (f64 on the CPU only)")
      ->check(CLI::IsMember({"f32", "f64"}))
      ->capture_default_str();
  fwd->callback([wa] {
    ForwardFileOptions o;
    o.device = parse_device(wa->device);
    o.dtype = parse_float_dtype(wa->dtype);
    auto written = run_forward_files(wa->checkpoint, wa->tokens, wa->out, o);
    std::cout << "forward: wrote " << written.size() << " datasets to " << wa->out << "\n";
  });

  auto ga = std::make_shared<GenerateArgs>();
  CLI::App* gen = app.add_subcommand(
      "generate", "Decode one token at a time from the recurrent state (spec §4): constant memory for M and S "
                  "layers; attention layers keep a growing KV cache. With --prompt/--prompt-ids the continuation "
                  "is streamed to stdout as decoded text (bytes for vocab 256, --tokenizer pieces otherwise, else "
                  "ids) and the speed goes to stderr.");
  gen->add_option("--checkpoint", ga->checkpoint, "checkpoint CK.h5")->required();
  gen->add_option("--prompt", ga->prompt, "prompt text (byte-level models, vocab 256: one token per byte)");
  gen->add_option("--prompt-ids", ga->prompt_ids, "or prompt token ids, comma separated (e.g. 3,17,42)");
  gen->add_option("--tokenizer", ga->tokenizer,
                  "llm.c tokenizer file (magic 20240328) to decode ids of a non-byte vocabulary");
  gen->add_option("--task", ga->task, "or take the prompt from a task example (its tokens up to the first scored position)");
  gen->add_option("--prompt-random", ga->prompt_random,
                  "or a prompt of N uniformly random token ids (seeded by --seed), e.g. to check that the state "
                  "size does not grow with N; the prompt is then not printed");
  gen->add_option("--max-new-tokens,--max-new", ga->options.max_new_tokens, "tokens to generate")->capture_default_str();
  gen->add_option("--temperature", ga->options.temperature, "0 = greedy")->capture_default_str();
  gen->add_option("--top-k", ga->options.top_k, "sample among the k most likely (0 = all)")->capture_default_str();
  gen->add_option("--top-p", ga->options.top_p, "nucleus sampling: keep the most likely tokens up to this mass (1 = all)")
      ->capture_default_str();
  gen->add_option("--seed", ga->options.seed, "sampling / task seed")->capture_default_str();
  gen->add_flag("--stats", ga->stats, "print the recurrent state's bytes per layer and in total, and tokens/s");
  gen->add_flag("--json", ga->json, "print one JSON object");
  add_device_flag(*gen, ga->device);
  gen->callback([ga] {
    auto model = load_model(ga->checkpoint);
    model->to(parse_device(ga->device));
    std::vector<int64_t> prompt;
    int64_t expected = -1;
    const int64_t V = model->config().vocab_size;
    if (int(!ga->prompt.empty()) + int(!ga->prompt_ids.empty()) + int(!ga->task.empty()) +
            int(ga->prompt_random != 0) > 1)
      throw std::runtime_error("give one of --prompt, --prompt-ids, --task or --prompt-random");
    std::unique_ptr<TokenizerTable> table;
    if (!ga->tokenizer.empty()) {
      table = std::make_unique<TokenizerTable>(TokenizerTable::load(ga->tokenizer));
      if (table->size() < V)
        throw std::runtime_error("--tokenizer " + ga->tokenizer + ": " + std::to_string(table->size()) +
                                 " entries, fewer than the model's vocab_size " + std::to_string(V));
    }
    if (!ga->prompt.empty()) {
      if (V != kByteVocab)
        throw std::runtime_error("--prompt TEXT needs a byte-level model (vocab_size 256), this one has " +
                                 std::to_string(V) + ": give the prompt's ids with --prompt-ids");
      for (int32_t b : tokenize_bytes(ga->prompt)) prompt.push_back(b);
    } else if (!ga->prompt_ids.empty()) {
      prompt = parse_token_list(ga->prompt_ids);
    } else if (ga->prompt_random != 0) {
      if (ga->prompt_random < 0) throw std::runtime_error("--prompt-random: N must be >= 1");
      Rng rng(ga->options.seed);
      for (int64_t i = 0; i < ga->prompt_random; ++i) prompt.push_back(rng.randint(0, model->config().vocab_size));
    } else if (!ga->task.empty()) {
      auto task = make_task(ga->task);
      Rng rng(ga->options.seed);
      Example e = task->sample(rng);
      auto scored = scored_positions(e);
      for (int64_t t = 0; t <= scored.at(0); ++t) prompt.push_back(e.tokens[t]);
      expected = e.targets[scored[0]];
    } else {
      throw std::runtime_error("one of --prompt, --prompt-ids, --task or --prompt-random is required");
    }
    const bool stream = !ga->json && (!ga->prompt.empty() || !ga->prompt_ids.empty());
    if (stream) {
      // The continuation, decoded and flushed token by token.
      ga->options.on_token = [&, V](int64_t id) {
        if (table) std::cout << table->piece(id);
        else if (V == kByteVocab) std::cout.put(static_cast<char>(id));
        else std::cout << " " << id;
        std::cout.flush();
      };
    }
    GenerateResult r = generate(*model, prompt, ga->options);
    if (stream) {
      std::cout << "\n";
      std::cerr << std::fixed << std::setprecision(1) << "generate: " << r.tokens.size() - r.prompt_length
                << " tokens at " << r.new_tokens_per_s << " tokens/s (prompt of " << r.prompt_length << " at "
                << r.prompt_tokens_per_s << " tokens/s), recurrent state " << r.state_bytes << " bytes\n";
      return;
    }
    std::vector<int64_t> generated(r.tokens.begin() + r.prompt_length, r.tokens.end());
    if (ga->json) {
      nlohmann::json j = {{"prompt_length", prompt.size()}, {"generated", generated}, {"state_bytes", r.state_bytes},
                          {"layer_state_bytes", r.layer_state_bytes}, {"prompt_tokens_per_s", r.prompt_tokens_per_s},
                          {"new_tokens_per_s", r.new_tokens_per_s}};
      if (ga->prompt_random == 0) j["prompt"] = prompt;
      if (expected >= 0) j["expected_first"] = expected;
      std::cout << j.dump() << "\n";
      return;
    }
    std::cout << "prompt (" << prompt.size() << " tokens" << (ga->prompt_random ? ", random" : "") << "):";
    if (ga->prompt_random == 0)
      for (auto t : prompt) std::cout << " " << t;
    std::cout << "\ngenerated:";
    for (auto t : generated) std::cout << " " << t;
    std::cout << "\n";
    if (expected >= 0) std::cout << "task answer for the first query: " << expected << "\n";
    if (ga->stats) {
      const std::string& pattern = model->config().layer_pattern;
      std::cout << "recurrent state after " << r.tokens.size() - 1 << " tokens:\n";
      for (size_t i = 0; i < r.layer_state_bytes.size(); ++i)
        std::cout << "  layer " << i << " (" << pattern[i] << "): " << r.layer_state_bytes[i] << " bytes"
                  << (pattern[i] == 'A' ? "  (KV cache, grows with the tokens)" : "") << "\n";
      std::cout << "  total: " << r.state_bytes << " bytes\n"
                << std::fixed << std::setprecision(1) << "prompt: " << r.prompt_tokens_per_s
                << " tokens/s, generation: " << r.new_tokens_per_s << " tokens/s\n";
    }
  });
}

}  // namespace echo::cli
