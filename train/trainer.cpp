#include "train/trainer.h"

#include <atomic>
#include <chrono>
#include <csignal>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <sstream>

#include "autograd/parallel.h"
#include "autograd/tape.h"
#include "data/tasks.h"
#include "data/text_data.h"
#include "models/lm.h"
#include "models/params.h"
#include "ops/binary.h"
#include "ops/matmul.h"
#include "train/checkpoint.h"
#include "train/distributed.h"
#include "train/evaluate.h"
#include "train/h5io.h"
#include "train/optimizer.h"

namespace fs = std::filesystem;

namespace echo {

namespace {

std::atomic<bool> g_interrupted{false};
void on_sigint(int) { g_interrupted = true; }

// Seeds of the independent streams, derived from the run seed (docs/training.md).
uint64_t data_seed(uint64_t seed) { return seed * 0x9E3779B97F4A7C15ull + 1; }
uint64_t eval_seed(uint64_t seed) { return seed * 0xD1B54A32D192ED03ull + 0xE7A1; }

std::string format_duration(double s) {
  std::ostringstream o;
  if (s >= 3600) o << int(s / 3600) << "h" << std::setw(2) << std::setfill('0') << int(s / 60) % 60 << "m";
  else if (s >= 60) o << int(s / 60) << "m" << std::setw(2) << std::setfill('0') << int(s) % 60 << "s";
  else o << std::fixed << std::setprecision(1) << s << "s";
  return o.str();
}

// Keeps the metrics lines of steps ≤ `step` (a resumed run rewrites what came after).
void truncate_metrics(const fs::path& path, int64_t step) {
  if (!fs::exists(path)) return;
  std::ifstream in(path);
  std::vector<std::string> keep;
  std::string line;
  while (std::getline(in, line)) {
    try {
      auto j = nlohmann::json::parse(line);
      if (j.value("step", int64_t(0)) <= step) keep.push_back(line);
    } catch (...) {
      // a torn last line from a crash is dropped
    }
  }
  in.close();
  std::ofstream out(path, std::ios::trunc);
  for (auto& l : keep) out << l << "\n";
}

}  // namespace

static void validate(const TrainOptions& o) {
  auto need = [](bool c, const std::string& msg) { if (!c) throw std::runtime_error("train: " + msg); };
  need(!o.out.empty(), "--out DIR is required");
  need(o.steps >= 1, "steps must be ≥ 1");
  need(o.batch >= 1, "batch must be ≥ 1");
  need(o.grad_accum >= 1, "grad_accum must be ≥ 1");
  need(o.lr > 0 && std::isfinite(o.lr), "lr must be > 0");
  need(o.min_lr_ratio >= 0 && o.min_lr_ratio <= 1, "min_lr_ratio must be in [0, 1]");
  need(o.warmup >= 0, "warmup must be ≥ 0");
  need(o.clip >= 0, "clip must be ≥ 0");
  need(o.beta1 >= 0 && o.beta1 < 1 && o.beta2 >= 0 && o.beta2 < 1, "beta1 and beta2 must be in [0, 1)");
  need(!o.tasks.empty() || !o.data.empty(), "at least one --task (or --data) is required");
  if (!o.data.empty()) {
    need(o.seq_len >= 1, "--seq-len must be >= 1");
    need(o.val_fraction >= 0 && o.val_fraction < 1, "--val-fraction must be in [0, 1)");
    need(o.data_width == "auto" || o.data_width == "u16" || o.data_width == "u32",
         "--data-width must be auto, u16 or u32, got '" + o.data_width + "'");
  }
  need(o.device == "cpu" || o.device == "cuda", "device must be cpu or cuda, got '" + o.device + "'");
  need(o.precision == "f32" || o.precision == "bf16", "precision must be f32 or bf16, got '" + o.precision + "'");
  need(o.keep_last >= 1, "keep_last must be ≥ 1");
  need(o.eval_examples >= 1, "eval_examples must be ≥ 1");
  if (o.early_stop_accuracy != 0) {
    need(o.early_stop_accuracy > 0 && o.early_stop_accuracy <= 1, "--early-stop-accuracy must be in (0, 1]");
    need(o.early_stop_evals >= 1, "--early-stop-evals must be ≥ 1");
    need(o.eval_every > 0, "--early-stop-accuracy needs periodic evaluations (--eval-every N)");
    need(o.data.empty(), "--early-stop-accuracy needs task accuracy; it does not apply to --data");
  }
}

// The smallest accuracy over the tasks of one evaluation record ({task: accuracy}).
static double worst_task_accuracy(const nlohmann::json& accuracy_by_task) {
  double worst = 1;
  for (const auto& [task, acc] : accuracy_by_task.items()) worst = std::min(worst, acc.get<double>());
  return worst;
}

// How many periodic evaluations (steps that are multiples of eval_every) in a
// row, ending with the newest one in the metrics file, reached `threshold` on
// every task: a resumed run continues the count it had. The evaluation that ends
// a --stop-after segment between two periodic steps does not count.
static int64_t trailing_good_evals(const fs::path& metrics_path, double threshold, int64_t eval_every) {
  int64_t run = 0;
  std::ifstream in(metrics_path);
  std::string line;
  while (std::getline(in, line)) {
    nlohmann::json j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded() || !j.value("eval", false) || !j.contains("accuracy")) continue;
    if (j.value("step", int64_t(0)) % eval_every != 0) continue;
    run = worst_task_accuracy(j["accuracy"]) >= threshold ? run + 1 : 0;
  }
  return run;
}

