#include "ops/unary.h"

#include "test_util.h"

using namespace echo;
using namespace echo::testing;

namespace {
using UnaryFn = Tensor (*)(const Tensor&);
struct Case { const char* name; UnaryFn fn; double (*ref)(double); };
double ref_sigmoid(double x) { return 1 / (1 + std::exp(-x)); }
double ref_silu(double x) { return x * ref_sigmoid(x); }
double ref_softplus(double x) { return x > 20 ? x : std::log(1 + std::exp(x)); }
double ref_exp(double x) { return std::exp(x); }
double ref_relu(double x) { return x > 0 ? x : 0; }
double ref_tanh(double x) { return std::tanh(x); }
const Case kCases[] = {{"sigmoid", sigmoid, ref_sigmoid}, {"silu", silu, ref_silu},
                       {"softplus", softplus, ref_softplus}, {"exp", echo::exp, ref_exp},
                       {"relu", relu, ref_relu}, {"tanh", echo::tanh, ref_tanh}};
}  // namespace

TEST(Unary, MatchesNaiveLoopF64AndF32) {
  PoisonGuard poison;
  Rng rng(1);
  for (const auto& c : kCases) {
    Tensor x = rnd({3, 5, 7}, rng, DType::F64, 3.0);
    auto xv = x.to_vector();
    std::vector<double> ref(xv.size());
    for (size_t i = 0; i < xv.size(); ++i) ref[i] = c.ref(xv[i]);
    EXPECT_LT(max_rel_diff(c.fn(x).to_vector(), ref), 1e-14) << c.name;
    EXPECT_LT(max_rel_diff(c.fn(x.to(DType::F32)).to_vector(), ref), 1e-6) << c.name;
  }
}

TEST(Unary, SoftplusIsIdentityAbove20AndFiniteFarOut) {
  Tensor x = Tensor::from_vector({25.0, 1000.0, -1000.0}, {3}, DType::F32);
  auto y = softplus(x).to_vector();
  EXPECT_EQ(y[0], 25.0);
  EXPECT_EQ(y[1], 1000.0);
  EXPECT_GE(y[2], 0.0);
  EXPECT_TRUE(std::isfinite(y[2]));
}

TEST(Unary, GradcheckF64) {
  Rng rng(2);
  for (const auto& c : kCases) {
    Tensor x = rnd({4, 6}, rng, DType::F64, 2.0);
    if (std::string(c.name) == "relu") {  // keep away from the kink
      auto v = x.to_vector();
      for (auto& e : v) if (std::fabs(e) < 1e-3) e = 0.5;
      x = Tensor::from_vector(v, x.shape(), DType::F64);
    }
    auto fn = c.fn;
    expect_gradcheck([fn](const std::vector<Tensor>& in) { return std::vector<Tensor>{fn(in[0])}; },
                     {x}, {true}, {std::string(c.name) + ".x"});
  }
}

TEST(Unary, CudaMatchesCpu) {
  ECHO_REQUIRE_GPU();
  Rng rng(3);
  for (const auto& c : kCases) {
    Tensor x = rnd({1000, 37}, rng, DType::F32, 3.0);
    Tensor xc = x.to(Device::CUDA);
    x.set_requires_grad(true);
    xc.set_requires_grad(true);
    Tensor y = c.fn(x), yc = c.fn(xc);
    EXPECT_LT(max_rel_diff(yc.to(Device::CPU), y), 1e-5) << c.name;
    Tensor seed = rnd({1000, 37}, rng, DType::F32);
    y.backward(seed);
    yc.backward(seed.to(Device::CUDA));
    EXPECT_LT(max_rel_diff(xc.grad().to(Device::CPU), x.grad()), 1e-5) << c.name;
  }
}
