// Training loop, checkpoints and the train/eval/init/info CLI.
#include <signal.h>

#include <chrono>
#include <fstream>
#include <thread>

#include "autograd/parallel.h"
#include "models/config.h"
#include "models/lm.h"
#include "models/params.h"
#include "test_util.h"
#include "train/checkpoint.h"
#include "train/h5io.h"
#include "train/trainer.h"
#include "train_util.h"

using namespace echo;
using namespace echo::testing;

namespace {

std::map<int64_t, double> losses(const std::string& metrics_path) {
  std::map<int64_t, double> out;
  std::ifstream f(metrics_path);
  for (std::string line; std::getline(f, line);) {
    auto j = nlohmann::json::parse(line);
    if (j.contains("loss") && !j.contains("eval")) out[j["step"].get<int64_t>()] = j["loss"].get<double>();
  }
  return out;
}


}  // namespace

TEST(Trainer, ResumeIsBitIdenticalToAnUninterruptedRun) {
  TempDir a, b;
  train(tiny_training(a.path(), 400));
  TrainOptions first = tiny_training(b.path(), 400);
  first.stop_after = 200;
  TrainSummary s1 = train(first);
  EXPECT_EQ(s1.final_step, 200);
  TrainOptions second = tiny_training(b.path(), 400);
  second.resume = true;
  TrainSummary s2 = train(second);
  EXPECT_EQ(s2.final_step, 400);
  auto la = losses(a.file("metrics.jsonl")), lb = losses(b.file("metrics.jsonl"));
  ASSERT_EQ(la.size(), 400u);
  ASSERT_EQ(lb.size(), 400u);
  int compared = 0;
  for (int64_t step = 201; step <= 400; ++step) {
    ASSERT_TRUE(lb.count(step)) << step;
    EXPECT_EQ(la[step], lb[step]) << "step " << step << " differs after resume";  // bit-identical
    ++compared;
  }
  EXPECT_EQ(compared, 200);
  EXPECT_LT(la[400], la[1]) << "the loss went down";
  // The final models agree exactly as well.
  auto ma = load_model(a.file("latest.h5")), mb = load_model(b.file("latest.h5"));
  for (const auto& p : ma->params().all())
    EXPECT_EQ(p.tensor.to_vector(), mb->params().get(p.name).to_vector()) << p.name;
}

// The accuracy of every periodic evaluation in a metrics file, by step.
std::vector<std::pair<int64_t, double>> eval_accuracies(const std::string& metrics_path) {
  std::vector<std::pair<int64_t, double>> out;
  std::ifstream f(metrics_path);
  for (std::string line; std::getline(f, line);) {
    auto j = nlohmann::json::parse(line);
    if (j.value("eval", false)) out.push_back({j["step"].get<int64_t>(), j["accuracy"].begin()->get<double>()});
  }
  return out;
}

