// The vectorised f32 exponential loops (ops/vector_math.h) against the same
// formulas in double with std::exp. Tolerance: 4e-7 relative (a few f32 ulp:
// exp_poly is within 1.3 ulp of exp, and each formula rounds two or three more
// times), 1e-5 for a 1003-term sum, and the limits: σ and silu saturate
// exactly, e^(−∞-ish) is 0.
#include "ops/vector_math.h"

#include <cmath>
#include <vector>

#include "test_util.h"

namespace echo {
namespace {

std::vector<float> test_points() {
  std::vector<float> x;
  for (int i = -2000; i <= 2000; ++i) x.push_back(0.0173f * static_cast<float>(i));  // ±34.6, through 0
  for (float v : {-200.f, -104.f, -88.5f, -87.f, -20.f, 20.f, 87.f, 88.f, 200.f}) x.push_back(v);
  return x;
}

double rel_err(double got, double want) {
  const double scale = std::max(std::abs(want), 1e-30);
  return std::abs(got - want) / scale;
}
double sigmoid_ref(double z) { return 1.0 / (1.0 + std::exp(-z)); }

TEST(VectorMath, SigmoidSiluExpMatchDouble) {
  const std::vector<float> x = test_points();
  const int64_t n = static_cast<int64_t>(x.size());
  std::vector<float> s(n, NAN), y(n, NAN), e(n, NAN);
  vmath::sigmoid(x.data(), s.data(), n);
  vmath::silu(x.data(), y.data(), n);
  vmath::exp(x.data(), e.data(), n);
  for (int64_t i = 0; i < n; ++i) {
    const double xi = x[i], sr = sigmoid_ref(xi);
    EXPECT_LT(rel_err(s[i], sr), 4e-7) << "sigmoid(" << xi << ")";
    // silu below −88: f32 cannot hold e^88, the result is −0 or a denormal-size value.
    if (xi > -80) EXPECT_LT(rel_err(y[i], xi * sr), 4e-7) << "silu(" << xi << ")";
    else EXPECT_LE(std::abs(y[i]), 1e-30) << "silu(" << xi << ")";
    if (xi < -87.5) EXPECT_EQ(e[i], 0.0f) << "exp(" << xi << ")";
    else if (xi > 88.5) EXPECT_TRUE(std::isinf(e[i])) << "exp(" << xi << ")";
    else EXPECT_LT(rel_err(e[i], std::exp(xi)), 4e-7) << "exp(" << xi << ")";
  }
}

TEST(VectorMath, SiluBackwardWritesOrAdds) {
  const std::vector<float> x = test_points();
  const int64_t n = static_cast<int64_t>(x.size());
  std::vector<float> dy(n), dx_write(n, NAN), dx_add(n, 0.5f);
  for (int64_t i = 0; i < n; ++i) dy[i] = 0.25f + 0.001f * static_cast<float>(i % 97);
  vmath::silu_backward(x.data(), dy.data(), dx_write.data(), n, /*add=*/false);
  vmath::silu_backward(x.data(), dy.data(), dx_add.data(), n, /*add=*/true);
  for (int64_t i = 0; i < n; ++i) {
    const double xi = x[i], s = sigmoid_ref(xi), want = dy[i] * s * (1 + xi * (1 - s));
    EXPECT_LT(std::abs(dx_write[i] - want), 4e-7 * std::max(1.0, std::abs(want))) << "x=" << xi;
    // The same term, added (the AVX2 clone may fuse the multiply-add: one rounding less).
    EXPECT_NEAR(dx_add[i], 0.5 + dx_write[i], 1.2e-7 * std::max(1.0, std::abs(0.5 + dx_write[i]))) << "x=" << xi;
  }
}

TEST(VectorMath, SoftmaxRowExponentials) {
  std::vector<float> z(1003);
  for (size_t j = 0; j < z.size(); ++j) z[j] = std::sin(0.37f * static_cast<float>(j)) * 9.0f;
  const float m = 9.0f;
  double want = 0;
  for (float v : z) want += std::exp(double(v) - m);
  const float got = vmath::sum_exp_shifted(z.data(), static_cast<int64_t>(z.size()), m);
  // A sum of 1003 f32 terms (in SIMD lanes, their number depending on the
  // clone): its rounding error grows with the count; measured 1.2e-6 on the
  // baseline clone, 1e-5 leaves room and is still far below what a wrong term shows.
  EXPECT_LT(rel_err(got, want), 1e-5);
  const float lse = m + std::log(got), scale = 0.125f;
  std::vector<float> p = z;
  vmath::exp_shifted_scaled(p.data(), static_cast<int64_t>(p.size()), lse, scale);
  double total = 0;
  for (size_t j = 0; j < z.size(); ++j) {
    // z − lse rounds in f32 (|z − lse| up to ~25: 1e-6 absolute), which e^· turns into relative error.
    EXPECT_LT(rel_err(p[j], scale * std::exp(double(z[j]) - lse)), 3e-6) << j;
    total += p[j];
  }
  EXPECT_NEAR(total, scale, 1e-6);  // a softmax row, scaled
}

}  // namespace
}  // namespace echo
