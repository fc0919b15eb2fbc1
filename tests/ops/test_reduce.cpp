#include "ops/reduce.h"

#include <functional>

#include "autograd/parallel.h"
#include "test_util.h"

using namespace echo;
using namespace echo::testing;

namespace {
// Naive sums in long double (the reference is more exact than either backend).
double naive_sum(const std::vector<double>& v, size_t begin, size_t end) {
  long double acc = 0;
  for (size_t i = begin; i < end; ++i) acc += v[i];
  return static_cast<double>(acc);
}
}  // namespace

TEST(Reduce, MatchesNaiveLoopF64AndF32) {
  PoisonGuard poison;
  Rng rng(1);
  // 10000 elements: several CPU chunks of 4096, the last one partial.
  for (const Shape& s : {Shape{7}, Shape{3, 5, 11}, Shape{20, 500}}) {
    Tensor x = rand_uniform(s, rng, 0.5, 1.5, DType::F64);  // no cancellation: f32 checks stay tight
    auto v = x.to_vector();
    const double total = naive_sum(v, 0, v.size());
    EXPECT_LT(max_rel_diff(sum(x).to_vector(), {total}), 1e-13) << shape_str(s);
    EXPECT_LT(max_rel_diff(mean(x).to_vector(), {total / v.size()}), 1e-13);
    EXPECT_LT(max_rel_diff(sum(x.to(DType::F32)).to_vector(), {total}), 1e-5);
    EXPECT_LT(max_rel_diff(mean(x.to(DType::F32)).to_vector(), {total / v.size()}), 1e-5);
    const size_t cols = s.back(), rows = v.size() / cols;
    std::vector<double> rowsum(rows);
    for (size_t r = 0; r < rows; ++r) rowsum[r] = naive_sum(v, r * cols, (r + 1) * cols);
    Tensor y = sum_last(x);
    Shape expected(s.begin(), s.end() - 1);
    if (expected.empty()) expected = {1};
    EXPECT_EQ(y.shape(), expected);
    EXPECT_LT(max_rel_diff(y.to_vector(), rowsum), 1e-14);
    EXPECT_LT(max_rel_diff(sum_last(x.to(DType::F32)).to_vector(), rowsum), 1e-5);
  }
}

TEST(Reduce, SumIsIndependentOfThreadCount) {
  Rng rng(2);
  Tensor x = rnd({100000}, rng, DType::F32);
  const int before = num_threads();
  set_num_threads(1);
  double one = sum(x).item();
  set_num_threads(2);
  double two = sum(x).item();
  set_num_threads(before);
  EXPECT_EQ(one, two);
}

TEST(Reduce, EmptyAndErrors) {
  EXPECT_EQ(sum(Tensor::zeros({0, 3})).item(), 0.0);
  expect_throw_containing([] { mean(Tensor::zeros({0})); }, "mean: mean of an empty tensor");
  expect_throw_containing([] { sum(Tensor::zeros({3}, DType::I64)); }, "sum: expected f32 or f64");
  expect_throw_containing([] { sum_last(Tensor()); }, "sum_last: input must be a defined tensor");
}

TEST(Reduce, GradcheckF64) {
  Rng rng(3);
  Tensor x = rnd({4, 3, 5}, rng);
  expect_gradcheck([](const std::vector<Tensor>& in) { return std::vector<Tensor>{sum(in[0])}; }, {x}, {true}, {"sum.x"});
  expect_gradcheck([](const std::vector<Tensor>& in) { return std::vector<Tensor>{mean(in[0])}; }, {x}, {true}, {"mean.x"});
  expect_gradcheck([](const std::vector<Tensor>& in) { return std::vector<Tensor>{sum_last(in[0])}; }, {x}, {true},
                   {"sum_last.x"});
  Tensor v = rnd({6}, rng);
  expect_gradcheck([](const std::vector<Tensor>& in) { return std::vector<Tensor>{sum_last(in[0])}; }, {v}, {true},
                   {"sum_last(vector).x"});
}

TEST(Reduce, CudaMatchesCpu) {
  ECHO_REQUIRE_GPU();
  Rng rng(4);
  // 3·10⁶ elements: the first pass uses its maximum of 1024 partials.
  for (const Shape& s : {Shape{5}, Shape{37, 1000}, Shape{3000, 1000}, Shape{64, 3, 4097}}) {
    Tensor x = rand_uniform(s, rng, 0.5, 1.5, DType::F32);
    using Fn = Tensor (*)(const Tensor&);
    for (Fn fn : {Fn(sum), Fn(mean), Fn(sum_last)}) {
      Tensor xa = x.clone().set_requires_grad(true);
      Tensor xc = x.to(Device::CUDA).set_requires_grad(true);
      Tensor y = fn(xa), yc = fn(xc);
      EXPECT_LT(max_rel_diff(yc.to(Device::CPU), y), 1e-5) << shape_str(s);
      Tensor seed = rnd(y.shape(), rng, DType::F32);
      y.backward(seed);
      yc.backward(seed.to(Device::CUDA));
      EXPECT_LT(max_rel_diff(xc.grad().to(Device::CPU), xa.grad()), 1e-6) << shape_str(s);
    }
  }
}