// Early stopping ends the run at the evaluation that completes the required run
// of good evaluations, found here from an uninterrupted run's own evaluations,
// records why, and continues its count across a resume.
TEST(Trainer, EarlyStopEndsAtTheThirdGoodEvaluationAndSurvivesAResume) {
  TempDir full, stopped, resumed;
  TrainOptions o = tiny_training(full.path(), 150);
  o.eval_every = 5;
  o.eval_examples = 64;  // fine-grained accuracies: the tiny model is near chance, and 16 answers are often all wrong
  train(o);
  auto evals = eval_accuracies(full.file("metrics.jsonl"));
  ASSERT_GE(evals.size(), 20u);
  // A threshold that three periodic evaluations in a row reach: the best over
  // the windows of three of the worst in the window.
  double best_window = 0;
  for (size_t i = 0; i + 2 < evals.size() && evals[i + 2].first < o.steps; ++i)
    best_window = std::max(best_window, std::min({evals[i].second, evals[i + 1].second, evals[i + 2].second}));
  const double threshold = std::max(best_window, 1e-9);
  int64_t expected_stop = 0, run = 0;
  for (auto& [step, acc] : evals) {
    if (step == o.steps) break;  // the final evaluation is not a periodic one
    run = acc >= threshold ? run + 1 : 0;
    if (run == 3) { expected_stop = step; break; }
  }
  ASSERT_GT(expected_stop, 0) << "no three good evaluations in a row at threshold " << threshold;

  TrainOptions e = o;
  e.out = stopped.path();
  e.early_stop_accuracy = threshold;
  e.early_stop_evals = 3;
  TrainSummary s = train(e);
  EXPECT_TRUE(s.stopped_early);
  EXPECT_EQ(s.final_step, expected_stop);
  EXPECT_TRUE(has(s.stop_reason, "3 consecutive evaluations")) << s.stop_reason;
  auto summary = nlohmann::json::parse(read_text(stopped.file("metrics.jsonl")).substr(
      read_text(stopped.file("metrics.jsonl")).rfind("{\"")));
  EXPECT_EQ(summary["step"], expected_stop);
  EXPECT_EQ(summary["stopped_early"], true);
  EXPECT_EQ(read_checkpoint_header(stopped.file("latest.h5")).step, expected_stop);
  // Same steps, same losses as the run without the rule, up to the stop.
  auto la = losses(full.file("metrics.jsonl")), lb = losses(stopped.file("metrics.jsonl"));
  for (int64_t step = 1; step <= expected_stop; ++step) EXPECT_EQ(la[step], lb[step]) << step;
  EXPECT_EQ(lb.count(expected_stop + 1), 0u);

  // Interrupted after the first good evaluation of the run, then resumed.
  TrainOptions r = e;
  r.out = resumed.path();
  r.stop_after = expected_stop - 2 * o.eval_every + 2;
  train(r);
  r.stop_after = 0;
  r.resume = true;
  TrainSummary s2 = train(r);
  EXPECT_TRUE(s2.stopped_early);
  EXPECT_EQ(s2.final_step, expected_stop);
  // Resuming a run that has stopped changes nothing.
  TrainSummary s3 = train(r);
  EXPECT_TRUE(s3.stopped_early);
  EXPECT_EQ(s3.final_step, expected_stop);
  EXPECT_EQ(losses(resumed.file("metrics.jsonl")).count(expected_stop + 1), 0u);
}

TEST(Trainer, EarlyStopNeedsPeriodicTaskEvaluations) {
  TempDir d;
  TrainOptions o = tiny_training(d.path(), 10);
  o.early_stop_accuracy = 0.9;
  EXPECT_TRUE(has(error_of([&] { train(o); }), "--eval-every")) << error_of([&] { train(o); });
  o.eval_every = 5;
  o.early_stop_accuracy = 1.5;
  EXPECT_TRUE(has(error_of([&] { train(o); }), "(0, 1]"));
}

TEST(Trainer, RunDirectoryHoldsConfigMetricsAndCheckpoints) {
  TempDir d;
  TrainOptions o = tiny_training(d.path(), 12);
  o.ckpt_every = 4;
  o.keep_last = 2;
  o.eval_every = 6;
  o.log_every = 3;
  train(o);
  auto entries = d.entries();
  for (const char* f : {"config.json", "metrics.jsonl", "latest.h5", "ckpt_8.h5", "ckpt_12.h5"})
    EXPECT_NE(std::find(entries.begin(), entries.end(), f), entries.end()) << f;
  EXPECT_EQ(std::find(entries.begin(), entries.end(), "ckpt_4.h5"), entries.end()) << "keep_last=2";
  for (const auto& e : entries) EXPECT_EQ(e.find(".tmp"), std::string::npos) << "temporary file left: " << e;
  auto cfg = nlohmann::json::parse(read_text(d.file("config.json")));
  EXPECT_EQ(cfg["model"]["layer_pattern"], "MS");
  EXPECT_EQ(cfg["train"]["steps"], 12);
  bool saw_eval = false, saw_step = false;
  std::ifstream f(d.file("metrics.jsonl"));
  for (std::string line; std::getline(f, line);) {
    auto j = nlohmann::json::parse(line);
    if (j.contains("eval")) {
      saw_eval = true;
      EXPECT_TRUE(j["accuracy"].contains("mqar:M=2,gap=5"));
    } else if (j.contains("loss")) {
      saw_step = true;
      for (const char* k : {"step", "loss", "lr", "tokens_per_s", "grad_norm"}) EXPECT_TRUE(j.contains(k)) << k;
    }
  }
  EXPECT_TRUE(saw_eval);
  EXPECT_TRUE(saw_step);
}

