// Determinism on the CPU: the same seed and config give bit-identical losses and
// parameters across runs and across thread counts (OpenMP and OpenBLAS pools).
#include <array>

#include "autograd/parallel.h"
#include "ops/matmul.h"
#include "ops/shape_ops.h"
#include "reliability/reliability_util.h"
#include "test_util.h"
#include "train/checkpoint.h"
#include "train/train_util.h"

using namespace echo;
using namespace echo::testing;

namespace {

// Restores the thread count a test changed.
struct ThreadsGuard {
  int saved = num_threads();
  ~ThreadsGuard() { set_num_threads(saved); }
};

struct RunRecord {
  std::map<int64_t, double> loss, grad_norm;
  std::vector<std::vector<double>> params;
};

// Steps per run (fewer under a sanitizer, where the six runs dominate the stage).
int64_t steps() { return under_sanitizer() ? 12 : 30; }

RunRecord run_with_threads(int threads, const std::string& pattern) {
  TempDir d;
  TrainOptions o = tiny_training(d.path(), steps());
  o.model = tiny_model_config(pattern);
  o.batch = 8;
  o.threads = threads;
  train(o);
  RunRecord r;
  for (const auto& [step, j] : step_records(d.file("metrics.jsonl"))) {
    r.loss[step] = j["loss"].get<double>();
    r.grad_norm[step] = j["grad_norm"].get<double>();
  }
  auto model = load_model(d.file("latest.h5"));
  for (const auto& p : model->params().all()) r.params.push_back(p.tensor.to_vector());
  return r;
}

void expect_identical(const RunRecord& a, const RunRecord& b, const std::string& what) {
  ASSERT_EQ((int64_t)a.loss.size(), steps());
  ASSERT_EQ((int64_t)b.loss.size(), steps());
  for (const auto& [step, l] : a.loss) {
    EXPECT_EQ(l, b.loss.at(step)) << what << ": loss at step " << step;  // bitwise
    EXPECT_EQ(a.grad_norm.at(step), b.grad_norm.at(step)) << what << ": grad norm at step " << step;
  }
  ASSERT_EQ(a.params.size(), b.params.size());
  for (size_t i = 0; i < a.params.size(); ++i) EXPECT_EQ(a.params[i], b.params[i]) << what << ": parameter " << i;
}

}  // namespace

// Every layer kind (M, S, A and both MLPs are in the two patterns).
TEST(Determinism, TrainingIsBitIdenticalAcrossRunsAndThreadCounts) {
  ThreadsGuard guard;
  for (const std::string pattern : {"MS", "AM"}) {
    SCOPED_TRACE(pattern);
    RunRecord one = run_with_threads(1, pattern);
    RunRecord again = run_with_threads(1, pattern);
    RunRecord two = run_with_threads(2, pattern);
    expect_identical(one, again, "two runs, 1 thread");
    expect_identical(one, two, "1 thread vs 2 threads");
    EXPECT_NE(one.loss.at(1), one.loss.at(steps())) << "the runs trained";
  }
}

// The BLAS products alone, at sizes where OpenBLAS splits the work over its
// threads (the training test's matrices may be below its threading threshold):
// tall and wide outputs, transposed operands (the backward), linear's bias sum.
TEST(Determinism, MatmulIsBitIdenticalAcrossThreadCounts) {
  ThreadsGuard guard;
  Rng rng(4);
  for (DType dt : {DType::F32, DType::F64})
    for (auto [M, K, N] : std::vector<std::array<int64_t, 3>>{{384, 512, 320}, {40, 300, 700}}) {
      Tensor a = randn({M, K}, rng, dt), b = randn({K, N}, rng, dt), dy = randn({M, N}, rng, dt);
      Tensor bias = randn({N}, rng, dt);
      std::vector<std::vector<double>> ref;
      for (int threads : {1, 2, 3, 4, 5}) {
        set_num_threads(threads);
        Tensor x = a.detach(), w = b.detach(), wt = transpose(b, 0, 1).detach(), c = bias.detach();
        for (Tensor* t : {&x, &w, &wt, &c}) t->set_requires_grad(true);
        Tensor y = matmul(x, w);
        y.backward(dy);
        Tensor z = linear(x, wt, c);  // x·wᵀ + c with w stored [N, K]
        z.backward(dy);
        std::vector<std::vector<double>> got = {y.to_vector(), z.to_vector(), x.grad().to_vector(),
                                                w.grad().to_vector(), wt.grad().to_vector(), c.grad().to_vector()};
        if (ref.empty()) ref = got;
        for (size_t i = 0; i < got.size(); ++i)
          EXPECT_EQ(got[i], ref[i]) << "result " << i << " of " << M << "x" << K << "·" << K << "x" << N << " with "
                                    << threads << " threads, " << dtype_name(dt);
      }
    }
}

// `train --deterministic` is accepted and, on the CPU, changes nothing: the losses
// equal those of the same run without it.
TEST(Determinism, DeterministicFlagIsANoOpOnTheCpu) {
  TempDir d;
  write_text(d.file("tiny.json"), tiny_model_config().to_json().dump());
  auto run = [&](const std::string& dir, bool flag) {
    std::vector<std::string> args = {"train", "--config", d.file("tiny.json"), "--task", "mqar:M=2,gap=5",
                                     "--steps", "6", "--batch", "2", "--log-every", "1", "--threads", "2",
                                     "--out", d.file(dir), "--quiet"};
    if (flag) args.push_back("--deterministic");
    RunResult r = run_echo(args, d);
    EXPECT_EQ(r.status, 0) << r.err;
    std::map<int64_t, double> loss;
    for (const auto& [step, j] : step_records(d.file(dir + "/metrics.jsonl"))) loss[step] = j["loss"].get<double>();
    return loss;
  };
  auto plain = run("plain", false), det = run("det", true);
  EXPECT_EQ(plain.size(), 6u);
  EXPECT_EQ(plain, det);
  RunResult help = run_echo({"train", "--help"}, d);
  EXPECT_NE(help.out.find("--deterministic"), std::string::npos) << help.out;
}
