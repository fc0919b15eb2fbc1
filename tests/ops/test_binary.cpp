#include "ops/binary.h"

#include <functional>

#include "autograd/parallel.h"
#include "test_util.h"

using namespace echo;
using namespace echo::testing;

namespace {
using BinaryFn = Tensor (*)(const Tensor&, const Tensor&);
struct Case { const char* name; BinaryFn fn; double (*ref)(double, double); };
const Case kCases[] = {
    {"add", echo::add, [](double a, double b) { return a + b; }},
    {"sub", echo::sub, [](double a, double b) { return a - b; }},
    {"mul", echo::mul, [](double a, double b) { return a * b; }},
    {"div", echo::div, [](double a, double b) { return a / b; }},
};

// b values kept away from 0 so div is well conditioned.
Tensor away_from_zero(const Shape& s, Rng& rng) {
  Tensor t = rnd(s, rng);
  auto v = t.to_vector();
  for (auto& e : v) e = (e >= 0 ? 0.5 : -0.5) + e;
  return Tensor::from_vector(v, s, DType::F64);
}

// The broadcast pairs the tests use: equal shapes, a suffix of rank 2, of rank 1,
// and one with more than 64 rows (several reduction chunks for db).
const std::vector<std::pair<Shape, Shape>> kShapes = {
    {{3, 4, 5}, {3, 4, 5}}, {{3, 4, 5}, {4, 5}}, {{3, 4, 5}, {5}}, {{150, 3}, {3}}};

}  // namespace

TEST(Binary, MatchesNaiveLoopF64AndF32) {
  PoisonGuard poison;
  Rng rng(1);
  for (const auto& c : kCases)
    for (const auto& [sa, sb] : kShapes) {
      Tensor a = rnd(sa, rng), b = away_from_zero(sb, rng);
      auto av = a.to_vector(), bv = b.to_vector();
      std::vector<double> ref(av.size());
      for (size_t i = 0; i < av.size(); ++i) ref[i] = c.ref(av[i], bv[i % bv.size()]);
      EXPECT_LT(max_rel_diff(c.fn(a, b).to_vector(), ref), 1e-15) << c.name << " " << shape_str(sa);
      EXPECT_LT(max_rel_diff(c.fn(a.to(DType::F32), b.to(DType::F32)).to_vector(), ref), 1e-6) << c.name;
    }
}

TEST(Binary, BroadcastGradientMatchesNaiveSum) {
  // db_j = Σ_r dy_{r,j} ∂f/∂b, summed by hand; several chunks (300 rows).
  PoisonGuard poison;
  Rng rng(2);
  const int64_t rows = 300, m = 7;
  for (const auto& c : kCases) {
    Tensor a = rnd({rows, m}, rng), b = away_from_zero({m}, rng), dy = rnd({rows, m}, rng);
    a.set_requires_grad(true);
    b.set_requires_grad(true);
    c.fn(a, b).backward(dy);
    auto av = a.to_vector(), bv = b.to_vector(), dv = dy.to_vector();
    std::vector<double> da(rows * m), db(m, 0.0);
    const std::string name = c.name;
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t j = 0; j < m; ++j) {
        const int64_t i = r * m + j;
        double fa = name == "mul" ? bv[j] : name == "div" ? 1 / bv[j] : 1;
        double fb = name == "add" ? 1 : name == "sub" ? -1 : name == "mul" ? av[i] : -av[i] / (bv[j] * bv[j]);
        da[i] = dv[i] * fa;
        db[j] += dv[i] * fb;
      }
    EXPECT_LT(max_rel_diff(a.grad().to_vector(), da), 1e-14) << c.name;
    EXPECT_LT(max_rel_diff(b.grad().to_vector(), db), 1e-12) << c.name;
  }
}

TEST(Binary, BroadcastGradientIsIndependentOfThreadCount) {
  Rng rng(3);
  Tensor a = rnd({1000, 5}, rng, DType::F32), b = rnd({5}, rng, DType::F32), dy = rnd({1000, 5}, rng, DType::F32);
  auto grad_b = [&](int threads) {
    set_num_threads(threads);
    Tensor bb = b.clone().set_requires_grad(true);
    mul(a, bb).backward(dy);
    return bb.grad().to_vector();
  };
  const int before = num_threads();
  auto one = grad_b(1), two = grad_b(2);
  set_num_threads(before);
  EXPECT_EQ(one, two);
}

TEST(Binary, GradcheckF64) {
  Rng rng(4);
  for (const auto& c : kCases)
    for (const auto& [sa, sb] : kShapes) {
      Tensor a = rnd(sa, rng), b = away_from_zero(sb, rng);
      auto fn = c.fn;
      expect_gradcheck([fn](const std::vector<Tensor>& in) { return std::vector<Tensor>{fn(in[0], in[1])}; },
                       {a, b}, {true, true}, {std::string(c.name) + ".a", std::string(c.name) + ".b"});
    }
}

TEST(Binary, GradcheckSameTensorTwice) {
  // mul(x, x): both gradient buffers are x's; dx must get 2·x·dy.
  Rng rng(5);
  Tensor x = away_from_zero({4, 6}, rng);
  for (const auto& c : kCases) {
    auto fn = c.fn;
    expect_gradcheck([fn](const std::vector<Tensor>& in) { return std::vector<Tensor>{fn(in[0], in[0])}; },
                     {x}, {true}, {std::string(c.name) + "(x,x).x"});
  }
}