TEST(Checkpoint, HoldsEveryParameterUnderItsSpecPath) {
  TempDir d;
  auto model = make_model(tiny_model_config("MSA"), 3);
  save_checkpoint(d.file("ck.h5"), *model, nullptr, nullptr, nullptr);
  h5::File f = h5::File::open(d.file("ck.h5"));
  EXPECT_EQ(f.attr_string("/", "format"), "echo-lm");
  EXPECT_EQ(f.attr_int("/", "format_version"), 1);
  EXPECT_EQ(parse_config(nlohmann::json::parse(f.attr_string("/", "config"))).layer_pattern, "MSA");
  for (const auto& p : model->params().all()) {
    std::string path = "/model/" + p.name;
    std::replace(path.begin(), path.end(), '.', '/');
    ASSERT_TRUE(f.has_dataset(path)) << path;
    EXPECT_EQ(f.dataset_shape(path), p.tensor.shape()) << path;
    EXPECT_EQ(f.dataset_dtype(path), DType::F32) << path;
  }
  EXPECT_TRUE(f.has_dataset("/model/layers/0/mixer/A_log"));
  EXPECT_TRUE(f.has_dataset("/model/layers/1/mixer/w_k/weight"));
  EXPECT_TRUE(f.has_dataset("/model/embedding/weight"));
  auto loaded = load_model(d.file("ck.h5"));
  for (const auto& p : model->params().all())
    EXPECT_EQ(p.tensor.to_vector(), loaded->params().get(p.name).to_vector()) << p.name;
}

TEST(Checkpoint, BadFilesGiveAnErrorNamingTheProblem) {
  TempDir d;
  auto model = make_model(tiny_model_config(), 3);
  const std::string good = d.file("good.h5");
  save_checkpoint(good, *model, nullptr, nullptr, nullptr);
  const std::string bytes = read_text(good);

  write_text(d.file("truncated.h5"), bytes.substr(0, bytes.size() / 2));
  EXPECT_NE(error_of([&] { load_model(d.file("truncated.h5")); }).find("truncated.h5"), std::string::npos);

  // Missing dataset.
  std::filesystem::copy_file(good, d.file("missing.h5"));
  {
    h5::File f = h5::File::open_rw(d.file("missing.h5"));
    f.write("/model/layers/0/mixer/D", Tensor::zeros({1}));  // wrong shape first
    f.close();
  }
  std::string e = error_of([&] { load_model(d.file("missing.h5")); });
  EXPECT_NE(e.find("layers/0/mixer/D"), std::string::npos) << e;
  EXPECT_NE(e.find("shape"), std::string::npos) << e;

  write_text(d.file("garbage.h5"), "this is not an HDF5 file at all");
  EXPECT_NE(error_of([&] { load_model(d.file("garbage.h5")); }).find("garbage.h5"), std::string::npos);
  EXPECT_NE(error_of([&] { load_model(d.file("nosuch.h5")); }).find("nosuch.h5"), std::string::npos);

  // A parameter of another model.
  auto other = make_model(tiny_model_config("MM"), 3);
  save_checkpoint(d.file("other.h5"), *other, nullptr, nullptr, nullptr);
  e = error_of([&] { load_parameters(d.file("other.h5"), *model); });
  EXPECT_NE(e.find("other.h5"), std::string::npos) << e;

  // A model-only checkpoint cannot resume training.
  std::vector<ParamRef> refs;
  for (const auto& p : model->params().all()) refs.push_back({p.name, p.tensor, true});
  AdamW opt(refs, {});
  TrainState st;
  e = error_of([&] { load_training_state(good, opt, st); });
  EXPECT_NE(e.find("optimizer"), std::string::npos) << e;
}

