// linear_cross_entropy: the chunked LM head + loss against the unfused pair
// (linear, then cross_entropy), in f64 and f32, loss and both gradients, for
// chunk sizes that divide the rows, do not, and exceed them; float64 finite
// differences; poisoned buffers; ignored targets.
#include "ops/linear_cross_entropy.h"

#include "ops/cross_entropy.h"
#include "ops/matmul.h"
#include "test_util.h"

using namespace echo;
using namespace echo::testing;

namespace {

Tensor targets_with_ignored(int64_t b, int64_t T, int64_t V, Rng& rng) {
  std::vector<int64_t> t(static_cast<size_t>(b * T));
  for (auto& e : t) e = rng.uniform() < 0.2 ? -100 : rng.randint(0, V);
  return Tensor::from_ints(t, {b, T}, DType::I64);
}

struct Grads {
  double loss;
  Tensor gx, gw;
};

Grads run(bool fused, const Tensor& x0, const Tensor& w0, const Tensor& t, int64_t chunk) {
  Tensor x = x0.detach().clone().detach(), w = w0.detach().clone().detach();
  x.set_requires_grad(true);
  w.set_requires_grad(true);
  Tensor loss = fused ? linear_cross_entropy(x, w, t, -100, chunk) : cross_entropy(linear(x, w), t);
  loss.backward();
  return {loss.item(), x.grad(), w.grad()};
}

}  // namespace

TEST(LinearCrossEntropy, EqualsTheUnfusedPathForEveryChunkSize) {
  PoisonGuard poison;
  for (DType dt : {DType::F64, DType::F32}) {
    Rng rng(7);
    const int64_t b = 3, T = 7, d = 5, V = 11;
    Tensor x = rnd({b, T, d}, rng, dt), w = rnd({V, d}, rng, dt, 0.7);
    Tensor t = targets_with_ignored(b, T, V, rng);
    Grads ref = run(false, x, w, t, 0);
    const double tol = dt == DType::F64 ? 1e-13 : 2e-6;
    for (int64_t chunk : {1, 4, 7, 21, 100, 0}) {
      Grads got = run(true, x, w, t, chunk);
      EXPECT_NEAR(got.loss, ref.loss, tol * std::fabs(ref.loss)) << dtype_name(dt) << " chunk " << chunk;
      EXPECT_LT(max_rel_diff(got.gx, ref.gx), tol) << dtype_name(dt) << " chunk " << chunk;
      EXPECT_LT(max_rel_diff(got.gw, ref.gw), tol) << dtype_name(dt) << " chunk " << chunk;
    }
  }
}

TEST(LinearCrossEntropy, FiniteDifferenceGradientsInFloat64) {
  Rng rng(3);
  Tensor t = targets_with_ignored(2, 5, 9, rng);
  for (int64_t chunk : {1, 3, 0}) {
    expect_gradcheck(
        [t, chunk](const std::vector<Tensor>& in) {
          return std::vector<Tensor>{linear_cross_entropy(in[0], in[1], t, -100, chunk)};
        },
        {rnd({2, 5, 4}, rng), rnd({9, 4}, rng)}, {true, true}, {"x", "weight"});
  }
}

TEST(LinearCrossEntropy, OnlyTheRequestedGradientAndIgnoredRowsGiveZero) {
  PoisonGuard poison;
  Rng rng(5);
  Tensor x = rnd({4, 3}, rng), w = rnd({6, 3}, rng);
  w.set_requires_grad(true);  // x is data: no gradient for it
  Tensor t = Tensor::from_ints({2, -100, 5, -100}, {4}, DType::I64);
  Tensor loss = linear_cross_entropy(x, w, t, -100, 1);
  loss.backward();
  EXPECT_FALSE(x.grad().defined());
  ASSERT_TRUE(w.grad().defined());
  Tensor w2 = w.detach().clone().detach();
  w2.set_requires_grad(true);
  Tensor ref = cross_entropy(linear(x, w2), t);
  ref.backward();
  EXPECT_NEAR(loss.item(), ref.item(), 1e-13);
  EXPECT_LT(max_rel_diff(w.grad(), w2.grad()), 1e-13);
  // Every target ignored: loss 0 and zero gradients, not NaN.
  Tensor none = Tensor::from_ints({-100, -100, -100, -100}, {4}, DType::I64);
  Tensor x3 = rnd({4, 3}, rng);
  x3.set_requires_grad(true);
  Tensor l0 = linear_cross_entropy(x3, w.detach(), none);
  EXPECT_EQ(l0.item(), 0.0);
  l0.backward();
  for (double g : x3.grad().to_vector()) EXPECT_EQ(g, 0.0);
}

TEST(LinearCrossEntropy, BadArgumentsAreClearErrors) {
  Tensor x = Tensor::zeros({2, 4}), w = Tensor::zeros({5, 4});
  auto err = [](const std::function<void()>& f) {
    try {
      f();
    } catch (const std::exception& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(err([&] { linear_cross_entropy(x, Tensor::zeros({5, 3}), Tensor::from_ints({0, 1}, {2})); })
                .find("input width"),
            std::string::npos);
  EXPECT_NE(err([&] { linear_cross_entropy(x, w, Tensor::from_ints({0, 7}, {2})); }).find("target 7 at position 1"),
            std::string::npos);
  EXPECT_NE(err([&] { linear_cross_entropy(x, w, Tensor::from_ints({0, 1, 2}, {3})); }).find("targets must have shape"),
            std::string::npos);
}
