#include "ops/shape_ops.h"

#include <functional>

#include "test_util.h"

using namespace echo;
using namespace echo::testing;

namespace {
// Row-major strides and multi-index helpers for the naive references.
std::vector<int64_t> strides_of(const Shape& s) {
  std::vector<int64_t> st(s.size(), 1);
  for (int i = (int)s.size() - 2; i >= 0; --i) st[i] = st[i + 1] * s[i + 1];
  return st;
}
std::vector<int64_t> unravel(int64_t flat, const Shape& s) {
  std::vector<int64_t> idx(s.size());
  for (int i = (int)s.size() - 1; i >= 0; --i) { idx[i] = flat % s[i]; flat /= s[i]; }
  return idx;
}
int64_t ravel(const std::vector<int64_t>& idx, const Shape& s) {
  auto st = strides_of(s);
  int64_t f = 0;
  for (size_t i = 0; i < idx.size(); ++i) f += idx[i] * st[i];
  return f;
}
}  // namespace

TEST(ShapeOps, TransposeMatchesNaiveIndexing) {
  PoisonGuard poison;
  Rng rng(1);
  const Shape s = {2, 3, 4, 5};
  Tensor x = rnd(s, rng);
  auto xv = x.to_vector();
  for (int d0 = -4; d0 < 4; ++d0)
    for (int d1 = 0; d1 < 4; ++d1) {
      const int a = d0 < 0 ? d0 + 4 : d0;
      Shape os = s;
      std::swap(os[a], os[d1]);
      std::vector<double> ref(xv.size());
      for (int64_t o = 0; o < (int64_t)ref.size(); ++o) {
        auto idx = unravel(o, os);
        std::swap(idx[a], idx[d1]);
        ref[o] = xv[ravel(idx, s)];
      }
      Tensor y = transpose(x, d0, d1);
      EXPECT_EQ(y.shape(), os);
      EXPECT_EQ(y.to_vector(), ref) << d0 << "," << d1;
      std::vector<double> ref32(ref.size());
      for (size_t i = 0; i < ref.size(); ++i) ref32[i] = static_cast<float>(ref[i]);
      EXPECT_EQ(transpose(x.to(DType::F32), d0, d1).to_vector(), ref32) << d0 << "," << d1;
    }
}

TEST(ShapeOps, SliceMatchesNaiveIndexing) {
  PoisonGuard poison;
  Rng rng(2);
  const Shape s = {3, 4, 5};
  Tensor x = rnd(s, rng);
  auto xv = x.to_vector();
  for (int dim = 0; dim < 3; ++dim)
    for (int64_t start = 0; start <= s[dim]; ++start)
      for (int64_t end = start; end <= s[dim]; ++end) {
        Shape os = s;
        os[dim] = end - start;
        std::vector<double> ref(shape_numel(os));
        for (int64_t o = 0; o < (int64_t)ref.size(); ++o) {
          auto idx = unravel(o, os);
          idx[dim] += start;
          ref[o] = xv[ravel(idx, s)];
        }
        Tensor y = slice(x, dim - 3, start, end);  // negative dims count from the end
        EXPECT_EQ(y.shape(), os);
        EXPECT_EQ(y.to_vector(), ref);
      }
  EXPECT_EQ(slice(x.to(DType::F32), 1, 1, 3).to_vector(), slice(x, 1, 1, 3).to(DType::F32).to_vector());
}

TEST(ShapeOps, ConcatMatchesNaiveIndexing) {
  PoisonGuard poison;
  Rng rng(3);
  for (int dim = 0; dim < 3; ++dim) {
    std::vector<Tensor> xs;
    std::vector<int64_t> sizes = {2, 1, 3};
    for (int64_t n : sizes) {
      Shape s = {2, 3, 4};
      s[dim] = n;
      xs.push_back(rnd(s, rng));
    }
    Shape os = {2, 3, 4};
    os[dim] = 6;
    std::vector<double> ref(shape_numel(os));
    for (int64_t o = 0; o < (int64_t)ref.size(); ++o) {
      auto idx = unravel(o, os);
      size_t k = 0;
      while (idx[dim] >= sizes[k]) idx[dim] -= sizes[k++];
      ref[o] = xs[k].to_vector()[ravel(idx, xs[k].shape())];
    }
    Tensor y = concat(xs, dim);
    EXPECT_EQ(y.shape(), os);
    EXPECT_EQ(y.to_vector(), ref) << dim;
    std::vector<Tensor> xs32;
    for (auto& t : xs) xs32.push_back(t.to(DType::F32));
    EXPECT_EQ(concat(xs32, dim).to_vector(), y.to(DType::F32).to_vector());
  }
}