TEST(Checkpoint, MissingDatasetIsNamed) {
  TempDir d;
  auto model = make_model(tiny_model_config(), 3);
  // Write a checkpoint by hand without one parameter.
  {
    h5::File f = h5::File::create(d.file("ck.h5"));
    f.set_attr("/", "format", "echo-lm");
    f.set_attr("/", "format_version", int64_t(1));
    f.set_attr("/", "config", model->config().to_json().dump());
    f.set_attr("/", "step", int64_t(0));
    for (const auto& p : model->params().all())
      if (p.name != "norm_f.weight") f.write(hdf5_param_path(p.name), p.tensor.detach());
    f.close();
  }
  std::string e = error_of([&] { load_model(d.file("ck.h5")); });
  EXPECT_NE(e.find("/model/norm_f/weight"), std::string::npos) << e;
  EXPECT_NE(e.find("missing"), std::string::npos) << e;
}

TEST(TrainCli, KillDuringCheckpointWritesLeavesTheLastOneLoadable) {
  TempDir d;
  // Train with a checkpoint every step, kill -9 at several moments; latest.h5 must
  // always load (the atomic write never exposes a partial file).
  const std::string out = d.file("run");
  std::string cmd = shell_quote(echo_bin()) + " train --model ska-1m --task mqar:M=4,gap=32 --steps 100000 --batch 2 " +
                    "--ckpt-every 1 --quiet --out " + shell_quote(out) + " >/dev/null 2>&1 & echo $!";
  for (int attempt = 0; attempt < 3; ++attempt) {
    FILE* p = popen(cmd.c_str(), "r");
    ASSERT_NE(p, nullptr);
    int pid = 0;
    ASSERT_EQ(fscanf(p, "%d", &pid), 1);
    pclose(p);
    std::this_thread::sleep_for(std::chrono::milliseconds(2500 + 700 * attempt));
    kill(pid, SIGKILL);
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    if (!std::filesystem::exists(out + "/latest.h5")) continue;  // killed before the first checkpoint
    auto model = load_model(out + "/latest.h5");
    EXPECT_EQ(model->config().layer_pattern, "MMSS");
  }
  EXPECT_TRUE(std::filesystem::exists(out + "/latest.h5")) << "no checkpoint was ever written";
}

