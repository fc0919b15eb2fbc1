#include "ops/matmul.h"

#include <functional>

#include "test_util.h"

using namespace echo;
using namespace echo::testing;

namespace {
// Row-major element access for the naive loops.
struct Mat {
  std::vector<double> v;
  int64_t cols;
  double at(int64_t r, int64_t c) const { return v[r * cols + c]; }
};
}  // namespace

TEST(Matmul, MatmulMatchesNaiveLoop) {
  PoisonGuard poison;
  Rng rng(1);
  Tensor a = rnd({2, 3, 4}, rng), b = rnd({4, 5}, rng);
  Mat A{a.to_vector(), 4}, B{b.to_vector(), 5};
  std::vector<double> ref(6 * 5);
  for (int64_t r = 0; r < 6; ++r)
    for (int64_t n = 0; n < 5; ++n)
      for (int64_t k = 0; k < 4; ++k) ref[r * 5 + n] += A.at(r, k) * B.at(k, n);
  Tensor y = matmul(a, b);
  EXPECT_EQ(y.shape(), (Shape{2, 3, 5}));
  EXPECT_LT(max_rel_diff(y.to_vector(), ref), 1e-14);
  EXPECT_LT(max_rel_diff(matmul(a.to(DType::F32), b.to(DType::F32)).to_vector(), ref), 1e-6);
}

TEST(Matmul, LinearMatchesNaiveLoop) {
  PoisonGuard poison;
  Rng rng(2);
  Tensor x = rnd({2, 3, 6}, rng), w = rnd({4, 6}, rng), bias = rnd({4}, rng);
  Mat X{x.to_vector(), 6}, W{w.to_vector(), 6};
  auto bv = bias.to_vector();
  std::vector<double> ref(6 * 4), ref_nobias(6 * 4);
  for (int64_t r = 0; r < 6; ++r)
    for (int64_t o = 0; o < 4; ++o) {
      for (int64_t i = 0; i < 6; ++i) ref_nobias[r * 4 + o] += X.at(r, i) * W.at(o, i);
      ref[r * 4 + o] = ref_nobias[r * 4 + o] + bv[o];
    }
  Tensor y = linear(x, w, bias);
  EXPECT_EQ(y.shape(), (Shape{2, 3, 4}));
  EXPECT_LT(max_rel_diff(y.to_vector(), ref), 1e-14);
  EXPECT_LT(max_rel_diff(linear(x, w).to_vector(), ref_nobias), 1e-14);
  EXPECT_LT(max_rel_diff(linear(x.to(DType::F32), w.to(DType::F32), bias.to(DType::F32)).to_vector(), ref), 1e-6);
}

TEST(Matmul, BmmMatchesNaiveLoopForAllTransposeFlags) {
  PoisonGuard poison;
  Rng rng(3);
  const int64_t B = 3, m = 4, k = 5, n = 2;
  for (int ta = 0; ta < 2; ++ta)
    for (int tb = 0; tb < 2; ++tb) {
      Tensor a = rnd(ta ? Shape{B, k, m} : Shape{B, m, k}, rng), b = rnd(tb ? Shape{B, n, k} : Shape{B, k, n}, rng);
      auto av = a.to_vector(), bv = b.to_vector();
      auto A = [&](int64_t i, int64_t r, int64_t c) { return ta ? av[(i * k + c) * m + r] : av[(i * m + r) * k + c]; };
      auto Bm = [&](int64_t i, int64_t r, int64_t c) { return tb ? bv[(i * n + c) * k + r] : bv[(i * k + r) * n + c]; };
      std::vector<double> ref(B * m * n);
      for (int64_t i = 0; i < B; ++i)
        for (int64_t r = 0; r < m; ++r)
          for (int64_t c = 0; c < n; ++c)
            for (int64_t j = 0; j < k; ++j) ref[(i * m + r) * n + c] += A(i, r, j) * Bm(i, j, c);
      Tensor y = bmm(a, b, ta, tb);
      EXPECT_EQ(y.shape(), (Shape{B, m, n}));
      EXPECT_LT(max_rel_diff(y.to_vector(), ref), 1e-14) << ta << tb;
      EXPECT_LT(max_rel_diff(bmm(a.to(DType::F32), b.to(DType::F32), ta, tb).to_vector(), ref), 1e-6) << ta << tb;
    }
}

