// Data-parallel training under mpirun (spec §6.6, docs/distributed.md): two
// ranks equal one process to float32 rounding, repeat bit-identically, resume
// across rank counts, and a killed rank ends the job with a message naming it.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <map>
#include <thread>

#include "test_util.h"
#include "train/checkpoint.h"
#include "train/train_util.h"

namespace echo {
namespace {

using testing::has;
using testing::RunResult;
using testing::TempDir;

// The launcher: $ECHO_MPIRUN, else the one CMake found (ECHO_TEST_MPIRUN, ""
// in a build without MPI); "" when it is not an executable file here.
std::string mpirun_path() {
  const char* env = std::getenv("ECHO_MPIRUN");
  std::string p = env && *env ? env : ECHO_TEST_MPIRUN;
  return !p.empty() && ::access(p.c_str(), X_OK) == 0 ? p : "";
}

#define ECHO_REQUIRE_MPIRUN()                                                                       \
  do {                                                                                              \
    if (mpirun_path().empty())                                                                      \
      GTEST_SKIP() << "mpirun not available (built without MPI, or OpenMPI is not installed: "      \
                      "apt-get install openmpi-bin libopenmpi-dev)";                                \
  } while (0)

// `mpirun -np N echo-lm ARGS` as a shell command. Several ranks on a machine
// with fewer cores (--oversubscribe), without core binding; CI runs as root.
// Leak checking is off in the ranks: the MPI library keeps allocations to exit.
// Shared-memory transfers without cross-memory attach, which containers often
// forbid (it needs ptrace rights).
std::string mpi_command(int np, const std::vector<std::string>& args) {
  std::string cmd = "ASAN_OPTIONS=\"${ASAN_OPTIONS:-}:detect_leaks=0\" OMPI_MCA_btl_vader_single_copy_mechanism=none " +
                    testing::shell_quote(mpirun_path()) +
                    " --oversubscribe --allow-run-as-root --bind-to none -np " + std::to_string(np) + " " +
                    testing::shell_quote(testing::echo_bin());
  for (const auto& a : args) cmd += " " + testing::shell_quote(a);
  return cmd;
}

RunResult run_mpi(int np, const std::vector<std::string>& args, const TempDir& dir) {
  const std::string out = dir.file(".mpi_stdout"), err = dir.file(".mpi_stderr");
  std::string cmd = mpi_command(np, args) + " >" + testing::shell_quote(out) + " 2>" + testing::shell_quote(err) +
                    " </dev/null";
  int raw = std::system(cmd.c_str());
  RunResult r;
  r.status = raw == -1 ? -1 : WIFEXITED(raw) ? WEXITSTATUS(raw) : 128 + WTERMSIG(raw);
  r.out = testing::read_text(out);
  r.err = testing::read_text(err);
  return r;
}

// The tiny model of the trainer tests, as a config file in `dir`.
std::string tiny_config_file(const TempDir& dir) {
  std::string path = dir.file("tiny.json");
  testing::write_text(path, testing::tiny_model_config().to_json().dump());
  return path;
}

std::vector<std::string> train_args(const std::string& config, const std::string& out, int64_t steps,
                                    const std::string& device = "cpu", int batch = 8) {
  return {"train",    "--config", config, "--task",        "mqar:M=2,gap=5", "--steps", std::to_string(steps),
          "--batch",  std::to_string(batch),        "--warmup", "3",         "--log-every",    "1",       "--eval-examples",
          "8",        "--threads", "1",   "--seed",        "5",              "--device", device,
          "--out",    out,        "--quiet"};
}

// step → (loss, grad_norm) of the training records of a run.
std::map<int64_t, std::pair<double, double>> losses(const std::string& dir) {
  std::map<int64_t, std::pair<double, double>> m;
  std::stringstream ss(testing::read_text(dir + "/metrics.jsonl"));
  for (std::string line; std::getline(ss, line);) {
    auto j = nlohmann::json::parse(line);
    if (j.contains("loss") && !j.contains("eval")) m[j["step"]] = {j["loss"], j["grad_norm"]};
  }
  return m;
}

// At least n training records and a checkpoint (a half-written line counts as none).
bool losses_count_at_least(const std::string& dir, size_t n) {
  try {
    return losses(dir).size() >= n && std::filesystem::exists(dir + "/latest.h5");
  } catch (...) {
    return false;
  }
}

std::map<std::string, std::vector<double>> parameters(const std::string& checkpoint) {
  std::map<std::string, std::vector<double>> m;
  auto model = load_model(checkpoint);
  for (const auto& p : model->params().all()) m[p.name] = p.tensor.to_vector();
  return m;
}

// The bound: one process sums the batch's 8 rows inside each product and
// reduction; two ranks sum 4 rows each and add the halves, and scale the loss by
// n_r/n after a 1/n_r mean instead of 1/n. Same mathematics, other float32
// rounding (≈1e-7 relative per sum); AdamW's m/√v divides such differences by
// small √v, so a few steps grow them to ≈1e-6..1e-5 relative. 1e-4 stays far
// below any real difference (a wrong share or weight changes the loss at 1e-2).
constexpr double kLossBound = 1e-4;    // relative, per logged loss
constexpr double kParamBound = 1e-4;   // absolute, parameters of magnitude ~0.1..1

void expect_losses_close(const std::map<int64_t, std::pair<double, double>>& a,
                         const std::map<int64_t, std::pair<double, double>>& b, int64_t from, int64_t to) {
  for (int64_t s = from; s <= to; ++s) {
    ASSERT_TRUE(a.count(s) && b.count(s)) << "step " << s << " missing";
    EXPECT_NEAR(a.at(s).first, b.at(s).first, kLossBound * std::fabs(b.at(s).first)) << "loss at step " << s;
  }
}

void expect_parameters_close(const std::string& ck_a, const std::string& ck_b, double bound) {
  auto a = parameters(ck_a), b = parameters(ck_b);
  ASSERT_EQ(a.size(), b.size());
  double worst = 0;
  std::string where;
  for (const auto& [name, va] : a) {
    const auto& vb = b.at(name);
    ASSERT_EQ(va.size(), vb.size()) << name;
    for (size_t i = 0; i < va.size(); ++i)
      if (!(std::fabs(va[i] - vb[i]) <= worst)) {
        worst = std::fabs(va[i] - vb[i]);
        where = name;
      }
  }
  EXPECT_LE(worst, bound) << "largest parameter difference in " << where;
}

TEST(Distributed, TwoRanksEqualOneRankAndRepeatBitIdentically) {
  ECHO_REQUIRE_MPIRUN();
  TempDir dir;
  const std::string cfg = tiny_config_file(dir);
  const int64_t steps = 6;
  RunResult one = testing::run_echo(train_args(cfg, dir.file("one"), steps), dir);
  ASSERT_EQ(one.status, 0) << one.err;
  RunResult a = run_mpi(2, train_args(cfg, dir.file("two_a"), steps), dir);
  ASSERT_EQ(a.status, 0) << a.out << a.err;
  RunResult b = run_mpi(2, train_args(cfg, dir.file("two_b"), steps), dir);
  ASSERT_EQ(b.status, 0) << b.out << b.err;

  // Rank 0 alone reports.
  size_t done = 0;
  for (size_t p = a.out.find("done: step"); p != std::string::npos; p = a.out.find("done: step", p + 1)) ++done;
  EXPECT_EQ(done, 1u) << a.out;

  auto l1 = losses(dir.file("one")), la = losses(dir.file("two_a")), lb = losses(dir.file("two_b"));
  ASSERT_EQ(la.size(), static_cast<size_t>(steps));
  expect_losses_close(la, l1, 1, steps);
  expect_parameters_close(dir.file("two_a/latest.h5"), dir.file("one/latest.h5"), kParamBound);
  // A difference at all would show a share or weight bug: the losses are not equal bits.
  bool any_diff = false;
  for (const auto& [s, v] : l1) any_diff = any_diff || v.first != la.at(s).first;
  std::cout << "[ info ] 2 ranks vs 1: losses " << (any_diff ? "differ in the last bits" : "bit-identical") << "\n";

  // Two 2-rank runs: the same bits.
  EXPECT_EQ(la, lb);
  expect_parameters_close(dir.file("two_a/latest.h5"), dir.file("two_b/latest.h5"), 0.0);
}

TEST(Distributed, GlobalBatchMustDivideAmongRanks) {
  ECHO_REQUIRE_MPIRUN();
  TempDir dir;
  auto args = train_args(tiny_config_file(dir), dir.file("run"), 2);
  for (size_t i = 0; i + 1 < args.size(); ++i)
    if (args[i] == "--batch") args[i + 1] = "7";
  RunResult r = run_mpi(2, args, dir);
  EXPECT_NE(r.status, 0);
  EXPECT_TRUE(has(r.err, "echo-lm: train: --batch 7 cannot be split evenly among 2 ranks")) << r.err;
}

TEST(Distributed, ResumeWithAnotherRankCountContinuesTheSameRun) {
  ECHO_REQUIRE_MPIRUN();
  TempDir dir;
  const std::string cfg = tiny_config_file(dir);
  const int64_t steps = 8;
  RunResult ref = testing::run_echo(train_args(cfg, dir.file("ref"), steps), dir);
  ASSERT_EQ(ref.status, 0) << ref.err;
  auto stop_at_4 = [&](std::vector<std::string> a) {
    a.push_back("--stop-after");
    a.push_back("4");
    return a;
  };
  auto resumed = [&](std::vector<std::string> a) {
    a.push_back("--resume");
    return a;
  };
  // 2 ranks, then 1.
  RunResult a1 = run_mpi(2, stop_at_4(train_args(cfg, dir.file("a"), steps)), dir);
  ASSERT_EQ(a1.status, 0) << a1.out << a1.err;
  RunResult a2 = testing::run_echo(resumed(train_args(cfg, dir.file("a"), steps)), dir);
  ASSERT_EQ(a2.status, 0) << a2.err;
  // 1 rank, then 2.
  RunResult b1 = testing::run_echo(stop_at_4(train_args(cfg, dir.file("b"), steps)), dir);
  ASSERT_EQ(b1.status, 0) << b1.err;
  RunResult b2 = run_mpi(2, resumed(train_args(cfg, dir.file("b"), steps)), dir);
  ASSERT_EQ(b2.status, 0) << b2.out << b2.err;

  auto lr = losses(dir.file("ref"));
  expect_losses_close(losses(dir.file("a")), lr, 1, steps);
  expect_losses_close(losses(dir.file("b")), lr, 1, steps);
  // The one-process half of b is the reference itself, bit for bit.
  auto lb = losses(dir.file("b"));
  for (int64_t s = 1; s <= 4; ++s) EXPECT_EQ(lb.at(s), lr.at(s)) << "step " << s;
  expect_parameters_close(dir.file("a/latest.h5"), dir.file("ref/latest.h5"), kParamBound);
  expect_parameters_close(dir.file("b/latest.h5"), dir.file("ref/latest.h5"), kParamBound);
}

// The pid of the process whose command line mentions `needle` and whose
// environment says it is MPI rank `rank`, or -1.
pid_t find_rank_pid(const std::string& needle, int rank) {
  const std::string want = "OMPI_COMM_WORLD_RANK=" + std::to_string(rank);
  for (const auto& e : std::filesystem::directory_iterator("/proc")) {
    const std::string name = e.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::string cmdline = testing::read_text(e.path().string() + "/cmdline");
    if (!has(cmdline, needle) || !has(cmdline, "train")) continue;
    std::string env = testing::read_text(e.path().string() + "/environ");
    std::stringstream ss(env);
    for (std::string var; std::getline(ss, var, '\0');)
      if (var == want) return static_cast<pid_t>(std::stol(name));
  }
  return -1;
}

TEST(Distributed, KilledRankEndsTheJobNamingItAndLatestStaysLoadable) {
  ECHO_REQUIRE_MPIRUN();
  TempDir dir;
  const std::string out = dir.file("run");
  auto args = train_args(tiny_config_file(dir), out, 1000000);
  args.insert(args.end(), {"--ckpt-every", "3"});
  const std::string err_path = dir.file("killed.err");
  const std::string cmd = mpi_command(2, args) + " >/dev/null 2>" + testing::shell_quote(err_path) + " </dev/null";
  pid_t job = ::fork();
  ASSERT_GE(job, 0);
  if (job == 0) {
    ::setpgid(0, 0);
    ::execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  ::setpgid(job, job);
  // Generous deadlines: they only stop a hung job from hanging the test.
  auto wait_for = [&](double seconds, const std::function<bool()>& ready) {
    auto until = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
    while (std::chrono::steady_clock::now() < until) {
      if (ready()) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return false;
  };
  int raw = 0;
  bool exited = false;
  auto job_exited = [&] {
    if (!exited && ::waitpid(job, &raw, WNOHANG) == job) exited = true;
    return exited;
  };
  // Let it write a few checkpoints, then kill rank 1 without warning.
  bool started = wait_for(120, [&] {
    return job_exited() || losses_count_at_least(out, 7);
  });
  pid_t victim = started && !exited ? find_rank_pid(out, 1) : -1;
  if (victim > 0) ::kill(victim, SIGKILL);
  // The job must end by itself within 60 s of the kill.
  bool ended = victim > 0 && wait_for(60, job_exited);
  if (!job_exited()) {
    ::kill(-job, SIGKILL);
    ::waitpid(job, &raw, 0);
  }
  const std::string err = testing::read_text(err_path);
  ASSERT_TRUE(started && victim > 0) << "the job did not get going (or rank 1 was not found): " << err;
  EXPECT_TRUE(ended) << "the job was still running 60 s after rank 1 was killed: " << err;
  EXPECT_FALSE(WIFEXITED(raw) && WEXITSTATUS(raw) == 0) << err;
  EXPECT_TRUE(has(err, "echo-lm: rank 1 ")) << err;
  // The newest complete checkpoint loads, optimizer state and all.
  auto model = load_model(out + "/latest.h5");
  std::vector<ParamRef> refs;
  for (const auto& p : model->params().all()) refs.push_back({p.name, p.tensor, true});
  AdamW opt(refs, {});
  TrainState state;
  EXPECT_NO_THROW(load_training_state(out + "/latest.h5", opt, state));
  EXPECT_GE(state.step, 3);
}

// A CUDA run on 2 ranks equals 1 rank (NCCL with a GPU per rank; ranks that
// share a GPU, as on the emulated device, reduce through host memory). Run by
// scripts/gpu_check.sh. Small (batch 4, 2 steps: one update between the
// compared losses) because the emulated device is slow.
TEST(Distributed, CudaTwoRanksEqualOneRank) {
  ECHO_REQUIRE_GPU();
  ECHO_REQUIRE_MPIRUN();
  TempDir dir;
  const std::string cfg = tiny_config_file(dir);
  const int64_t steps = 2;
  RunResult one = testing::run_echo(train_args(cfg, dir.file("one"), steps, "cuda", 4), dir);
  ASSERT_EQ(one.status, 0) << one.err;
  RunResult two = run_mpi(2, train_args(cfg, dir.file("two"), steps, "cuda", 4), dir);
  ASSERT_EQ(two.status, 0) << two.out << two.err;
  expect_losses_close(losses(dir.file("two")), losses(dir.file("one")), 1, steps);
  expect_parameters_close(dir.file("two/latest.h5"), dir.file("one/latest.h5"), kParamBound);
}

}  // namespace
}  // namespace echo