TEST(TrainCli, SigintWritesACheckpointAndTheRunResumes) {
  TempDir d;
  const std::string out = d.file("run");
  std::string cmd = shell_quote(echo_bin()) + " train --model ska-1m --task mqar:M=2,gap=8 --steps 100000 --batch 2 " +
                    "--out " + shell_quote(out) + " >" + shell_quote(d.file("log")) + " 2>&1 & echo $!";
  FILE* p = popen(cmd.c_str(), "r");
  ASSERT_NE(p, nullptr);
  int pid = 0;
  ASSERT_EQ(fscanf(p, "%d", &pid), 1);
  pclose(p);
  std::this_thread::sleep_for(std::chrono::milliseconds(2500));
  kill(pid, SIGINT);
  for (int i = 0; i < 100 && kill(pid, 0) == 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  std::string log = read_text(d.file("log"));
  EXPECT_NE(log.find("interrupted"), std::string::npos) << log;
  ASSERT_TRUE(std::filesystem::exists(out + "/latest.h5")) << log;
  int64_t stopped = read_checkpoint_header(out + "/latest.h5").step;
  EXPECT_GT(stopped, 0);
  RunResult r = run_echo({"train", "--resume", "--out", out, "--steps", std::to_string(stopped + 3), "--quiet"}, d);
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(read_checkpoint_header(out + "/latest.h5").step, stopped + 3);
}

TEST(TrainCli, BadConfigsFailBeforeTrainingWithTheKeyNamed) {
  TempDir d;
  auto run_with_config = [&](const std::string& json) {
    write_text(d.file("cfg.json"), json);
    return run_echo({"train", "--config", d.file("cfg.json"), "--out", d.file("run"), "--steps", "1"}, d);
  };
  nlohmann::json good = preset("ska-1m").to_json();
  nlohmann::json unknown = good;
  unknown["mamba"]["d_statee"] = 4;
  RunResult r = run_with_config(unknown.dump());
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.err.find("d_statee"), std::string::npos) << r.err;
  nlohmann::json wrong_type = good;
  wrong_type["d_model"] = "big";
  r = run_with_config(wrong_type.dump());
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.err.find("d_model"), std::string::npos) << r.err;
  nlohmann::json inconsistent = good;
  inconsistent["layer_pattern"] = "MMS";
  r = run_with_config(inconsistent.dump());
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.err.find("layer_pattern"), std::string::npos) << r.err;
  r = run_with_config(nlohmann::json{{"model", "ska-1m"}, {"train", {{"stepz", 3}}}}.dump());
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.err.find("train.stepz"), std::string::npos) << r.err;
  r = run_echo({"train", "--config", d.file("nosuch.json"), "--out", d.file("run")}, d);
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.err.find("nosuch.json"), std::string::npos) << r.err;
  r = run_echo({"train", "--model", "ska-1m", "--task", "mqar:M=99", "--out", d.file("run")}, d);
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.err.find("M"), std::string::npos) << r.err;
  for (const auto& l : {r}) EXPECT_EQ(l.err_lines().size(), 1u) << l.err;
  EXPECT_FALSE(std::filesystem::exists(d.file("run/latest.h5"))) << "nothing was trained";
}

TEST(TrainCli, InitInfoEvalAndGenerate) {
  TempDir d;
  RunResult r = run_echo({"init", "--model", "ska-1m", "--seed", "1", "--out", d.file("ck.h5")}, d);
  ASSERT_EQ(r.status, 0) << r.err;
  r = run_echo({"info", "--checkpoint", d.file("ck.h5")}, d);
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.out.find("735756"), std::string::npos) << r.out;
  r = run_echo({"eval", "--checkpoint", d.file("ck.h5"), "--task", "mqar:M=4,gap=8", "--examples", "16", "--json"}, d);
  ASSERT_EQ(r.status, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["examples"], 16);
  EXPECT_EQ(j["scored"], 64);
  EXPECT_EQ(j["per_slot"].size(), 4u);
  r = run_echo({"generate", "--checkpoint", d.file("ck.h5"), "--prompt-ids", "1,2,3", "--max-new", "5", "--json"}, d);
  ASSERT_EQ(r.status, 0) << r.err;
  j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["generated"].size(), 5u);
  EXPECT_GT(j["state_bytes"].get<int64_t>(), 0);
  r = run_echo({"generate", "--checkpoint", d.file("ck.h5"), "--prompt-ids", "1,2,999"}, d);
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.err.find("999"), std::string::npos) << r.err;
}

TEST(Trainer, NonFiniteStepsAbortWithAClearMessage) {
  TempDir d;
  TrainOptions o = tiny_training(d.path(), 50);
  o.lr = 1e30;  // parameters blow up after the first update
  o.warmup = 0;
  o.clip = 0;
  o.max_bad_steps = 3;
  std::string e = error_of([&] { train(o); });
  EXPECT_NE(e.find("non-finite"), std::string::npos) << e;
}