// One row of C (decode steps, batch 1) takes the gemv path: every transpose
// flag, several column blocks (n > 64), poisoned outputs, and its gradients.
TEST(Matmul, OneRowProductsMatchNaiveLoopForAllTransposeFlags) {
  PoisonGuard poison;
  Rng rng(7);
  const int64_t B = 2, m = 1, k = 37, n = 203;
  for (int ta = 0; ta < 2; ++ta)
    for (int tb = 0; tb < 2; ++tb) {
      Tensor a = rnd(ta ? Shape{B, k, m} : Shape{B, m, k}, rng), b = rnd(tb ? Shape{B, n, k} : Shape{B, k, n}, rng);
      auto av = a.to_vector(), bv = b.to_vector();
      std::vector<double> ref(B * n);
      for (int64_t i = 0; i < B; ++i)
        for (int64_t c = 0; c < n; ++c)
          for (int64_t j = 0; j < k; ++j)
            ref[i * n + c] += av[i * k + j] * (tb ? bv[(i * n + c) * k + j] : bv[(i * k + j) * n + c]);
      EXPECT_LT(max_rel_diff(bmm(a, b, ta, tb).to_vector(), ref), 1e-14) << ta << tb;
      EXPECT_LT(max_rel_diff(bmm(a.to(DType::F32), b.to(DType::F32), ta, tb).to_vector(), ref), 1e-5) << ta << tb;
      Tensor a_small = rnd(ta ? Shape{1, 5, 1} : Shape{1, 1, 5}, rng);
      Tensor b_small = rnd(tb ? Shape{1, 70, 5} : Shape{1, 5, 70}, rng);
      const std::string tag = "bmm(m=1,ta=" + std::to_string(ta) + ",tb=" + std::to_string(tb) + ")";
      expect_gradcheck([ta, tb](const std::vector<Tensor>& in) { return std::vector<Tensor>{bmm(in[0], in[1], ta, tb)}; },
                       {a_small, b_small}, {true, true}, {tag + ".a", tag + ".b"});
    }
  // The decode step's shape: linear on one token.
  Tensor x = rnd({1, 9}, rng), w = rnd({130, 9}, rng);
  auto xv = x.to_vector(), wv = w.to_vector();
  std::vector<double> ref(130);
  for (int64_t o = 0; o < 130; ++o)
    for (int64_t i = 0; i < 9; ++i) ref[o] += xv[i] * wv[o * 9 + i];
  EXPECT_LT(max_rel_diff(linear(x, w).to_vector(), ref), 1e-14);
}

TEST(Matmul, EmptyInnerDimension) {
  // K = 0: the product is all zeros (plus the bias), never NaN from the poisoned output.
  PoisonGuard poison;
  Tensor x = Tensor::zeros({3, 0}, DType::F64), w = Tensor::zeros({2, 0}, DType::F64);
  Tensor bias = Tensor::from_vector({1.5, -2}, {2}, DType::F64);
  EXPECT_EQ(linear(x, w, bias).to_vector(), (std::vector<double>{1.5, -2, 1.5, -2, 1.5, -2}));
  EXPECT_EQ(matmul(x, Tensor::zeros({0, 2}, DType::F64)).to_vector(), std::vector<double>(6, 0.0));
}

TEST(Matmul, GradcheckF64) {
  Rng rng(4);
  expect_gradcheck([](const std::vector<Tensor>& in) { return std::vector<Tensor>{matmul(in[0], in[1])}; },
                   {rnd({2, 3, 4}, rng), rnd({4, 5}, rng)}, {true, true}, {"matmul.a", "matmul.b"});
  expect_gradcheck([](const std::vector<Tensor>& in) { return std::vector<Tensor>{linear(in[0], in[1], in[2])}; },
                   {rnd({2, 3, 6}, rng), rnd({4, 6}, rng), rnd({4}, rng)}, {true, true, true},
                   {"linear.x", "linear.weight", "linear.bias"});
  expect_gradcheck([](const std::vector<Tensor>& in) { return std::vector<Tensor>{linear(in[0], in[1])}; },
                   {rnd({5, 6}, rng), rnd({4, 6}, rng)}, {true, true}, {"linear(no bias).x", "linear(no bias).weight"});
  const int64_t B = 2, m = 3, k = 4, n = 5;
  for (int ta = 0; ta < 2; ++ta)
    for (int tb = 0; tb < 2; ++tb) {
      Tensor a = rnd(ta ? Shape{B, k, m} : Shape{B, m, k}, rng), b = rnd(tb ? Shape{B, n, k} : Shape{B, k, n}, rng);
      const std::string tag = "bmm(ta=" + std::to_string(ta) + ",tb=" + std::to_string(tb) + ")";
      expect_gradcheck([ta, tb](const std::vector<Tensor>& in) { return std::vector<Tensor>{bmm(in[0], in[1], ta, tb)}; },
                       {a, b}, {true, true}, {tag + ".a", tag + ".b"});
    }
  // Same tensor on both sides: x·xᵀ (both gradient buffers are x's).
  expect_gradcheck([](const std::vector<Tensor>& in) { return std::vector<Tensor>{bmm(in[0], in[0], false, true)}; },
                   {rnd({2, 3, 4}, rng)}, {true}, {"bmm(x,xT).x"});
}

