#include "ops/cross_entropy.h"

#include <functional>

#include "test_util.h"

using namespace echo;
using namespace echo::testing;

namespace {
// Targets in [0, V) with roughly a quarter set to -100.
std::vector<int64_t> random_targets(int64_t n, int64_t V, Rng& rng) {
  std::vector<int64_t> t(n);
  for (auto& e : t) e = rng.uniform() < 0.25 ? -100 : rng.randint(0, V);
  return t;
}
// Textbook formula in long double: log Σ exp(x) − x_t without max-subtraction
// (fine for the moderate logits used here), averaged over scored rows.
double naive_loss(const std::vector<double>& x, const std::vector<int64_t>& t, int64_t V) {
  long double total = 0;
  int64_t n = 0;
  for (size_t r = 0; r < t.size(); ++r) {
    if (t[r] == -100) continue;
    long double s = 0;
    for (int64_t j = 0; j < V; ++j) s += std::exp(static_cast<long double>(x[r * V + j]));
    total += std::log(s) - x[r * V + t[r]];
    ++n;
  }
  return n ? static_cast<double>(total / n) : 0.0;
}
}  // namespace

TEST(CrossEntropy, MatchesNaiveFormulaF64AndF32) {
  PoisonGuard poison;
  Rng rng(1);
  const int64_t V = 11;
  for (DType tt : {DType::I32, DType::I64}) {
    auto tv = random_targets(2 * 9, V, rng);
    tv[0] = 3;  // at least one scored row
    Tensor logits = rnd({2, 9, V}, rng, DType::F64, 3.0), targets = Tensor::from_ints(tv, {2, 9}, tt);
    const double ref = naive_loss(logits.to_vector(), tv, V);
    EXPECT_LT(max_rel_diff(cross_entropy(logits, targets).to_vector(), {ref}), 1e-13);
    EXPECT_LT(max_rel_diff(cross_entropy(logits.to(DType::F32), targets).to_vector(), {ref}), 1e-6);
  }
}

TEST(CrossEntropy, GradientMatchesNaiveSoftmaxFormula) {
  PoisonGuard poison;
  Rng rng(2);
  const int64_t rows = 6, V = 5;
  std::vector<int64_t> tv = {1, -100, 4, 0, -100, 4};
  Tensor logits = rnd({rows, V}, rng, DType::F64, 2.0);
  logits.set_requires_grad(true);
  cross_entropy(logits, Tensor::from_ints(tv, {rows})).backward(Tensor::scalar(0.7, DType::F64));
  auto x = logits.detach().to_vector();
  std::vector<double> ref(rows * V, 0.0);
  for (int64_t r = 0; r < rows; ++r) {
    if (tv[r] == -100) continue;
    double s = 0;
    for (int64_t j = 0; j < V; ++j) s += std::exp(x[r * V + j]);
    for (int64_t j = 0; j < V; ++j) ref[r * V + j] = 0.7 / 4 * (std::exp(x[r * V + j]) / s - (j == tv[r]));
  }
  EXPECT_LT(max_rel_diff(logits.grad().to_vector(), ref), 1e-14);
}

TEST(CrossEntropy, StableForHugeLogits) {
  // Shifting all logits by 1e4 leaves the loss unchanged; a naive exp would overflow.
  Rng rng(3);
  Tensor x = rnd({4, 7}, rng);
  Tensor targets = Tensor::from_ints({0, 6, 2, 3}, {4});
  auto xv = x.to_vector();
  for (auto& e : xv) e += 1e4;
  for (DType dt : {DType::F64, DType::F32}) {
    const double base = cross_entropy(x.to(dt), targets).item();
    const double shifted = cross_entropy(Tensor::from_vector(xv, {4, 7}, dt), targets).item();
    EXPECT_TRUE(std::isfinite(shifted));
    EXPECT_NEAR(shifted, base, dt == DType::F64 ? 1e-9 : 2e-3);  // f32 spacing at 1e4 is ~1e-3
  }
}

