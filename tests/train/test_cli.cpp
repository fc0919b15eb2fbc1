// The echo-lm binary: help texts, one-line errors with a non-zero status,
// `bench` output, and `op` end to end when the runner table has the op.
#include <nlohmann/json.hpp>
#include <map>
#include <set>

#include "ops/runner.h"
#include "test_util.h"
#include "train/h5io.h"
#include "train_util.h"

using namespace echo;
using namespace echo::testing;

namespace {

bool contains(const std::string& text, const std::string& what) { return text.find(what) != std::string::npos; }

// A bad input: non-zero status, nothing on stdout, exactly one line on stderr
// that starts with "echo-lm: " and names the problem.
void expect_one_line_error(const std::vector<std::string>& args, const std::vector<std::string>& fragments) {
  TempDir dir;
  RunResult r = run_echo(args, dir);
  std::string cmd;
  for (const auto& a : args) cmd += " " + a;
  SCOPED_TRACE("echo-lm" + cmd);
  EXPECT_NE(r.status, 0);
  EXPECT_LT(r.status, 128) << "killed by a signal";
  auto lines = r.err_lines();
  ASSERT_EQ(lines.size(), 1u) << "stderr:\n" << r.err;
  EXPECT_EQ(lines[0].rfind("echo-lm: ", 0), 0u) << lines[0];
  for (const auto& f : fragments) EXPECT_TRUE(contains(lines[0], f)) << lines[0] << "\nmissing: " << f;
}

}  // namespace

TEST(Cli, HelpDocumentsEveryCommandAndFlag) {
  TempDir dir;
  RunResult top = run_echo({"--help"}, dir);
  EXPECT_EQ(top.status, 0) << top.err;
  for (const char* cmd : {"op", "gradcheck", "bench"}) EXPECT_TRUE(contains(top.out, cmd)) << top.out;

  const std::map<std::string, std::vector<std::string>> flags = {
      {"op", {"--in", "--out", "--device", "--dtype", "Runner ops"}},
      {"gradcheck", {"--op", "--seed", "--eps", "--tolerance", "--max-elements"}},
      {"bench", {"--device", "--size", "--iters", "--warmup", "--list", "unary"}},
  };
  for (const auto& [cmd, fs] : flags) {
    RunResult r = run_echo({cmd, "--help"}, dir);
    EXPECT_EQ(r.status, 0) << cmd << ": " << r.err;
    EXPECT_TRUE(r.err.empty()) << r.err;
    for (const auto& f : fs) EXPECT_TRUE(contains(r.out, f)) << cmd << " --help lacks " << f << ":\n" << r.out;
  }
}

TEST(Cli, BadInputsGiveOneLineAndNonZeroStatus) {
  expect_one_line_error({}, {"no command given", "op, gradcheck, bench"});
  expect_one_line_error({"fly"}, {"unknown command 'fly'"});
  expect_one_line_error({"--frobnicate"}, {"--frobnicate"});
  expect_one_line_error({"op", "nosuchop", "--in", "a.h5", "--out", "b.h5"}, {"unknown op 'nosuchop'"});
  expect_one_line_error({"op", "x", "--out", "b.h5"}, {"--in is required"});
  expect_one_line_error({"op", "x", "--in", "a.h5", "--out", "b.h5", "--device", "gpu"}, {"--device", "gpu"});
  expect_one_line_error({"op", "x", "--in", "a.h5", "--out", "b.h5", "--dtype", "f16"}, {"--dtype", "f16"});
  expect_one_line_error({"gradcheck"}, {"--op is required"});
  expect_one_line_error({"gradcheck", "--op", "nosuchop"}, {"unknown op 'nosuchop'"});
  expect_one_line_error({"gradcheck", "--op", "x", "--seed", "abc"}, {"abc"});
  expect_one_line_error({"bench"}, {"name a benchmark"});
  expect_one_line_error({"bench", "nosuchbench"}, {"unknown benchmark 'nosuchbench'", "unary"});
  expect_one_line_error({"bench", "unary", "--size", "q=3"}, {"unknown size 'q'", "sizes: n"});
  expect_one_line_error({"bench", "unary", "--size", "n=lots"}, {"--size n wants an integer"});
  expect_one_line_error({"bench", "unary", "--size", "n"}, {"KEY=N"});
  expect_one_line_error({"bench", "unary", "--iters", "0"}, {"--iters"});
  expect_one_line_error({"bench", "unary", "--size", "n=8", "surplus"}, {"surplus"});
  if (!cuda_available()) expect_one_line_error({"bench", "unary", "--device", "cuda"}, {"--device cuda"});
}