TrainSummary train(const TrainOptions& opt_in) {
  TrainOptions o = opt_in;
  validate(o);
  // Several processes (train/distributed.h): rank 0 alone writes and prints.
  dist::check_global_batch(o.batch);
  const bool root = dist::is_root();
  if (!root) o.quiet = true;
  // Everything that can be checked is checked before training starts.
  std::vector<std::unique_ptr<Task>> tasks;
  std::vector<const Task*> task_ptrs;
  const bool text_mode = !o.data.empty();
  for (const auto& spec : o.tasks) {
    if (text_mode) break;
    tasks.push_back(make_task(spec));
    task_ptrs.push_back(tasks.back().get());
  }
  if (o.threads > 0) set_num_threads(o.threads);
  const Device device = o.device == "cuda" ? Device::CUDA : Device::CPU;
  // Mixed precision for the whole run, evaluation included (docs/training.md).
  MatmulPrecisionGuard precision_guard(parse_matmul_precision(o.precision));

  fs::path dir(o.out);
  fs::path latest = dir / "latest.h5";
  std::unique_ptr<LanguageModel> model;
  TrainState state;
  if (o.resume) {
    if (!fs::exists(latest))
      throw std::runtime_error("train: --resume: " + latest.string() + " does not exist");
    model = load_model(latest.string());
    o.model = model->config();
  } else {
    validate_config(o.model);
    model = make_model(o.model, o.seed);
  }
  for (size_t i = 0; i < tasks.size(); ++i)
    if (tasks[i]->vocab_size() > o.model.vocab_size)
      throw std::runtime_error("train: task " + o.tasks[i] + " uses " + std::to_string(tasks[i]->vocab_size()) +
                               " tokens but the model's vocab_size is " + std::to_string(o.model.vocab_size));
  // Text data: every file is mapped and checked against the model's vocabulary here.
  std::unique_ptr<TextData> text;
  if (text_mode) {
    text = std::make_unique<TextData>(TextDataOptions{o.data, o.val_data, o.val_fraction, o.seq_len,
                                                      o.model.vocab_size, o.data_width, o.eval_examples});
    if (!o.quiet) std::cout << text->describe() << "\n";
  }
  std::error_code ec;
  if (root) fs::create_directories(dir, ec);
  if (ec) throw std::runtime_error("train: cannot create " + dir.string() + ": " + ec.message());

  if (device == Device::CUDA) {
    dist::select_device();
    model->to(Device::CUDA);
  }
  std::vector<ParamRef> refs;
  for (const auto& p : model->params().all()) refs.push_back({p.name, p.tensor, !no_weight_decay(p.name)});
  AdamW optimizer(refs, {o.beta1, o.beta2, 1e-8, o.weight_decay});
  Rng data_rng(data_seed(o.seed));
  if (o.resume) {
    load_training_state(latest.string(), optimizer, state);
    data_rng.set_state(state.data_rng);
  }

  nlohmann::json effective = {{"model", o.model.to_json()}, {"train", o.to_json()}};
  if (root) {
    std::ofstream cfg(dir / "config.json");
    cfg << effective.dump(2) << "\n";
    if (!cfg) throw std::runtime_error("train: cannot write " + (dir / "config.json").string());
  }
  fs::path metrics_path = dir / "metrics.jsonl";
  if (root && o.resume) truncate_metrics(metrics_path, state.step);
  else if (root) std::ofstream(metrics_path, std::ios::trunc);
  // Early stopping is decided on rank 0's evaluation; several ranks would need it
  // broadcast, which the run does not do.
  if (o.early_stop_accuracy > 0 && dist::size() > 1)
    throw std::runtime_error("train: --early-stop-accuracy runs in one process only");
  int64_t good_evals = o.resume && o.early_stop_accuracy > 0 ? trailing_good_evals(metrics_path, o.early_stop_accuracy, o.eval_every) : 0;
  if (o.early_stop_accuracy > 0 && good_evals >= o.early_stop_evals) {
    // Resuming a run that already met its stopping rule changes nothing.
    if (!o.quiet) std::cout << "the run in " << dir.string() << " already stopped early at step " << state.step << "\n";
    TrainSummary done;
    done.final_step = state.step;
    done.final_loss = NAN;
    done.stopped_early = true;
    done.stop_reason = "already stopped early";
    return done;
  }
  std::ofstream metrics;  // rank 0's; other ranks' stays closed and writes nothing
  if (root) metrics.open(metrics_path, std::ios::app);
  if (root && !metrics) throw std::runtime_error("train: cannot write " + metrics_path.string());

  auto save = [&](int64_t step) {
    if (!root) return;
    state.step = step;
    state.data_rng = data_rng.state();
    fs::path ck = dir / ("ckpt_" + std::to_string(step) + ".h5");
    nlohmann::json tc = effective["train"];
    save_checkpoint(ck.string(), *model, &optimizer, &state, &tc);
    // latest.h5 is a complete copy, itself replaced atomically.
    h5::atomic_write(latest.string(), [&](const std::string& tmp) { fs::copy_file(ck, tmp, fs::copy_options::overwrite_existing); });
    // Keep the newest keep_last step checkpoints.
    std::vector<std::pair<int64_t, fs::path>> found;
    for (const auto& e : fs::directory_iterator(dir)) {
      std::string n = e.path().filename().string();
      if (n.rfind("ckpt_", 0) == 0 && e.path().extension() == ".h5") {
        try { found.push_back({std::stoll(n.substr(5)), e.path()}); } catch (...) {}
      }
    }
    std::sort(found.begin(), found.end());
    for (size_t i = 0; i + o.keep_last < found.size(); ++i) fs::remove(found[i].second, ec);
  };

  std::string last_val;  // the latest validation figure, repeated in the progress line
  nlohmann::json last_accuracy, last_detail;  // the latest task evaluation: {task: accuracy}, {task: details}
  auto run_eval = [&](int64_t step) {
    if (!root) return nlohmann::json();
    if (text) {
      if (!text->has_validation()) return nlohmann::json::object();
      TextEvalResult r = evaluate_text(*model, *text, std::min<int64_t>(o.batch, 16));
      nlohmann::json j = r.to_json();
      std::ostringstream line;
      line << std::fixed << std::setprecision(4) << "val_loss " << r.loss << "  ppl " << std::setprecision(2)
           << r.perplexity() << "  " << (r.byte_level ? "val_bpb " : "val_bits/token ") << std::setprecision(4)
           << r.bits();
      last_val = line.str();
      if (!o.quiet) std::cout << "eval step " << step << ": " << last_val << " (" << r.tokens << " tokens)\n";
      nlohmann::json rec = {{"step", step}, {"eval", true}};
      rec.update(j);
      metrics << rec.dump() << "\n";
      metrics.flush();
      return j;
    }
    nlohmann::json acc = nlohmann::json::object(), detail = nlohmann::json::object();
    for (size_t i = 0; i < tasks.size(); ++i) {
      EvalResult r = evaluate(*model, *tasks[i], o.eval_examples, eval_seed(o.seed) + i, std::min<int64_t>(o.batch, 64));
      acc[o.tasks[i]] = r.accuracy;
      detail[o.tasks[i]] = r.to_json();
      if (!o.quiet)
        std::cout << "eval step " << step << " " << o.tasks[i] << ": accuracy " << std::fixed << std::setprecision(4)
                  << r.accuracy << " (chance " << r.chance_uniform << ", informed guess " << r.chance_informed << ")\n";
    }
    metrics << nlohmann::json{{"step", step}, {"eval", true}, {"accuracy", acc}, {"detail", detail}}.dump() << "\n";
    metrics.flush();
    last_accuracy = acc;
    return detail;
  };

  auto previous_handler = std::signal(SIGINT, on_sigint);
  g_interrupted = false;
  TrainSummary summary;
  const auto t_start = std::chrono::steady_clock::now();
  auto t_last = t_start;
  int64_t tokens_since_log = 0;
  const int64_t first = state.step + 1;
  const int64_t last = o.stop_after > 0 ? std::min(o.stop_after, o.steps) : o.steps;
  double last_loss = NAN;
  if (!o.quiet)
    std::cout << "training " << model->num_params() << " parameters on " << o.device << ", steps " << first << ".."
              << last << " of " << o.steps << ", batch " << o.batch << "×" << o.grad_accum
              << (o.precision == "bf16" ? ", bf16 matmuls" : "") << "\n";
  if (!o.quiet && dist::size() > 1)
    std::cout << "data parallel: " << dist::size() << " ranks × " << o.batch / dist::size() << " sequences, "
              << dist::gradient_bytes(refs) << " gradient bytes all-reduced per step\n";

  int64_t step = state.step;
  for (step = first; step <= last; ++step) {
    const double lr = lr_schedule(step, o.warmup, o.steps, o.lr, o.lr * o.min_lr_ratio);
    optimizer.zero_grad();
    double loss_sum = 0;
    bool finite = true;
    for (int64_t micro = 0; micro < o.grad_accum; ++micro) {
      Batch global = text ? text->train_batch(o.batch, data_rng) : make_batch(task_ptrs, o.batch, data_rng);
      dist::Share share = dist::take_share(global);  // the whole batch, weight 1, in one process
      const Batch& b = share.batch;
      const double w = share.weight / o.grad_accum;
      // Ids and targets go as host tensors: the model uploads them (no copy back).
      Tensor loss = model->loss(b.tokens, b.targets, b.mask.defined() ? b.mask.to(device) : Tensor());
      Tensor scaled = w != 1.0 ? scale(loss, w) : loss;
      scaled.backward();
      double l = loss.item();
      finite = finite && std::isfinite(l);
      loss_sum += l * share.weight / o.grad_accum;
      tokens_since_log += global.tokens.numel();
    }
    // Gradient sum over the ranks, then the same loss, norm and decisions everywhere.
    dist::all_reduce_gradients(refs);
    const GradStats grads = grad_stats(refs);
    finite = finite && grads.finite;
    const dist::Agreement agreed = dist::agree(loss_sum, finite, finite ? grads.norm() : NAN, g_interrupted);
    loss_sum = agreed.loss;
    finite = agreed.finite;
    const double gnorm = agreed.grad_norm;
    nlohmann::json rec = {{"step", step}, {"loss", loss_sum}, {"lr", lr}, {"grad_norm", gnorm}};
    bool skip = false;
    if (!finite) {
      skip = true;
      rec["skipped"] = "non-finite loss or gradient";
      if (++state.bad_steps >= o.max_bad_steps) {
        metrics << rec.dump() << "\n";
        throw std::runtime_error("train: aborting at step " + std::to_string(step) + " after " +
                                 std::to_string(state.bad_steps) +
                                 " consecutive non-finite steps (lower --lr or check the data)");
      }
    } else if (o.spike_factor > 0 && step > o.warmup && state.loss_ema > 0 && loss_sum > o.spike_factor * state.loss_ema) {
      skip = true;
      rec["skipped"] = "loss spike";
    }
    if (!skip) {
      state.bad_steps = 0;
      optimizer.step(lr, o.clip > 0 && gnorm > o.clip ? o.clip / gnorm : 1.0);  // clipping inside the update
      state.loss_ema = state.loss_ema == 0 ? loss_sum : 0.95 * state.loss_ema + 0.05 * loss_sum;
      last_loss = loss_sum;
    }
    const bool log_now = step % o.log_every == 0 || step == last || skip;
    if (log_now) {
      auto now = std::chrono::steady_clock::now();
      double dt = std::chrono::duration<double>(now - t_last).count();
      double tps = dt > 0 ? tokens_since_log / dt : 0;
      double elapsed = std::chrono::duration<double>(now - t_start).count();
      double eta = (step - first + 1) > 0 ? elapsed / (step - first + 1) * (last - step) : 0;
      rec["tokens_per_s"] = tps;
      rec["elapsed_s"] = elapsed;
      metrics << rec.dump() << "\n";
      metrics.flush();
      if (!o.quiet)
        std::cout << "step " << step << "/" << o.steps << "  loss " << std::fixed << std::setprecision(4) << loss_sum
                  << "  gnorm " << std::setprecision(3) << gnorm << "  lr " << std::scientific << std::setprecision(2)
                  << lr << std::defaultfloat << "  " << std::fixed << std::setprecision(0) << tps << " tok/s  ETA "
                  << format_duration(eta) << (last_val.empty() ? "" : "  " + last_val) << (skip ? "  [skipped: " + rec["skipped"].get<std::string>() + "]" : "")
                  << std::endl;
      t_last = now;
      tokens_since_log = 0;
    }
    if (o.eval_every > 0 && step % o.eval_every == 0 && step != last) {
      last_detail = run_eval(step);
      if (o.early_stop_accuracy > 0) {
        const bool good = worst_task_accuracy(last_accuracy) >= o.early_stop_accuracy;
        good_evals = good ? good_evals + 1 : 0;
        if (good_evals >= o.early_stop_evals) {
          std::ostringstream why;
          why << "held-out accuracy >= " << o.early_stop_accuracy << " on every task at " << good_evals
              << " consecutive evaluations (every " << o.eval_every << " steps, the last at step " << step << ")";
          summary.stopped_early = true;
          summary.stop_reason = why.str();
          if (!o.quiet) std::cout << "stopping early at step " << step << ": " << summary.stop_reason << "\n";
          break;
        }
      }
    }
    if (o.ckpt_every > 0 && step % o.ckpt_every == 0 && step != last) save(step);
    // Ranks stop together, on the flag they agreed on; one process also sees a
    // SIGINT that came during this step's evaluation or checkpoint.
    if (agreed.interrupted || (dist::size() == 1 && g_interrupted)) {
      if (!o.quiet) std::cout << "interrupted: writing a checkpoint at step " << step << "\n";
      summary.interrupted = true;
      break;
    }
  }
  if (step > last) step = last;
  std::signal(SIGINT, previous_handler);
  save(step);
  summary.final_step = step;
  summary.final_loss = last_loss;
  // An early stop has just evaluated this step's parameters: no second evaluation.
  if (summary.stopped_early) summary.final_eval = last_detail;
  else if (!summary.interrupted) summary.final_eval = run_eval(step);
  summary.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();
  nlohmann::json summary_record = {{"step", step}, {"summary", true}, {"final_loss", last_loss}, {"seconds", summary.seconds}};
  if (summary.stopped_early) {
    summary_record["stopped_early"] = true;
    summary_record["stop_reason"] = summary.stop_reason;
  }
  if (root) metrics << summary_record.dump() << "\n";
  return summary;
}

}  // namespace echo