// Mixed precision stays finite at a high learning rate. 500 steps of the
// tiny model at lr 3e-2 (10× the usual), f32 and bf16 matmuls: every step finite
// and taken, and the loss comes down. The two runs must differ (bf16 was applied).
TEST(Trainer, F32AndBf16TrainingStayFiniteAtAHighLearningRate) {
  const int previous_threads = num_threads();
  std::map<std::string, std::map<int64_t, double>> curves;
  for (const std::string precision : {"f32", "bf16"}) {
    TempDir d;
    TrainOptions o = tiny_training(d.path(), 500);
    o.lr = 3e-2;
    o.precision = precision;
    o.threads = 1;  // a tiny model: one thread is faster than a team
    TrainSummary s = train(o);
    EXPECT_EQ(s.final_step, 500) << precision;
    auto cfg = nlohmann::json::parse(read_text(d.file("config.json")));
    EXPECT_EQ(cfg["train"]["precision"], precision);
    std::ifstream f(d.file("metrics.jsonl"));
    for (std::string line; std::getline(f, line);)
      EXPECT_EQ(line.find("skipped"), std::string::npos) << precision << ": " << line;
    auto l = losses(d.file("metrics.jsonl"));
    ASSERT_EQ(l.size(), 500u) << precision;
    for (const auto& [step, loss] : l) ASSERT_TRUE(std::isfinite(loss)) << precision << " step " << step;
    double first10 = 0, last50 = 0;
    for (int64_t t = 1; t <= 10; ++t) first10 += l[t] / 10;
    for (int64_t t = 451; t <= 500; ++t) last50 += l[t] / 50;
    EXPECT_TRUE(std::isfinite(s.final_loss)) << precision;
    EXPECT_LT(s.final_loss, l[1]) << precision;
    EXPECT_LT(last50, first10) << precision;
    curves[precision] = l;
    std::cout << precision << ": loss step 1 " << l[1] << ", mean of steps 1-10 " << first10 << ", of 451-500 "
              << last50 << ", final " << s.final_loss << "\n";
  }
  set_num_threads(previous_threads);
  EXPECT_NE(curves["f32"][1], curves["bf16"][1]) << "the bf16 run computed the same first loss as the f32 run";
}

TEST(TrainCli, PrecisionFlagIsStoredAndChecked) {
  TempDir d;
  write_text(d.file("tiny.json"), tiny_model_config().to_json().dump());
  RunResult r = run_echo({"train", "--config", d.file("tiny.json"), "--task", "mqar:M=2,gap=5", "--steps", "2",
                          "--batch", "2", "--eval-examples", "2", "--precision", "bf16", "--out", d.file("run")},
                         d);
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.out.find("bf16 matmuls"), std::string::npos) << r.out;
  auto cfg = nlohmann::json::parse(read_text(d.file("run/config.json")));
  EXPECT_EQ(cfg["train"]["precision"], "bf16");
  // --resume alone takes the stored precision.
  r = run_echo({"train", "--resume", "--steps", "3", "--out", d.file("run")}, d);
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.out.find("bf16 matmuls"), std::string::npos) << r.out;
  r = run_echo({"train", "--model", "ska-1m", "--precision", "fp16", "--out", d.file("run2")}, d);
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.err.find("fp16"), std::string::npos) << r.err;
  write_text(d.file("cfg.json"), nlohmann::json{{"model", "ska-1m"}, {"train", {{"precision", "f16"}}}}.dump());
  r = run_echo({"train", "--config", d.file("cfg.json"), "--out", d.file("run3")}, d);
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.err.find("precision"), std::string::npos) << r.err;
}

