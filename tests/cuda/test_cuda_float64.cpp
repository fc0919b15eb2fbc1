// The CUDA path of the ops with float64 kernels (has_cuda_float64: the SSD scan
// and the Koopman fit), checked the way the CPU path is: central differences in
// float64 against the CUDA backward, and the float64 CUDA results against the
// float64 CPU reference on every case of the op table. In float32 the CUDA
// kernels can only be compared with the CPU to ~1e-4 (tests/cuda/test_cuda_ops.cpp);
// in float64 the same kernels must agree to rounding, so an error in a rarely
// weighted term (a ragged chunk edge, one group of heads) cannot hide below the
// float32 tolerance.
#include "test_util.h"
#include "train/op_runner.h"

namespace echo::testing {
namespace {

std::vector<std::string> ops_with_cuda_float64() {
  std::vector<std::string> names;
  for (const auto& op : runner_ops())
    if (has_cuda_float64(op.name)) names.push_back(op.name);
  return names;
}

TEST(CudaFloat64, TheTableHasTheScanAndTheKoopmanFit) {
  const auto names = ops_with_cuda_float64();
  EXPECT_NE(std::find(names.begin(), names.end(), "ssd_scan"), names.end());
  EXPECT_NE(std::find(names.begin(), names.end(), "koopman_fit"), names.end());
  EXPECT_FALSE(has_cuda_float64("matmul"));
}

class CudaFloat64Op : public ::testing::TestWithParam<std::string> {};

// The same check as `echo-lm gradcheck --op NAME --device cuda`.
TEST_P(CudaFloat64Op, BackwardMatchesCentralDifferences) {
  ECHO_REQUIRE_GPU();
  const RunnerOp* op = find_runner_op(GetParam());
  ASSERT_NE(op, nullptr);
  PoisonGuard poison;
  const GradcheckResult r = gradcheck_op(*op, /*seed=*/1, GradcheckOptions{}, nullptr, Device::CUDA);
  EXPECT_TRUE(r.ok) << op->name << ":\n" << r.report();
  ASSERT_FALSE(r.inputs.empty());
  for (const auto& in : r.inputs) {
    EXPECT_GT(in.checked, 0) << in.name;
    EXPECT_GT(in.gradient_scale, 1e-3) << in.name << ": gradients this small check nothing";
  }
}

TEST_P(CudaFloat64Op, ForwardAndBackwardMatchTheFloat64CpuOnEveryCase) {
  ECHO_REQUIRE_GPU();
  const RunnerOp* op = find_runner_op(GetParam());
  ASSERT_NE(op, nullptr);
  auto host = [](const Tensor& t) { return t.detach().to(Device::CPU).to_vector(); };
  int variants = 0;
  for (int v = 0; v < 8; ++v) {
    Rng rng(500 + v);
    OpAttrs attrs;
    NamedTensors in = v == 0 ? op->example(rng, attrs) : (op->cases ? op->cases(rng, attrs, v) : NamedTensors{});
    if (in.empty()) break;
    ++variants;
    const OpRunResult shape_run = run_op(*op, in, {}, attrs, Device::CPU, DType::F64);
    NamedTensors grads;
    for (const auto& [name, y] : shape_run.outputs) grads[name] = randn(y.shape(), rng, DType::F64);
    PoisonGuard poison;
    const OpRunResult cpu = run_op(*op, in, grads, attrs, Device::CPU, DType::F64);
    const OpRunResult gpu = run_op(*op, in, grads, attrs, Device::CUDA, DType::F64);
    auto compare = [&](const NamedTensors& want, const NamedTensors& have, const char* what) {
      ASSERT_EQ(want.size(), have.size()) << what;
      for (const auto& [name, ref] : want) {
        ASSERT_TRUE(have.count(name)) << what << " " << name;
        const Tensor& got = have.at(name);
        EXPECT_EQ(got.dtype(), DType::F64) << op->name << " " << what << " " << name << " is not float64";
        EXPECT_LT(max_rel_diff(host(got), host(ref)), 1e-10)
            << op->name << " case " << v << ", " << what << " " << name << ": float64 CUDA against float64 CPU";
      }
    };
    compare(cpu.outputs, gpu.outputs, "output");
    ASSERT_FALSE(cpu.grads.empty());
    compare(cpu.grads, gpu.grads, "gradient");
  }
  EXPECT_GE(variants, 3) << op->name;
}

INSTANTIATE_TEST_SUITE_P(OpsWithFloat64Kernels, CudaFloat64Op, ::testing::ValuesIn(ops_with_cuda_float64()),
                         [](const ::testing::TestParamInfo<std::string>& info) { return info.param; });

}  // namespace
}  // namespace echo::testing