TEST(Matmul, BadShapesAreClearErrors) {
  Tensor a = Tensor::zeros({2, 3}), b = Tensor::zeros({4, 5});
  expect_throw_containing([&] { matmul(a, b); }, "matmul: a's last dim must equal b's first dim, got a f32[2,3] cpu and b f32[4,5] cpu");
  expect_throw_containing([&] { matmul(a, Tensor::zeros({3})); }, "matmul: b must have rank 2");
  expect_throw_containing([&] { linear(a, Tensor::zeros({4, 2})); }, "linear: x's last dim must equal weight's in-features");
  expect_throw_containing([&] { linear(a, Tensor::zeros({4, 3}), Tensor::zeros({3})); }, "linear: bias must have shape [4], got f32[3] cpu");
  expect_throw_containing([&] { bmm(Tensor::zeros({2, 3, 4}), Tensor::zeros({2, 3, 4})); }, "bmm: op(a) [B,m,k] and op(b) [B,k,n] do not match");
  expect_throw_containing([&] { bmm(Tensor::zeros({2, 3, 4}), Tensor::zeros({3, 4, 4})); }, "got a f32[2,3,4] cpu and b f32[3,4,4] cpu");
  expect_throw_containing([&] { bmm(Tensor::zeros({3, 4}), Tensor::zeros({2, 4, 4})); }, "bmm: a must have rank 3");
  expect_throw_containing([&] { matmul(a, Tensor::zeros({3, 5}, DType::F64)); }, "matmul: mixed tensors");
}

// cuBLAS and OpenBLAS split the k-sums differently (blocking, FMA, split-k), so
// f32 results differ by summation order: roughly sqrt(k)·2⁻²⁴ of the sum of
// |terms|, which for k up to 300 and randn inputs is ~1e-6 to 1e-5 relative to
// the largest output. 1e-4 leaves room for that; a real indexing or transpose
// bug gives O(1).
TEST(Matmul, CudaMatchesCpu) {
  ECHO_REQUIRE_GPU();
  Rng rng(5);
  auto check = [&](const std::function<Tensor(const std::vector<Tensor>&)>& fn, std::vector<Tensor> cpu, const char* tag) {
    std::vector<Tensor> gpu;
    for (auto& t : cpu) {
      t.set_requires_grad(true);
      gpu.push_back(t.detach().to(Device::CUDA).set_requires_grad(true));
    }
    Tensor y = fn(cpu), yc = fn(gpu);
    EXPECT_LT(max_rel_diff(yc.to(Device::CPU), y), 1e-4) << tag;
    Tensor seed = rnd(y.shape(), rng, DType::F32);
    y.backward(seed);
    yc.backward(seed.to(Device::CUDA));
    for (size_t i = 0; i < cpu.size(); ++i)
      EXPECT_LT(max_rel_diff(gpu[i].grad().to(Device::CPU), cpu[i].grad()), 1e-4) << tag << " input " << i;
  };
  check([](const std::vector<Tensor>& in) { return matmul(in[0], in[1]); },
        {rnd({4, 50, 300}, rng, DType::F32), rnd({300, 70}, rng, DType::F32)}, "matmul");
  check([](const std::vector<Tensor>& in) { return linear(in[0], in[1], in[2]); },
        {rnd({8, 64, 256}, rng, DType::F32), rnd({96, 256}, rng, DType::F32), rnd({96}, rng, DType::F32)}, "linear");
  check([](const std::vector<Tensor>& in) { return linear(in[0], in[1]); },
        {rnd({33, 17}, rng, DType::F32), rnd({5, 17}, rng, DType::F32)}, "linear (no bias)");
  const int64_t B = 6, m = 40, k = 64, n = 24;
  for (int ta = 0; ta < 2; ++ta)
    for (int tb = 0; tb < 2; ++tb)
      check([ta, tb](const std::vector<Tensor>& in) { return bmm(in[0], in[1], ta, tb); },
            {rnd(ta ? Shape{B, k, m} : Shape{B, m, k}, rng, DType::F32),
             rnd(tb ? Shape{B, n, k} : Shape{B, k, n}, rng, DType::F32)},
            ta ? (tb ? "bmm TT" : "bmm TN") : (tb ? "bmm NT" : "bmm NN"));
  // K = 0 on the GPU: zeros (cudaMemset2D path) or the bias, never the poison;
  // the backward adds nothing to the [3,0]/[2,0] inputs and db += column sums.
  {
    PoisonGuard poison;
    Tensor x = Tensor::zeros({3, 0}, DType::F32, Device::CUDA).set_requires_grad(true);
    Tensor w = Tensor::zeros({2, 0}, DType::F32, Device::CUDA).set_requires_grad(true);
    Tensor bias = Tensor::from_vector({1.5, -2}, {2}, DType::F32, Device::CUDA).set_requires_grad(true);
    Tensor y = linear(x, w, bias);
    EXPECT_EQ(y.to_vector(), (std::vector<double>{1.5, -2, 1.5, -2, 1.5, -2}));
    y.backward(Tensor::full({3, 2}, 1.0, DType::F32, Device::CUDA));
    EXPECT_EQ(bias.grad().to_vector(), (std::vector<double>{3, 3}));
    EXPECT_EQ(matmul(x.detach(), Tensor::zeros({0, 2}, DType::F32, Device::CUDA)).to_vector(),
              std::vector<double>(6, 0.0));
    Tensor a = Tensor::zeros({2, 3, 0}, DType::F32, Device::CUDA), b = Tensor::zeros({2, 0, 4}, DType::F32, Device::CUDA);
    EXPECT_EQ(bmm(a, b).to_vector(), std::vector<double>(24, 0.0));
  }
}
