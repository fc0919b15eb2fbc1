#include "ops/l2norm.h"

#include "test_util.h"

using namespace echo;
using namespace echo::testing;

namespace {
std::vector<double> ref_l2norm(const std::vector<double>& x, int64_t d, double eps) {
  std::vector<double> y(x.size());
  for (size_t r = 0; r < x.size() / d; ++r) {
    double ss = 0;
    for (int64_t j = 0; j < d; ++j) ss += x[r * d + j] * x[r * d + j];
    for (int64_t j = 0; j < d; ++j) y[r * d + j] = x[r * d + j] / std::sqrt(ss + eps);
  }
  return y;
}
}  // namespace

TEST(L2norm, MatchesNaiveLoopF64AndF32) {
  PoisonGuard poison;
  Rng rng(1);
  for (int64_t d : {1, 3, 24, 56, 300}) {
    Tensor x = rnd({2, 7, 3, d}, rng, DType::F64, 0.7);
    auto ref = ref_l2norm(x.to_vector(), d, 1e-6);
    EXPECT_LT(max_rel_diff(l2norm(x).to_vector(), ref), 1e-14) << d;
    EXPECT_LT(max_rel_diff(l2norm(x.to(DType::F32)).to_vector(), ref), 1e-6) << d;
    auto ref_eps = ref_l2norm(x.to_vector(), d, 0.3);
    EXPECT_LT(max_rel_diff(l2norm(x, 0.3).to_vector(), ref_eps), 1e-14) << d;
  }
  // Rows come out with unit norm (up to eps); a zero row stays zero.
  Tensor x = Tensor::from_vector({3, 4, 0, 0}, {2, 2}, DType::F64);
  auto y = l2norm(x).to_vector();
  EXPECT_NEAR(y[0], 0.6, 1e-7);
  EXPECT_NEAR(y[1], 0.8, 1e-7);
  EXPECT_EQ(y[2], 0.0);
  EXPECT_EQ(y[3], 0.0);
}

TEST(L2norm, GradcheckF64) {
  Rng rng(2);
  Tensor x = rnd({3, 4, 8}, rng);
  expect_gradcheck([](const std::vector<Tensor>& in) { return std::vector<Tensor>{l2norm(in[0])}; }, {x}, {true},
                   {"x"});
  // Small rows where eps is not negligible.
  Tensor xs = rnd({5, 3}, rng, DType::F64, 0.01);
  expect_gradcheck([](const std::vector<Tensor>& in) { return std::vector<Tensor>{l2norm(in[0], 1e-4)}; }, {xs},
                   {true}, {"x"}, GradcheckOptions{1e-8, 1e-6, 2000, 1234});
}

TEST(L2norm, BadInputsThrowNamingTheOp) {
  expect_throw_containing([&] { l2norm(Tensor::zeros({3, 0}, DType::F32)); },
                          "l2norm: x must have a non-empty last axis");
  expect_throw_containing([&] { l2norm(Tensor::zeros({3, 2}, DType::I32)); }, "l2norm: expected f32 or f64");
}

TEST(L2norm, CudaMatchesCpu) {
  ECHO_REQUIRE_GPU();
  Rng rng(3);
  for (int64_t d : {3, 24, 56, 700}) {
    Tensor x = rnd({5, 33, 7, d}, rng, DType::F32);
    Tensor xc = x.to(Device::CUDA);
    x.set_requires_grad(true);
    xc.set_requires_grad(true);
    Tensor y = l2norm(x), yc = l2norm(xc);
    EXPECT_LT(max_rel_diff(yc.to(Device::CPU), y), 1e-5) << d;
    Tensor seed = rnd(y.shape(), rng, DType::F32);
    y.backward(seed);
    yc.backward(seed.to(Device::CUDA));
    EXPECT_LT(max_rel_diff(xc.grad().to(Device::CPU), x.grad()), 1e-5) << d;
  }
}
