#include "ops/rmsnorm.h"

#include "test_util.h"

using namespace echo;
using namespace echo::testing;

namespace {
// Independent naive reference: y = x / sqrt(mean(x²)+eps) · w per row.
std::vector<double> ref_rmsnorm(const std::vector<double>& x, const std::vector<double>& w, int64_t d, double eps) {
  std::vector<double> y(x.size());
  for (size_t r = 0; r < x.size() / d; ++r) {
    double ms = 0;
    for (int64_t j = 0; j < d; ++j) ms += x[r * d + j] * x[r * d + j];
    ms /= d;
    for (int64_t j = 0; j < d; ++j) y[r * d + j] = x[r * d + j] / std::sqrt(ms + eps) * w[j];
  }
  return y;
}
}  // namespace

TEST(Rmsnorm, MatchesNaiveLoopF64AndF32) {
  PoisonGuard poison;
  Rng rng(1);
  for (int64_t d : {1, 7, 64, 300}) {
    Tensor x = rnd({3, 5, d}, rng, DType::F64, 2.0);
    Tensor w = rnd({d}, rng, DType::F64);
    auto ref = ref_rmsnorm(x.to_vector(), w.to_vector(), d, 1e-5);
    EXPECT_LT(max_rel_diff(rmsnorm(x, w).to_vector(), ref), 1e-13) << d;
    EXPECT_LT(max_rel_diff(rmsnorm(x.to(DType::F32), w.to(DType::F32)).to_vector(), ref), 2e-6) << d;
  }
  // eps matters: a tiny row is not blown up to unit scale.
  Tensor x = Tensor::full({1, 4}, 1e-4, DType::F64), w = Tensor::full({4}, 1.0, DType::F64);
  auto ref = ref_rmsnorm(x.to_vector(), w.to_vector(), 4, 1e-2);
  EXPECT_LT(max_rel_diff(rmsnorm(x, w, 1e-2).to_vector(), ref), 1e-14);
  EXPECT_LT(rmsnorm(x, w, 1e-2).to_vector()[0], 2e-3);
}

TEST(Rmsnorm, GradcheckF64) {
  Rng rng(2);
  Tensor x = rnd({2, 3, 9}, rng), w = rnd({9}, rng);
  expect_gradcheck([](const std::vector<Tensor>& in) { return std::vector<Tensor>{rmsnorm(in[0], in[1])}; },
                   {x, w}, {true, true}, {"x", "w"});
  // One input at a time (the other does not require grad).
  expect_gradcheck([](const std::vector<Tensor>& in) { return std::vector<Tensor>{rmsnorm(in[0], in[1], 0.3)}; },
                   {x, w}, {true, false}, {"x", "w"});
  expect_gradcheck([](const std::vector<Tensor>& in) { return std::vector<Tensor>{rmsnorm(in[0], in[1])}; },
                   {x, w}, {false, true}, {"x", "w"});
  // Many rows: dw crosses several row chunks.
  Tensor xl = rnd({300, 4}, rng), wl = rnd({4}, rng);
  GradcheckOptions opt;
  opt.max_elements = 200;
  expect_gradcheck([](const std::vector<Tensor>& in) { return std::vector<Tensor>{rmsnorm(in[0], in[1])}; },
                   {xl, wl}, {true, true}, {"x", "w"}, opt);
}

TEST(Rmsnorm, BadShapesThrowNamingTheInput) {
  Tensor x = Tensor::zeros({2, 3, 8}, DType::F32);
  expect_throw_containing([&] { rmsnorm(x, Tensor::zeros({7}, DType::F32)); }, "rmsnorm: w must have shape [8]");
  EXPECT_THROW(rmsnorm(x, Tensor::zeros({8}, DType::F64)), std::runtime_error);
  EXPECT_THROW(rmsnorm(Tensor::zeros({2, 0}, DType::F32), Tensor::zeros({0}, DType::F32)), std::runtime_error);
}

TEST(Rmsnorm, CudaMatchesCpu) {
  ECHO_REQUIRE_GPU();
  Rng rng(3);
  for (int64_t d : {5, 64, 448, 1000}) {
    Tensor x = rnd({7, 37, d}, rng, DType::F32, 2.0), w = rnd({d}, rng, DType::F32);
    Tensor xc = x.to(Device::CUDA), wc = w.to(Device::CUDA);
    for (Tensor* t : {&x, &w, &xc, &wc}) t->set_requires_grad(true);
    Tensor y = rmsnorm(x, w), yc = rmsnorm(xc, wc);
    EXPECT_LT(max_rel_diff(yc.to(Device::CPU), y), 1e-5) << d;
    Tensor seed = rnd(y.shape(), rng, DType::F32);
    y.backward(seed);
    yc.backward(seed.to(Device::CUDA));
    EXPECT_LT(max_rel_diff(xc.grad().to(Device::CPU), x.grad()), 1e-5) << d;
    EXPECT_LT(max_rel_diff(wc.grad().to(Device::CPU), w.grad()), 1e-5) << d;
  }
}
