// Language modelling on token files: resume, validation loss, greedy and seeded
// sampling, memorising a short text, and the text flags of the CLI.
#include <cmath>
#include <fstream>

#include "data/text_data.h"
#include "data/token_file.h"
#include "models/lm.h"
#include "test_util.h"
#include "train/checkpoint.h"
#include "train/evaluate.h"
#include "train/model_runner.h"
#include "train/trainer.h"
#include "train/train_util.h"

using namespace echo;
using namespace echo::testing;

namespace {

const std::string kText = "the quick brown fox jumps over the lazy dog. ";

// Byte tokens of `reps` copies of some varied text (so windows differ).
void write_corpus(const std::string& path, int reps) {
  std::string s;
  for (int i = 0; i < reps; ++i) s += kText + std::to_string(i * 7919 % 1000) + " ";
  write_token_file(path, tokenize_bytes(s), TokenWidth::U16);
}

std::vector<int64_t> ids_of(const std::string& text) {
  std::vector<int64_t> out;
  for (int32_t t : tokenize_bytes(text)) out.push_back(t);
  return out;
}

ModelConfig byte_model(const std::string& pattern = "MS") {
  nlohmann::json j = tiny_model_config(pattern).to_json();
  j["vocab_size"] = 256;
  return parse_config(j);
}

TrainOptions text_training(const std::string& out, const std::string& data, int64_t steps) {
  TrainOptions o;
  o.model = byte_model();
  o.data = data;
  o.seq_len = 16;
  o.val_fraction = 0.05;
  o.steps = steps;
  o.batch = 4;
  o.warmup = 5;
  o.log_every = 1;
  o.eval_every = 10;
  o.eval_examples = 6;
  o.out = out;
  o.quiet = true;
  return o;
}

std::map<int64_t, double> metric(const std::string& path, const std::string& key, bool eval) {
  std::map<int64_t, double> out;
  std::ifstream f(path);
  for (std::string line; std::getline(f, line);) {
    auto j = nlohmann::json::parse(line);
    if (j.value("eval", false) == eval && j.contains(key)) out[j["step"].get<int64_t>()] = j[key].get<double>();
  }
  return out;
}

}  // namespace

TEST(TextTraining, ResumeIsBitIdenticalToAnUninterruptedRun) {
  TempDir d, a, b;
  write_corpus(d.file("c.bin"), 40);
  train(text_training(a.path(), d.file("c.bin"), 40));
  TrainOptions first = text_training(b.path(), d.file("c.bin"), 40);
  first.stop_after = 17;
  train(first);
  TrainOptions second = text_training(b.path(), d.file("c.bin"), 40);
  second.resume = true;
  train(second);
  auto la = metric(a.file("metrics.jsonl"), "loss", false), lb = metric(b.file("metrics.jsonl"), "loss", false);
  ASSERT_EQ(la.size(), 40u);
  ASSERT_EQ(lb.size(), 40u);
  for (int64_t step = 1; step <= 40; ++step) EXPECT_EQ(la[step], lb[step]) << "step " << step;
  auto va = metric(a.file("metrics.jsonl"), "val_bpb", true), vb = metric(b.file("metrics.jsonl"), "val_bpb", true);
  ASSERT_EQ(va.size(), 4u);  // steps 10, 20, 30 and the final 40
  vb.erase(17);              // the stopped run also evaluated where it stopped
  EXPECT_EQ(va, vb);
  EXPECT_LT(va[40], va[10]) << "validation loss goes down";
  auto ma = load_model(a.file("latest.h5")), mb = load_model(b.file("latest.h5"));
  for (const auto& p : ma->params().all())
    EXPECT_EQ(p.tensor.to_vector(), mb->params().get(p.name).to_vector()) << p.name;
}

TEST(TextTraining, ValidationLossIsTheMeanOfThePerTokenLossesOfTheForward) {
  TempDir d;
  write_corpus(d.file("v.bin"), 6);
  auto model = make_model(byte_model("MSA"), 3);
  TextData data({"", d.file("v.bin"), 0.0, 12, 256, "auto", 1000});
  ASSERT_GT(data.val_windows(), 3);
  TextEvalResult r = evaluate_text(*model, data, 3);  // batches of 3: the last one is partial
  EXPECT_EQ(r.tokens, data.val_windows() * 12);
  EXPECT_TRUE(r.byte_level);
  // Reference: the logits of the training forward, per-token losses in double.
  double total = 0;
  int64_t n = 0;
  Batch b = data.val_batch(0, data.val_windows());
  auto lg = model->forward(b.tokens).to(DType::F64).to_vector();
  auto tg = b.targets.to_int_vector();
  for (size_t p = 0; p < tg.size(); ++p) {
    const double* row = lg.data() + p * 256;
    double m = *std::max_element(row, row + 256), s = 0;
    for (int j = 0; j < 256; ++j) s += std::exp(row[j] - m);
    total += m + std::log(s) - row[tg[p]];
    ++n;
  }
  EXPECT_NEAR(r.loss, total / n, 1e-5 * total / n);
  EXPECT_NEAR(r.bits(), r.loss / std::log(2.0), 1e-12);
  EXPECT_TRUE(r.to_json().contains("val_bpb"));
}

