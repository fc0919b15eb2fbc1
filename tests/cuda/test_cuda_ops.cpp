// Every op of the runner table on the CUDA backend against the float64 CPU
// reference, forward and backward, on each of the op's cases (its gradcheck
// example and larger shapes that are not multiples of the kernels' block and
// tile sizes). On the emulated device each case also runs under the three
// thread schedules and must give the same bits under all of them: a kernel
// with a race between its threads fails here.
#include "test_util.h"
#include "train/op_runner.h"

#if defined(ECHO_CUDA_EMULATED)
#include <cuda_runtime.h>
#endif

#include <cstring>

namespace echo::testing {
namespace {

// Scale-relative tolerance of f32 CUDA against f64 CPU. The scans and the
// Koopman fit accumulate over sequences and solve small linear systems in f32.
double tolerance(const std::string& op) {
  if (op == "koopman_fit") return 2e-3;
  if (op == "ssd_scan" || op == "causal_attention" || op == "cross_entropy") return 5e-4;
  return 2e-5 * 8;
}

struct Flat {
  std::vector<std::string> names;
  std::vector<std::vector<double>> values;
};
Flat flatten(const OpRunResult& r) {
  Flat f;
  for (const auto& [name, t] : r.outputs) {
    f.names.push_back("output " + name);
    f.values.push_back(t.detach().to(Device::CPU).to(DType::F64).to_vector());
  }
  for (const auto& [name, t] : r.grads) {
    f.names.push_back("grad_" + name);
    f.values.push_back(t.detach().to(Device::CPU).to(DType::F64).to_vector());
  }
  return f;
}

bool same_bits(const std::vector<double>& a, const std::vector<double>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(double)) == 0;
}

// The schedules a case runs under: three on the emulated device, the device's
// own (one run) on a GPU.
struct ScheduleRun {
  std::string name;
  std::function<void()> select;
};
std::vector<ScheduleRun> schedules() {
#if defined(ECHO_CUDA_EMULATED)
  using echo::emu::Schedule;
  return {{"in-order", [] { echo::emu::set_schedule(Schedule::InOrder); }},
          {"reversed", [] { echo::emu::set_schedule(Schedule::Reversed); }},
          {"random", [] { echo::emu::set_schedule(Schedule::Random, 20261203); }}};
#else
  return {{"device", [] {}}};
#endif
}

void check_op_case(const RunnerOp& op, int variant) {
  Rng rng(1000 + variant);
  OpAttrs attrs;
  NamedTensors in = op.cases ? op.cases(rng, attrs, variant) : op.example(rng, attrs);
  // Output gradients: random, shaped like the CPU forward's outputs.
  OpRunResult shape_run = run_op(op, in, {}, attrs, Device::CPU, DType::F64);
  NamedTensors grads;
  for (const auto& [name, y] : shape_run.outputs) grads[name] = randn(y.shape(), rng, DType::F64);

  PoisonGuard poison;
  const Flat cpu = flatten(run_op(op, in, grads, attrs, Device::CPU, DType::F64));
  ASSERT_FALSE(cpu.names.empty());
  std::vector<Flat> gpu;
  for (const auto& s : schedules()) {
    s.select();
    gpu.push_back(flatten(run_op(op, in, grads, attrs, Device::CUDA, DType::F32)));
  }
  schedules().front().select();
  const auto runs = schedules();
  for (size_t r = 0; r < gpu.size(); ++r) {
    ASSERT_EQ(gpu[r].names, cpu.names) << op.name << " case " << variant;
    for (size_t i = 0; i < cpu.names.size(); ++i) {
      const double rel = max_rel_diff(gpu[r].values[i], cpu.values[i]);
      EXPECT_LT(rel, tolerance(op.name)) << op.name << " case " << variant << ", " << cpu.names[i]
                                         << ": CUDA (" << runs[r].name << " schedule) against the f64 CPU";
      if (r > 0)
        EXPECT_TRUE(same_bits(gpu[r].values[i], gpu[0].values[i]))
            << op.name << " case " << variant << ", " << cpu.names[i] << ": the " << runs[r].name
            << " schedule gives other bits than " << runs[0].name << " (a race between threads)";
    }
  }
}

class CudaOps : public ::testing::TestWithParam<std::string> {};

TEST_P(CudaOps, MatchTheFloat64CpuForwardAndBackwardUnderEverySchedule) {
  ECHO_REQUIRE_GPU();
  const RunnerOp* op = find_runner_op(GetParam());
  ASSERT_NE(op, nullptr);
  int variants = 0;
  for (int v = 0; v < 8; ++v) {
    Rng probe(1000 + v);
    OpAttrs a;
    if (v > 0 && (!op->cases || op->cases(probe, a, v).empty())) break;
    check_op_case(*op, v);
    ++variants;
  }
  EXPECT_GE(variants, 3) << op->name << ": the table wants the example and at least two larger shapes";
}

std::vector<std::string> all_op_names() {
  std::vector<std::string> names;
  for (const auto& op : runner_ops()) names.push_back(op.name);
  return names;
}

INSTANTIATE_TEST_SUITE_P(EveryRunnerOp, CudaOps, ::testing::ValuesIn(all_op_names()),
                         [](const ::testing::TestParamInfo<std::string>& info) { return info.param; });

// The table holds every op the models call.
TEST(CudaOps, TheRunnerTableHoldsEveryOpTheModelsUse) {
  for (const char* name : {"causal_conv1d", "gated_rmsnorm", "ssd_scan", "koopman_fit", "causal_attention", "rmsnorm",
                           "l2norm", "embedding", "cross_entropy", "matmul", "linear", "bmm", "sigmoid", "silu",
                           "softplus", "exp", "relu", "tanh", "add", "sub", "mul", "div", "scale", "add_scalar", "sum",
                           "mean", "sum_last", "transpose", "slice", "concat", "koopman_rotate"})
    EXPECT_NE(find_runner_op(name), nullptr) << name;
}

}  // namespace
}  // namespace echo::testing
