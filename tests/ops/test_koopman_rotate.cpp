#include "ops/koopman_rotate.h"

#include "test_util.h"

using namespace echo;
using namespace echo::testing;

namespace {
// Independent naive reference: per pair, the 2×2 block [[γ', ω'], [−ω', γ']]
// with (γ', ω') = (γ, ω) scaled back onto the unit circle when outside it.
std::vector<double> ref_rotate(const std::vector<double>& g, const std::vector<double>& gamma,
                               const std::vector<double>& omega) {
  const size_t half = gamma.size();
  std::vector<double> z(g.size());
  for (size_t r = 0; r < g.size() / (2 * half); ++r)
    for (size_t i = 0; i < half; ++i) {
      double ga = gamma[i], om = omega[i];
      const double norm = std::hypot(ga, om);
      if (norm > 1) {
        ga /= norm;
        om /= norm;
      }
      const double a = g[r * 2 * half + 2 * i], b = g[r * 2 * half + 2 * i + 1];
      z[r * 2 * half + 2 * i] = ga * a + om * b;
      z[r * 2 * half + 2 * i + 1] = -om * a + ga * b;
    }
  return z;
}
// γ, ω with the pair norms alternating inside (0.3..0.85) and outside (1.2..2) the
// unit disc, away from ρ = 1 where the clamp has a kink.
void make_params(Rng& rng, int64_t half, Tensor& gamma, Tensor& omega) {
  std::vector<double> ga(half), om(half);
  for (int64_t i = 0; i < half; ++i) {
    const double rho = i % 2 ? rng.uniform(1.2, 2.0) : rng.uniform(0.3, 0.85);
    const double angle = rng.uniform(-3.1, 3.1);
    ga[i] = rho * std::cos(angle);
    om[i] = rho * std::sin(angle);
  }
  gamma = Tensor::from_vector(ga, {half}, DType::F64);
  omega = Tensor::from_vector(om, {half}, DType::F64);
}
GradcheckFn rotate_fn() {
  return [](const std::vector<Tensor>& in) { return std::vector<Tensor>{koopman_rotate(in[0], in[1], in[2])}; };
}
}  // namespace

TEST(KoopmanRotate, MatchesNaiveLoopF64AndF32) {
  PoisonGuard poison;
  Rng rng(1);
  for (int64_t half : {1, 4, 37}) {
    Tensor g = rnd({3, 5, 2 * half}, rng), gamma, omega;
    make_params(rng, half, gamma, omega);
    auto ref = ref_rotate(g.to_vector(), gamma.to_vector(), omega.to_vector());
    EXPECT_LT(max_rel_diff(koopman_rotate(g, gamma, omega).to_vector(), ref), 1e-14) << half;
    EXPECT_LT(max_rel_diff(koopman_rotate(g.to(DType::F32), gamma.to(DType::F32), omega.to(DType::F32)).to_vector(),
                           ref),
              1e-6)
        << half;
  }
}

TEST(KoopmanRotate, ClampNeverExpandsAndHandlesZero) {
  // Outside the disc the block is a rotation (norm preserved); inside it shrinks;
  // γ = ω = 0 (ρ floored at 1e-8) gives exactly zero, not NaN.
  Tensor g = Tensor::from_vector({3, 4, 3, 4, 3, 4}, {1, 6}, DType::F64);
  Tensor gamma = Tensor::from_vector({3, 0.3, 0}, {3}, DType::F64);
  Tensor omega = Tensor::from_vector({4, 0.4, 0}, {3}, DType::F64);
  auto z = koopman_rotate(g, gamma, omega).to_vector();
  EXPECT_NEAR(std::hypot(z[0], z[1]), 5.0, 1e-12);
  EXPECT_NEAR(std::hypot(z[2], z[3]), 2.5, 1e-12);
  EXPECT_EQ(z[4], 0.0);
  EXPECT_EQ(z[5], 0.0);
}