TEST(TextGeneration, GreedyEqualsTheArgmaxOfTheTrainingForward) {
  for (const std::string pattern : {"MS", "MSA"}) {
    auto model = make_model(byte_model(pattern), 11);
    model->to(DType::F64);
    std::vector<int64_t> prompt = ids_of("hello wor");
    GenerateOptions o;
    o.max_new_tokens = 20;
    o.temperature = 0;
    GenerateResult r = generate(*model, prompt, o);
    ASSERT_EQ(r.tokens.size(), prompt.size() + 20);
    // The training forward on prompt + generated (all but the last): argmax at
    // position t must be token t+1 for every generated token.
    std::vector<int64_t> seq(r.tokens.begin(), r.tokens.end() - 1);
    const int64_t T = static_cast<int64_t>(seq.size());
    auto lg = model->forward(Tensor::from_ints(seq, {1, T})).to_vector();
    for (int64_t t = static_cast<int64_t>(prompt.size()) - 1; t < T; ++t) {
      const double* row = lg.data() + t * 256;
      EXPECT_EQ(std::max_element(row, row + 256) - row, r.tokens[t + 1]) << pattern << " position " << t;
    }
  }
}

TEST(TextGeneration, SeededSamplingIsReproducible) {
  auto model = make_model(byte_model(), 5);
  std::vector<int64_t> prompt = {116, 104, 101};
  GenerateOptions o;
  o.max_new_tokens = 40;
  o.temperature = 1.0;
  o.top_p = 0.95;
  o.seed = 9;
  std::vector<int64_t> streamed;
  o.on_token = [&](int64_t id) { streamed.push_back(id); };
  GenerateResult a = generate(*model, prompt, o);
  o.on_token = nullptr;
  GenerateResult b = generate(*model, prompt, o);
  EXPECT_EQ(a.tokens, b.tokens);
  EXPECT_EQ(streamed, std::vector<int64_t>(a.tokens.begin() + 3, a.tokens.end()));
  o.seed = 10;
  GenerateResult c = generate(*model, prompt, o);
  EXPECT_NE(a.tokens, c.tokens);
  // top_p keeps the smallest most-likely set reaching the mass: a tiny top_p is greedy.
  Rng rng(1);
  std::vector<double> logits = {0.1, 2.0, 1.9, -1.0};
  for (int i = 0; i < 20; ++i) EXPECT_EQ(sample_token(logits, 1.0, 0, rng, 1e-6), 1);
}

TEST(TextTraining, AModelTrainedOnARepeatedTextReproducesIt) {
  TempDir d, run;
  std::string s;
  for (int i = 0; i < 200; ++i) s += kText;
  write_token_file(d.file("rep.bin"), tokenize_bytes(s), TokenWidth::U16);
  TrainOptions o = text_training(run.path(), d.file("rep.bin"), 250);
  o.seq_len = 32;
  o.lr = 1e-2;
  o.eval_every = 0;
  train(o);
  auto model = load_model(run.file("latest.h5"));
  std::vector<int64_t> prompt = ids_of("the quick brown");
  GenerateOptions g;
  g.max_new_tokens = static_cast<int64_t>(kText.size());
  GenerateResult r = generate(*model, prompt, g);
  std::string out;
  for (size_t i = prompt.size(); i < r.tokens.size(); ++i) out.push_back(static_cast<char>(r.tokens[i]));
  EXPECT_EQ(out, (kText + kText).substr(15, kText.size()));
}

TEST(TextCli, TrainEvalGenerateAndTheirErrors) {
  TempDir d;
  write_corpus(d.file("c.bin"), 30);
  {
    std::ofstream f(d.file("m.json"));
    f << byte_model().to_json().dump();
  }
  auto r = run_echo({"train", "--config", d.file("m.json"), "--data", d.file("c.bin"), "--task", "mqar:M=2,gap=5",
                     "--out", d.file("x")}, d);
  EXPECT_NE(r.status, 0);
  EXPECT_TRUE(has(r.err, "--data and --task cannot be mixed")) << r.err;
  r = run_echo({"train", "--config", d.file("m.json"), "--set", "vocab_size=100", "--data", d.file("c.bin"),
                "--out", d.file("y")}, d);
  EXPECT_NE(r.status, 0);
  EXPECT_TRUE(has(r.err, "out of range for vocab_size 100")) << r.err;
  r = run_echo({"train", "--config", d.file("m.json"), "--data", d.file("c.bin"), "--seq-len", "16", "--val-fraction", "0.1", "--steps", "6",
                "--batch", "2", "--eval-every", "3", "--eval-examples", "4", "--out", d.file("run")}, d);
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_TRUE(has(r.out, "val_bpb")) << r.out;
  auto bpb = metric(d.file("run/metrics.jsonl"), "val_bpb", true);
  EXPECT_EQ(bpb.size(), 2u);
  r = run_echo({"eval", "--checkpoint", d.file("run/latest.h5"), "--data", d.file("c.bin"), "--json"}, d);
  ASSERT_EQ(r.status, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["seq_len"], 16);  // from the run's stored options
  EXPECT_GT(j["val_bpb"].get<double>(), 0);
  r = run_echo({"generate", "--checkpoint", d.file("run/latest.h5"), "--prompt", "the ", "--max-new-tokens", "12",
                "--temperature", "0.8", "--top-k", "20", "--seed", "3"}, d);
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out.size(), 13u) << r.out;  // 12 bytes and a newline
  EXPECT_TRUE(has(r.err, "tokens/s")) << r.err;
  auto again = run_echo({"generate", "--checkpoint", d.file("run/latest.h5"), "--prompt", "the ", "--max-new-tokens",
                         "12", "--temperature", "0.8", "--top-k", "20", "--seed", "3"}, d);
  EXPECT_EQ(again.out, r.out);
}