// Training on the CUDA backend follows the CPU run step by step: 20 steps of a
// tiny hybrid model (Mamba-2, SKA and attention layers) in f32 on both, and the
// logged losses agree to f32 rounding growth. Also runs through the binary.
TEST(TrainerCuda, TwentyStepsOfAHybridModelFollowTheCpuRun) {
  ECHO_REQUIRE_GPU();
  // Fewer steps in the sanitizer stage, where the emulated device is ~10x slower.
  const char* san = std::getenv("ECHO_UNDER_SANITIZER");
  const int64_t steps = san && std::string(san) == "1" ? 6 : 20;
  TempDir cpu_dir, gpu_dir;
  auto options = [steps](const std::string& out, const std::string& device) {
    TrainOptions o = tiny_training(out, steps);
    o.model = tiny_model_config("MSA");
    o.device = device;
    o.eval_every = 0;
    return o;
  };
  train(options(cpu_dir.path(), "cpu"));
  train(options(gpu_dir.path(), "cuda"));
  auto lc = losses(cpu_dir.file("metrics.jsonl")), lg = losses(gpu_dir.file("metrics.jsonl"));
  ASSERT_EQ(lc.size(), static_cast<size_t>(steps));
  ASSERT_EQ(lg.size(), static_cast<size_t>(steps));
  for (int64_t step = 1; step <= steps; ++step)
    EXPECT_NEAR(lg[step], lc[step], 1e-3 * std::fabs(lc[step])) << "step " << step;
  if (steps == 20) EXPECT_LT(lg[steps], lg[1]) << "the CUDA run learned";
}

TEST(TrainerCuda, BinaryTrainsAndGeneratesOnTheCudaDevice) {
  ECHO_REQUIRE_GPU();
  TempDir dir;
  RunResult r = run_echo({"train", "--model", "ska-1m", "--set", "d_model=32", "--task", "mqar:M=2,gap=5", "--steps",
                          "3", "--batch", "2", "--device", "cuda", "--out", dir.path(), "--quiet"},
                         dir);
  ASSERT_EQ(r.status, 0) << r.err;
  RunResult g = run_echo({"generate", "--checkpoint", dir.file("latest.h5"), "--task", "mqar:M=2,gap=5", "--device",
                          "cuda"},
                         dir);
  EXPECT_EQ(g.status, 0) << g.err;
}

// A training step on the device (forward, backward, the gradient statistics,
// clipping, AdamW), with the token ids and targets given on the host as the
// trainer gives them, makes the host wait at most twice: the loss value and the
// gradient statistics are the only things copied back.
TEST(TrainerCuda, AStepCopiesOnlyTheLossAndTheGradientStatisticsBack) {
  ECHO_REQUIRE_GPU();
  const ModelConfig config = tiny_model_config("MSA");
  auto model = make_model(config, 5);
  model->to(Device::CUDA);
  std::vector<ParamRef> refs;
  for (const auto& p : model->params().all()) refs.push_back({p.name, p.tensor, true});
  AdamW optimizer(refs, AdamWConfig{});
  Rng rng(6);
  auto ids = [&] {
    std::vector<int64_t> v(2 * 12);
    for (auto& id : v) id = rng.randint(0, config.vocab_size);
    return Tensor::from_ints(v, {2, 12}, DType::I32, Device::CPU);
  };
  const Tensor tokens = ids(), targets = ids();
  double last_loss = 0;
  auto step = [&] {
    optimizer.zero_grad();
    Tensor loss = model->loss(tokens, targets);
    loss.backward();
    last_loss = loss.item();
    const GradStats grads = grad_stats(refs);
    if (std::isfinite(last_loss) && grads.finite && grads.norm() > 1.0) scale_grads(refs, 1.0 / grads.norm());
    optimizer.step(1e-3);
  };
  step();  // allocator warm-up
  const HostSyncCounts before = host_sync_counts();
  step();
  const HostSyncCounts after = host_sync_counts();
  EXPECT_TRUE(std::isfinite(last_loss));
  EXPECT_EQ(after.device_to_host_copies - before.device_to_host_copies, 2) << "the loss and the gradient statistics";
  EXPECT_EQ(after.synchronizations - before.synchronizations, 0);
}