TEST(CrossEntropy, NothingScoredGivesZeroLossAndGradient) {
  Tensor logits = Tensor::full({3, 4}, 1.0, DType::F64);
  logits.set_requires_grad(true);
  Tensor loss = cross_entropy(logits, Tensor::from_ints({-100, -100, -100}, {3}));
  EXPECT_EQ(loss.item(), 0.0);
  loss.backward();
  EXPECT_EQ(logits.grad().to_vector(), std::vector<double>(12, 0.0));
  // A custom ignore index, and a vector of logits (one position, targets [1]).
  EXPECT_EQ(cross_entropy(Tensor::zeros({2, 4}), Tensor::from_ints({7, 7}, {2}), 7).item(), 0.0);
  EXPECT_NEAR(cross_entropy(Tensor::zeros({4}, DType::F64), Tensor::from_ints({2}, {1})).item(), std::log(4.0), 1e-15);
}

TEST(CrossEntropy, GradcheckF64) {
  Rng rng(4);
  for (DType tt : {DType::I32, DType::I64}) {
    Tensor targets = Tensor::from_ints({2, -100, 0, 5, 5, -100, 1, 3}, {2, 4}, tt);
    expect_gradcheck([targets](const std::vector<Tensor>& in) { return std::vector<Tensor>{cross_entropy(in[0], targets)}; },
                     {rnd({2, 4, 6}, rng, DType::F64, 2.0)}, {true}, {"cross_entropy.logits"});
  }
}

TEST(CrossEntropy, BadArgumentsAreClearErrors) {
  Tensor logits = Tensor::zeros({2, 3, 10});
  expect_throw_containing([&] { cross_entropy(logits, Tensor::from_ints({0, 1, 10, 2, 3, 4}, {2, 3})); },
                          "cross_entropy: target 10 at position 2 is out of range for V=10 (and is not ignore_index=-100)");
  expect_throw_containing([&] { cross_entropy(logits, Tensor::from_ints({0, 1, -1, 2, 3, 4}, {2, 3})); },
                          "cross_entropy: target -1 at position 2 is out of range for V=10");
  expect_throw_containing([&] { cross_entropy(logits, Tensor::from_ints({0, 1, 2}, {3})); },
                          "cross_entropy: targets must have shape [2,3] (logits' shape without the last dim), got i32[3] cpu");
  expect_throw_containing([&] { cross_entropy(logits, Tensor::zeros({2, 3})); }, "cross_entropy: targets must be i32 or i64");
  expect_throw_containing([&] { cross_entropy(Tensor::zeros({2, 0}), Tensor::from_ints({0, 0}, {2})); },
                          "cross_entropy: logits must have rank >= 1 and a non-empty last dim");
}

TEST(CrossEntropy, CudaMatchesCpu) {
  ECHO_REQUIRE_GPU();
  Rng rng(5);
  for (DType tt : {DType::I32, DType::I64})
    for (bool targets_on_gpu : {false, true})
      for (int64_t V : {7, 256, 5000}) {
        const int64_t rows = 300;
        Tensor targets = Tensor::from_ints(random_targets(rows, V, rng), {3, 100}, tt);
        Tensor x = rnd({3, 100, V}, rng, DType::F32, 3.0);
        Tensor xc = x.to(Device::CUDA).set_requires_grad(true);
        x.set_requires_grad(true);
        Tensor loss = cross_entropy(x, targets);
        Tensor loss_c = cross_entropy(xc, targets_on_gpu ? targets.to(Device::CUDA) : targets);
        EXPECT_LT(max_rel_diff(loss_c.to(Device::CPU), loss), 1e-5) << V;
        loss.backward(Tensor::scalar(1.3));
        loss_c.backward(Tensor::scalar(1.3, DType::F32, Device::CUDA));
        EXPECT_LT(max_rel_diff(xc.grad().to(Device::CPU), x.grad()), 1e-5) << V;
      }
  // Every row ignored: loss 0 (not 0/0) and no gradient on the GPU either.
  {
    Tensor xc = rnd({4, 9}, rng, DType::F32).to(Device::CUDA).set_requires_grad(true);
    Tensor loss = cross_entropy(xc, Tensor::from_ints({-100, -100, -100, -100}, {4}, DType::I64, Device::CUDA));
    EXPECT_EQ(loss.item(), 0.0);
    loss.backward();
    EXPECT_EQ(xc.grad().to_vector(), std::vector<double>(36, 0.0));
  }
  expect_throw_containing([] { cross_entropy(Tensor::zeros({2, 5}, DType::F32, Device::CUDA),
                                             Tensor::from_ints({1, 5}, {2}, DType::I32, Device::CUDA)); },
                          "cross_entropy: target 5 at position 1 is out of range for V=5");
}