// Fresh gradient buffers (autograd/tape.h): the first contribution to x's
// buffer is written into an unzeroed (here NaN-poisoned) buffer, the second is
// added; a buffer given to one op twice (mul(x, x)) starts from zeros.
TEST(Binary, FirstGradientContributionWritesLaterOnesAdd) {
  PoisonGuard poison;
  Rng rng(6);
  Tensor x = randn({3, 5}, rng, DType::F64).set_requires_grad(true);
  Tensor y = add(scale(x, 2.0), mul(x, x));  // dy/dx = 2 + 2x
  run_backward({y}, {Tensor::full(y.shape(), 1.0, DType::F64)});
  const std::vector<double> xs = x.to_vector(), g = x.grad().to_vector();
  for (size_t i = 0; i < xs.size(); ++i) EXPECT_DOUBLE_EQ(g[i], 2.0 + 2.0 * xs[i]) << i;
  // A buffer that exists already (a second backward) is added to, never overwritten.
  Tensor y2 = scale(x, 3.0);
  run_backward({y2}, {Tensor::full(y2.shape(), 1.0, DType::F64)});
  const std::vector<double> g2 = x.grad().to_vector();
  for (size_t i = 0; i < xs.size(); ++i) EXPECT_DOUBLE_EQ(g2[i], 5.0 + 2.0 * xs[i]) << i;
}

TEST(Binary, ScaleAndAddScalar) {
  PoisonGuard poison;
  Rng rng(6);
  Tensor x = rnd({5, 7}, rng);
  auto xv = x.to_vector();
  std::vector<double> rs(xv.size()), ra(xv.size());
  for (size_t i = 0; i < xv.size(); ++i) { rs[i] = -2.5 * xv[i]; ra[i] = xv[i] + 0.75; }
  EXPECT_LT(max_rel_diff(scale(x, -2.5).to_vector(), rs), 1e-15);
  EXPECT_LT(max_rel_diff(add_scalar(x, 0.75).to_vector(), ra), 1e-15);
  EXPECT_LT(max_rel_diff(scale(x.to(DType::F32), -2.5).to_vector(), rs), 1e-6);
  EXPECT_LT(max_rel_diff(add_scalar(x.to(DType::F32), 0.75).to_vector(), ra), 1e-6);
  expect_gradcheck([](const std::vector<Tensor>& in) { return std::vector<Tensor>{scale(in[0], -2.5)}; },
                   {x}, {true}, {"scale.x"});
  expect_gradcheck([](const std::vector<Tensor>& in) { return std::vector<Tensor>{add_scalar(in[0], 0.75)}; },
                   {x}, {true}, {"add_scalar.x"});
}

TEST(Binary, BadShapesAndDtypesAreClearErrors) {
  Tensor a = Tensor::zeros({2, 3}), b = Tensor::zeros({2}), c = Tensor::zeros({3}, DType::F64);
  expect_throw_containing([&] { add(a, b); }, "add: b must have the shape of a or a suffix of it, got a f32[2,3] cpu and b f32[2] cpu");
  expect_throw_containing([&] { mul(b, a); }, "mul: b must have the shape of a or a suffix");
  expect_throw_containing([&] { div(a, c); }, "div: mixed tensors");
  expect_throw_containing([&] { sub(Tensor::zeros({2, 3}, DType::I32), a); }, "sub: expected f32 or f64");
}

TEST(Binary, CudaMatchesCpu) {
  ECHO_REQUIRE_GPU();
  Rng rng(7);
  const std::vector<std::pair<Shape, Shape>> shapes = {{{64, 33, 17}, {64, 33, 17}}, {{500, 130}, {130}},
                                                       {{8, 300, 12}, {300, 12}}};
  for (const auto& c : kCases)
    for (const auto& [sa, sb] : shapes) {
      Tensor a = rnd(sa, rng, DType::F32), b = away_from_zero(sb, rng).to(DType::F32);
      Tensor ac = a.to(Device::CUDA), bc = b.to(Device::CUDA);
      for (Tensor* t : {&a, &b, &ac, &bc}) t->set_requires_grad(true);
      Tensor y = c.fn(a, b), yc = c.fn(ac, bc);
      EXPECT_LT(max_rel_diff(yc.to(Device::CPU), y), 1e-5) << c.name;
      Tensor seed = rnd(sa, rng, DType::F32);
      y.backward(seed);
      yc.backward(seed.to(Device::CUDA));
      EXPECT_LT(max_rel_diff(ac.grad().to(Device::CPU), a.grad()), 1e-5) << c.name;
      EXPECT_LT(max_rel_diff(bc.grad().to(Device::CPU), b.grad()), 1e-5) << c.name;
    }
  Tensor x = rnd({300, 7}, rng, DType::F32), xc = x.to(Device::CUDA);
  x.set_requires_grad(true);
  xc.set_requires_grad(true);
  Tensor y = add_scalar(scale(x, 1.5), -0.25), yc = add_scalar(scale(xc, 1.5), -0.25);
  EXPECT_LT(max_rel_diff(yc.to(Device::CPU), y), 1e-6);
  Tensor seed = rnd({300, 7}, rng, DType::F32);
  y.backward(seed);
  yc.backward(seed.to(Device::CUDA));
  EXPECT_LT(max_rel_diff(xc.grad().to(Device::CPU), x.grad()), 1e-6);
}