TEST(ShapeOps, GradcheckF64) {
  Rng rng(4);
  for (auto [d0, d1] : {std::pair{0, 2}, std::pair{1, -1}, std::pair{2, 2}, std::pair{3, 0}})
    expect_gradcheck([d0 = d0, d1 = d1](const std::vector<Tensor>& in) { return std::vector<Tensor>{transpose(in[0], d0, d1)}; },
                     {rnd({2, 3, 4, 5}, rng)}, {true}, {"transpose.x"});
  for (int dim = 0; dim < 3; ++dim)
    expect_gradcheck([dim](const std::vector<Tensor>& in) { return std::vector<Tensor>{slice(in[0], dim, 1, 3)}; },
                     {rnd({3, 4, 5}, rng)}, {true}, {"slice.x"});
  for (int dim = -3; dim < 3; ++dim) {
    Shape sa = {2, 3, 4}, sb = {2, 3, 4};
    sb[dim < 0 ? dim + 3 : dim] = 2;
    expect_gradcheck([dim](const std::vector<Tensor>& in) { return std::vector<Tensor>{concat({in[0], in[1], in[0]}, dim)}; },
                     {rnd(sa, rng), rnd(sb, rng)}, {true, true}, {"concat.a (used twice)", "concat.b"});
  }
}

TEST(ShapeOps, BadArgumentsAreClearErrors) {
  Tensor x = Tensor::zeros({2, 3});
  expect_throw_containing([&] { transpose(x, 0, 2); }, "transpose: dim 2 is out of range for f32[2,3] cpu");
  expect_throw_containing([&] { transpose(x, -3, 0); }, "transpose: dim -3 is out of range");
  expect_throw_containing([&] { slice(x, 1, 2, 4); }, "slice: range [2, 4) is not within [0, 3] along dim 1 of f32[2,3] cpu");
  expect_throw_containing([&] { slice(x, 0, 2, 1); }, "slice: range [2, 1)");
  expect_throw_containing([&] { slice(x, 0, -1, 1); }, "slice: range [-1, 1)");
  expect_throw_containing([&] { concat({}, 0); }, "concat: needs at least one tensor");
  expect_throw_containing([&] { concat({x, Tensor::zeros({2, 4})}, 0); },
                          "concat: input 1 must match input 0 except along dim 0, got f32[2,4] cpu and f32[2,3] cpu");
  expect_throw_containing([&] { concat({x, Tensor::zeros({2})}, 0); }, "concat: input 1 must match input 0");
  expect_throw_containing([&] { concat({x, Tensor::zeros({2, 3}, DType::F64)}, 0); }, "concat: mixed tensors");
}

TEST(ShapeOps, CudaMatchesCpu) {
  ECHO_REQUIRE_GPU();
  Rng rng(5);
  auto check = [&](const std::function<Tensor(const std::vector<Tensor>&)>& fn, std::vector<Tensor> cpu, const std::string& tag) {
    std::vector<Tensor> gpu;
    for (auto& t : cpu) {
      t.set_requires_grad(true);
      gpu.push_back(t.detach().to(Device::CUDA).set_requires_grad(true));
    }
    Tensor y = fn(cpu), yc = fn(gpu);
    EXPECT_EQ(yc.to(Device::CPU).to_vector(), y.to_vector()) << tag;  // pure copies: bitwise equal
    Tensor seed = rnd(y.shape(), rng, DType::F32);
    y.backward(seed);
    yc.backward(seed.to(Device::CUDA));
    for (size_t i = 0; i < cpu.size(); ++i)
      EXPECT_LT(max_rel_diff(gpu[i].grad().to(Device::CPU), cpu[i].grad()), 1e-6) << tag << " input " << i;
  };
  for (auto [d0, d1] : {std::pair{0, 1}, std::pair{1, 3}, std::pair{2, 3}, std::pair{0, 3}})
    check([d0 = d0, d1 = d1](const std::vector<Tensor>& in) { return transpose(in[0], d0, d1); },
          {rnd({4, 33, 7, 65}, rng, DType::F32)}, "transpose " + std::to_string(d0) + std::to_string(d1));
  for (int dim = 0; dim < 3; ++dim)
    check([dim](const std::vector<Tensor>& in) { return slice(in[0], dim, 1, 4); }, {rnd({5, 40, 33}, rng, DType::F32)},
          "slice " + std::to_string(dim));
  for (int dim = 0; dim < 3; ++dim) {
    Shape sa = {6, 20, 31}, sb = sa;
    sb[dim] = 3;
    check([dim](const std::vector<Tensor>& in) { return concat({in[0], in[1], in[0]}, dim); },
          {rnd(sa, rng, DType::F32), rnd(sb, rng, DType::F32)}, "concat " + std::to_string(dim));
  }
}