TEST(Cli, BenchPrintsOneJsonObjectPerCase) {
  TempDir dir;
  RunResult r = run_echo({"bench", "unary", "--size", "n=4096", "--iters", "2"}, dir);
  ASSERT_EQ(r.status, 0) << r.err;
  std::stringstream ss(r.out);
  int lines = 0;
  std::set<std::string> cases;
  for (std::string line; std::getline(ss, line); ++lines) {
    nlohmann::json j = nlohmann::json::parse(line);  // throws (fails the test) on a non-JSON line
    EXPECT_EQ(j.at("bench"), "unary");
    EXPECT_EQ(j.at("device"), "cpu");
    EXPECT_EQ(j.at("n"), 4096);
    EXPECT_GT(j.at("ms").get<double>(), 0.0);
    cases.insert(j.at("case").get<std::string>());
  }
  EXPECT_EQ(lines, 2);
  EXPECT_EQ(cases, (std::set<std::string>{"forward", "forward_backward"}));

  RunResult list = run_echo({"bench", "--list"}, dir);
  EXPECT_EQ(list.status, 0);
  EXPECT_TRUE(contains(list.out, "unary")) << list.out;
}

// `echo-lm bench step` (spec §6.5): one JSON object whose numbers hang together.
TEST(Cli, BenchStepTimesWholeTrainingSteps) {
  TempDir dir;
  RunResult r = run_echo({"bench", "step", "--model", "ska-1m", "--batch", "2", "--seq", "16", "--iters", "3",
                          "--warmup", "1", "--threads", "1"},
                         dir);
  ASSERT_EQ(r.status, 0) << r.err;
  nlohmann::json j = nlohmann::json::parse(r.out);  // exactly one JSON object
  EXPECT_EQ(j.at("bench"), "step");
  EXPECT_EQ(j.at("device"), "cpu");
  EXPECT_EQ(j.at("iters"), 3);
  EXPECT_EQ(j.at("step_s_each").size(), 3u);
  const double mean = j.at("step_s"), lo = j.at("step_s_min"), hi = j.at("step_s_max");
  EXPECT_GT(lo, 0.0);
  EXPECT_LE(lo, mean);
  EXPECT_LE(mean, hi);
  EXPECT_NEAR(j.at("tokens_per_s").get<double>(), 32 / mean, 1e-9 * 32 / mean);
  // dense FLOPs are 6 · parameters · tokens; the total adds the scan and fit.
  const double params = j.at("parameters");
  EXPECT_DOUBLE_EQ(j.at("gflop_per_step_parts").at("dense").get<double>(), 6 * params * 32 / 1e9);
  EXPECT_GT(j.at("gflop_per_step_parts").at("ssd_scan").get<double>(), 0.0);
  EXPECT_GT(j.at("gflop_per_step_parts").at("koopman_fit").get<double>(), 0.0);
  EXPECT_NEAR(j.at("gflops_per_s").get<double>(), j.at("gflop_per_step").get<double>() / mean, 1e-9);
  EXPECT_TRUE(j.at("mfu").is_null()) << "no known peak for a CPU";
  EXPECT_GT(j.at("peak_host_bytes").get<double>(), 4 * params) << "at least the parameters' gradients";
  EXPECT_GT(j.at("share_of_sgemm").get<double>(), 0.0);
  EXPECT_FALSE(j.contains("profile")) << "only with --profile";

  // --profile: every op of the step is charged, and the charges add up to the step.
  RunResult p = run_echo({"bench", "step", "--model", "ska-1m", "--batch", "2", "--seq", "16", "--iters", "2",
                          "--warmup", "1", "--threads", "1", "--profile"},
                         dir);
  ASSERT_EQ(p.status, 0) << p.err;
  nlohmann::json jp = nlohmann::json::parse(p.out);
  std::map<std::string, nlohmann::json> rows;
  double shares = 0;
  for (const auto& row : jp.at("profile")) {
    rows[row.at("op").get<std::string>()] = row;
    shares += row.at("share").get<double>();
  }
  EXPECT_NEAR(shares, 1.0, 1e-9);
  for (const char* op : {"linear", "ssd_scan", "koopman_fit", "linear_cross_entropy", "(AdamW, with the clipping)"}) {
    ASSERT_TRUE(rows.count(op)) << op << " missing from the profile";
    EXPECT_GT(rows[op].at("forward_ms").get<double>() + rows[op].at("backward_ms").get<double>(), 0.0) << op;
  }
  // ska-1m (MMSS): 2 scans and 2 fits per step, each with a backward.
  EXPECT_EQ(rows["ssd_scan"].at("calls_per_step").get<double>(), 2.0);
  EXPECT_EQ(rows["koopman_fit"].at("calls_per_step").get<double>(), 2.0);
  EXPECT_GT(rows["ssd_scan"].at("backward_ms").get<double>(), 0.0);

  if (cuda_available()) {
    RunResult g = run_echo({"bench", "step", "--model", "ska-1m", "--batch", "1", "--seq", "8", "--iters", "1",
                            "--warmup", "1", "--device", "cuda"},
                           dir);
    ASSERT_EQ(g.status, 0) << g.err;
    nlohmann::json c = nlohmann::json::parse(g.out);
    // Parameters, gradients and both AdamW moments live on the device at least.
    EXPECT_GT(c.at("peak_device_bytes").get<double>(), 16 * params);
    EXPECT_GE(c.at("host_syncs_per_step").get<double>(), 1.0) << "the loss is read back every step";
  }

  expect_one_line_error({"bench", "step", "--batch", "2"}, {"--model"});
  expect_one_line_error({"bench", "unary", "--model", "ska-1m"}, {"bench step"});
  expect_one_line_error({"bench", "step", "--model", "nosuchmodel"}, {"nosuchmodel"});
}

