#include "ops/gated_rmsnorm.h"

#include "ops/runner.h"
#include "test_util.h"

using namespace echo;
using namespace echo::testing;

namespace {
// Independent naive reference: u = x·z/(1+e^{−z}); y = u / sqrt(mean(u²)+eps) · w.
std::vector<double> ref_gated(const std::vector<double>& x, const std::vector<double>& z,
                              const std::vector<double>& w, int64_t d, double eps) {
  std::vector<double> u(x.size()), y(x.size());
  for (size_t i = 0; i < x.size(); ++i) u[i] = x[i] * z[i] / (1.0 + std::exp(-z[i]));
  for (size_t r = 0; r < x.size() / d; ++r) {
    double ms = 0;
    for (int64_t j = 0; j < d; ++j) ms += u[r * d + j] * u[r * d + j] / d;
    for (int64_t j = 0; j < d; ++j) y[r * d + j] = u[r * d + j] / std::sqrt(ms + eps) * w[j];
  }
  return y;
}
GradcheckFn gated_fn(double eps) {
  return [eps](const std::vector<Tensor>& in) { return std::vector<Tensor>{gated_rmsnorm(in[0], in[1], in[2], eps)}; };
}
}  // namespace

TEST(GatedRmsnorm, MatchesNaiveLoopF64AndF32) {
  PoisonGuard poison;
  Rng rng(1);
  for (int64_t d : {1, 16, 129}) {
    Tensor x = rnd({4, 3, d}, rng), z = rnd({4, 3, d}, rng, DType::F64, 3.0), w = rnd({d}, rng);
    auto ref = ref_gated(x.to_vector(), z.to_vector(), w.to_vector(), d, 1e-5);
    EXPECT_LT(max_rel_diff(gated_rmsnorm(x, z, w).to_vector(), ref), 1e-13) << d;
    EXPECT_LT(max_rel_diff(gated_rmsnorm(x.to(DType::F32), z.to(DType::F32), w.to(DType::F32)).to_vector(), ref),
              3e-6)
        << d;
    auto ref_eps = ref_gated(x.to_vector(), z.to_vector(), w.to_vector(), d, 0.5);
    EXPECT_LT(max_rel_diff(gated_rmsnorm(x, z, w, 0.5).to_vector(), ref_eps), 1e-13) << d;
  }
}

TEST(GatedRmsnorm, GradcheckF64) {
  Rng rng(2);
  Tensor x = rnd({2, 3, 10}, rng), z = rnd({2, 3, 10}, rng, DType::F64, 2.0), w = rnd({10}, rng);
  expect_gradcheck(gated_fn(1e-5), {x, z, w}, {true, true, true}, {"x", "z", "w"});
  expect_gradcheck(gated_fn(0.1), {x, z, w}, {false, true, false}, {"x", "z", "w"});
  expect_gradcheck(gated_fn(0.1), {x, z, w}, {true, false, false}, {"x", "z", "w"});
  expect_gradcheck(gated_fn(0.1), {x, z, w}, {false, false, true}, {"x", "z", "w"});
  Tensor xl = rnd({200, 3}, rng), zl = rnd({200, 3}, rng), wl = rnd({3}, rng);
  GradcheckOptions opt;
  opt.max_elements = 150;
  expect_gradcheck(gated_fn(1e-5), {xl, zl, wl}, {true, true, true}, {"x", "z", "w"}, opt);
}

TEST(GatedRmsnorm, BadShapesThrowNamingTheInput) {
  Tensor x = Tensor::zeros({2, 8}, DType::F32);
  expect_throw_containing([&] { gated_rmsnorm(x, Tensor::zeros({2, 7}, DType::F32), Tensor::zeros({8}, DType::F32)); },
                          "gated_rmsnorm: z must have shape [2,8]");
  expect_throw_containing([&] { gated_rmsnorm(x, x, Tensor::zeros({2, 8}, DType::F32)); },
                          "gated_rmsnorm: w must have shape [8]");
  EXPECT_THROW(gated_rmsnorm(x, x.to(DType::F64), Tensor::zeros({8}, DType::F32)), std::runtime_error);
}

TEST(GatedRmsnorm, RunnerEntry) {
  const RunnerOp* op = find_runner_op("gated_rmsnorm");
  ASSERT_NE(op, nullptr);
  gradcheck_runner_example(*op);
  EXPECT_EQ(op->inputs, (std::vector<std::string>{"x", "z", "w"}));
  EXPECT_EQ(op->outputs, (std::vector<std::string>{"y"}));
  EXPECT_DOUBLE_EQ(attr({}, *op, "eps"), 1e-5);
  Rng rng(4);
  OpAttrs attrs;
  NamedTensors in = op->example(rng, attrs);
  auto out = op->forward(in, attrs);
  auto ref = ref_gated(in["x"].to_vector(), in["z"].to_vector(), in["w"].to_vector(), in["x"].size(-1),
                       attr(attrs, *op, "eps"));
  EXPECT_LT(max_rel_diff(out.at("y").to_vector(), ref), 1e-13);
  auto out_eps = op->forward(in, {{"eps", 0.25}});
  auto ref_eps = ref_gated(in["x"].to_vector(), in["z"].to_vector(), in["w"].to_vector(), in["x"].size(-1), 0.25);
  EXPECT_LT(max_rel_diff(out_eps.at("y").to_vector(), ref_eps), 1e-13);
  NamedTensors missing = in;
  missing.erase("z");
  EXPECT_THROW(op->forward(missing, attrs), std::runtime_error);
}

TEST(GatedRmsnorm, CudaMatchesCpu) {
  ECHO_REQUIRE_GPU();
  Rng rng(3);
  for (int64_t d : {5, 256, 896}) {
    Tensor x = rnd({6, 41, d}, rng, DType::F32), z = rnd({6, 41, d}, rng, DType::F32, 2.0),
           w = rnd({d}, rng, DType::F32);
    Tensor xc = x.to(Device::CUDA), zc = z.to(Device::CUDA), wc = w.to(Device::CUDA);
    for (Tensor* t : {&x, &z, &w, &xc, &zc, &wc}) t->set_requires_grad(true);
    Tensor y = gated_rmsnorm(x, z, w), yc = gated_rmsnorm(xc, zc, wc);
    EXPECT_LT(max_rel_diff(yc.to(Device::CPU), y), 1e-5) << d;
    Tensor seed = rnd(y.shape(), rng, DType::F32);
    y.backward(seed);
    yc.backward(seed.to(Device::CUDA));
    EXPECT_LT(max_rel_diff(xc.grad().to(Device::CPU), x.grad()), 1e-5) << d;
    EXPECT_LT(max_rel_diff(zc.grad().to(Device::CPU), z.grad()), 1e-5) << d;
    EXPECT_LT(max_rel_diff(wc.grad().to(Device::CPU), w.grad()), 1e-5) << d;
  }
}