TEST(KoopmanRotate, GradcheckF64) {
  Rng rng(2);
  Tensor g = rnd({2, 3, 8}, rng), gamma, omega;
  make_params(rng, 4, gamma, omega);
  expect_gradcheck(rotate_fn(), {g, gamma, omega}, {true, true, true}, {"g", "rot_gamma", "rot_omega"});
  expect_gradcheck(rotate_fn(), {g, gamma, omega}, {false, true, false}, {"g", "rot_gamma", "rot_omega"});
  expect_gradcheck(rotate_fn(), {g, gamma, omega}, {false, false, true}, {"g", "rot_gamma", "rot_omega"});
  expect_gradcheck(rotate_fn(), {g, gamma, omega}, {true, false, false}, {"g", "rot_gamma", "rot_omega"});
  // Many rows: the parameter gradients cross several row chunks.
  Tensor gl = rnd({150, 4}, rng), gaml, oml;
  make_params(rng, 2, gaml, oml);
  GradcheckOptions opt;
  opt.max_elements = 100;
  expect_gradcheck(rotate_fn(), {gl, gaml, oml}, {true, true, true}, {"g", "rot_gamma", "rot_omega"}, opt);
}

TEST(KoopmanRotate, BadShapesThrowNamingTheInput) {
  Tensor p3 = Tensor::zeros({3}, DType::F32), p4 = Tensor::zeros({4}, DType::F32);
  expect_throw_containing([&] { koopman_rotate(Tensor::zeros({2, 7}, DType::F32), p3, p3); },
                          "koopman_rotate: g must have");
  expect_throw_containing([&] { koopman_rotate(Tensor::zeros({2, 6}, DType::F32), p4, p3); },
                          "koopman_rotate: rot_gamma must have shape [3]");
  expect_throw_containing([&] { koopman_rotate(Tensor::zeros({2, 6}, DType::F32), p3, p4); },
                          "koopman_rotate: rot_omega must have shape [3]");
  expect_throw_containing(
      [&] { koopman_rotate(Tensor::zeros({2, 6}, DType::F32), p3, Tensor::zeros({3}, DType::F64)); },
      "koopman_rotate: mixed tensors");
}

TEST(KoopmanRotate, CudaMatchesCpu) {
  ECHO_REQUIRE_GPU();
  Rng rng(3);
  // 600 rows (10 chunks of the dγ/dω sums); half = 300 > 256 pairs (a second
  // block column of the partials grid) over 70 rows.
  for (const Shape& shape : {Shape{4, 150, 2 * 96}, Shape{70, 2 * 300}}) {
    const int64_t half = shape.back() / 2;
    Tensor g = rnd(shape, rng, DType::F32), gamma, omega;
    make_params(rng, half, gamma, omega);
    gamma = gamma.to(DType::F32);
    omega = omega.to(DType::F32);
    Tensor gc = g.to(Device::CUDA), gamc = gamma.to(Device::CUDA), omc = omega.to(Device::CUDA);
    for (Tensor* t : {&g, &gamma, &omega, &gc, &gamc, &omc}) t->set_requires_grad(true);
    Tensor z = koopman_rotate(g, gamma, omega), zc = koopman_rotate(gc, gamc, omc);
    EXPECT_LT(max_rel_diff(zc.to(Device::CPU), z), 1e-5) << shape_str(shape);
    Tensor seed = rnd(z.shape(), rng, DType::F32);
    z.backward(seed);
    zc.backward(seed.to(Device::CUDA));
    EXPECT_LT(max_rel_diff(gc.grad().to(Device::CPU), g.grad()), 1e-5) << shape_str(shape);
    EXPECT_LT(max_rel_diff(gamc.grad().to(Device::CPU), gamma.grad()), 1e-5) << shape_str(shape);
    EXPECT_LT(max_rel_diff(omc.grad().to(Device::CPU), omega.grad()), 1e-5) << shape_str(shape);
  }
}