// `echo-lm op` end to end on a real op of the table: errors about the files,
// then a forward+backward run whose output the library reads back.
TEST(Cli, OpRunsGatedRmsnormFromFiles) {
  if (!find_runner_op("gated_rmsnorm")) GTEST_SKIP() << "gated_rmsnorm is not in the runner table of this build yet";
  TempDir dir;
  const std::string in = dir.file("IN.h5"), out = dir.file("OUT.h5");
  expect_one_line_error({"op", "gated_rmsnorm", "--in", in, "--out", out}, {in, "no such file"});
  write_text(in, "garbage");
  expect_one_line_error({"op", "gated_rmsnorm", "--in", in, "--out", out}, {in, "not an HDF5 file"});

  Rng rng(2);
  Tensor x = randn({3, 6}, rng, DType::F32), z = randn({3, 6}, rng, DType::F32), w = randn({6}, rng, DType::F32);
  auto write_in = [&](bool with_extra) {
    h5::File f = h5::File::create(in);
    f.write("x", x);
    f.write("z", z);
    f.write("w", w);
    f.write("grad_y", randn({3, 6}, rng, DType::F32));
    f.set_attr("/", "eps", 1e-4);
    if (with_extra) f.write("bias", w);
    f.close();
  };
  write_in(true);
  expect_one_line_error({"op", "gated_rmsnorm", "--in", in, "--out", out}, {in, "unknown dataset(s) 'bias'"});
  write_in(false);
  RunResult r = run_echo({"op", "gated_rmsnorm", "--in", in, "--out", out, "--dtype", "f64"}, dir);
  ASSERT_EQ(r.status, 0) << r.err;
  h5::File o = h5::File::open(out);
  EXPECT_EQ(o.list_datasets(), (std::vector<std::string>{"grad_w", "grad_x", "grad_z", "y"}));
  EXPECT_EQ(o.read("y").dtype(), DType::F32);  // written in the inputs' dtype
  EXPECT_EQ(o.read("y").shape(), x.shape());
  EXPECT_EQ(o.attr_string("/", "dtype"), "f64");

  RunResult gc = run_echo({"gradcheck", "--op", "gated_rmsnorm"}, dir);
  EXPECT_EQ(gc.status, 0) << gc.out << gc.err;
  EXPECT_TRUE(contains(gc.out, "PASS gated_rmsnorm")) << gc.out;
  EXPECT_TRUE(contains(gc.out, "gated_rmsnorm.x")) << gc.out;
}
