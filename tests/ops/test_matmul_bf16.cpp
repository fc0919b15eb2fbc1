// Mixed-precision matmuls (ops/matmul.h, spec §0): under MatmulPrecision::BF16
// the f32 products of matmul, linear and bmm (forward and backward) read their
// operands rounded to bf16 and accumulate in fp32.
//
// The references round through the Tensor cast to bf16 storage (autograd/tensor.cpp,
// the path the CUDA cast kernel mirrors), not through ops/matmul.cpp's own rounding,
// and multiply in double: so the comparisons check the rounding as well as the product.
#include <functional>
#include <limits>

#include "ops/koopman_fit.h"
#include "ops/l2norm.h"
#include "ops/matmul.h"
#include "ops/ssd_scan.h"
#include "test_util.h"

using namespace echo;
using namespace echo::testing;

namespace {

// t's values rounded to bf16 (round to nearest even), as an f64 tensor.
Tensor bf16_rounded(const Tensor& t) { return t.detach().to(DType::BF16).to(DType::F64); }

// Row-major op(A)[i] · op(B)[i] for every batch entry, in double.
std::vector<double> naive_bmm(const std::vector<double>& av, const std::vector<double>& bv, int64_t batch, int64_t m,
                              int64_t k, int64_t n, bool ta, bool tb) {
  auto A = [&](int64_t i, int64_t r, int64_t c) { return ta ? av[(i * k + c) * m + r] : av[(i * m + r) * k + c]; };
  auto B = [&](int64_t i, int64_t r, int64_t c) { return tb ? bv[(i * n + c) * k + r] : bv[(i * k + r) * n + c]; };
  std::vector<double> out(batch * m * n, 0.0);
  for (int64_t i = 0; i < batch; ++i)
    for (int64_t r = 0; r < m; ++r)
      for (int64_t c = 0; c < n; ++c)
        for (int64_t j = 0; j < k; ++j) out[(i * m + r) * n + c] += A(i, r, j) * B(i, j, c);
  return out;
}

// Transpose of a row-major [rows, cols] matrix.
std::vector<double> transposed(const std::vector<double>& v, int64_t rows, int64_t cols) {
  std::vector<double> t(v.size());
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) t[c * rows + r] = v[r * cols + c];
  return t;
}

Tensor f32(const Shape& s, Rng& rng) { return rnd(s, rng, DType::F32); }

// Runs fn on fresh leaf copies of the inputs, backward with seed; returns {y, grads...}.
std::vector<Tensor> forward_backward(const std::function<Tensor(const std::vector<Tensor>&)>& fn,
                                     const std::vector<Tensor>& inputs, const Tensor& seed) {
  std::vector<Tensor> leaves;
  for (const auto& t : inputs) leaves.push_back(t.detach().clone().set_requires_grad(true));
  Tensor y = fn(leaves);
  y.backward(seed);
  std::vector<Tensor> out{y.detach()};
  for (const auto& l : leaves) out.push_back(l.grad());
  return out;
}

}  // namespace

TEST(MatmulBf16, SettingIsScopedAndParsed) {
  EXPECT_EQ(matmul_precision(), MatmulPrecision::F32) << "the default is f32";
  {
    MatmulPrecisionGuard g(MatmulPrecision::BF16);
    EXPECT_EQ(matmul_precision(), MatmulPrecision::BF16);
    {
      MatmulPrecisionGuard inner(MatmulPrecision::F32);
      EXPECT_EQ(matmul_precision(), MatmulPrecision::F32);
    }
    EXPECT_EQ(matmul_precision(), MatmulPrecision::BF16);
  }
  EXPECT_EQ(matmul_precision(), MatmulPrecision::F32);
  EXPECT_EQ(parse_matmul_precision("bf16"), MatmulPrecision::BF16);
  EXPECT_EQ(parse_matmul_precision("f32"), MatmulPrecision::F32);
  EXPECT_STREQ(matmul_precision_name(MatmulPrecision::BF16), "bf16");
  try {
    parse_matmul_precision("fp16");
    ADD_FAILURE() << "fp16 accepted";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("'fp16'"), std::string::npos) << e.what();
  }
}

// 1×1 products x·1 show the rounding of one operand directly. bf16 keeps 8
// significant bits, so near 1 its spacing is 2⁻⁷ and 1 + 2⁻⁸ is a tie.
TEST(MatmulBf16, RoundsOperandsToNearestEven) {
  const double u = std::ldexp(1.0, -7);
  const std::vector<std::pair<double, double>> cases = {
      {1 + u / 2, 1},                             // tie -> even (1), i.e. down
      {1 + 3 * u / 2, 1 + 2 * u},                 // tie -> even (1 + 2u), i.e. up
      {1 + u / 2 + std::ldexp(1.0, -20), 1 + u},  // just above the tie -> up
      {-(1 + u / 4), -1},                         // under half a spacing -> down, sign kept
      {1e-3, 0.00099945068359375},                // f32 0x3a83126f -> bf16 0x3a83 = (1 + 3/128)·2⁻¹⁰
  };
  MatmulPrecisionGuard g(MatmulPrecision::BF16);
  const Tensor one = Tensor::full({1, 1}, 1.0);
  for (const auto& [x, expected] : cases) {
    EXPECT_EQ(matmul(Tensor::full({1, 1}, x), one).item(), expected) << "x = " << x;
    EXPECT_EQ(matmul(one, Tensor::full({1, 1}, x)).item(), expected) << "x = " << x << " (as b)";
  }
  // Overflow to inf as __float2bfloat16_rn: FLT_MAX rounds up past bf16's largest finite.
  EXPECT_EQ(matmul(Tensor::full({1, 1}, std::numeric_limits<float>::max()), one).item(),
            std::numeric_limits<double>::infinity());
  EXPECT_TRUE(std::isnan(matmul(Tensor::full({1, 1}, NAN), one).item()));
}

TEST(MatmulBf16, ForwardEqualsNaiveProductOfRoundedOperands) {
  PoisonGuard poison;
  Rng rng(11);
  MatmulPrecisionGuard g(MatmulPrecision::BF16);
  auto check = [](const Tensor& got, const std::vector<double>& ref_rounded, const Tensor& f32_result, const char* tag) {
    // fp32 accumulation of exact bf16 products: ~K·2⁻²⁴ relative at worst.
    EXPECT_LT(max_rel_diff(got.to_vector(), ref_rounded), 1e-6) << tag;
    // And it is not the f32 product: bf16 operand rounding (2⁻⁹ relative per
    // operand) moves the result far more than f32 summation order (~1e-7).
    const double d = max_rel_diff(got, f32_result);
    EXPECT_GT(d, 1e-4) << tag << ": no bf16 rounding happened";
    EXPECT_LT(d, 1e-2) << tag << ": more than bf16 rounding changed";
  };
  {
    Tensor a = f32({2, 5, 64}, rng), b = f32({64, 24}, rng);
    auto ref = naive_bmm(bf16_rounded(a).to_vector(), bf16_rounded(b).to_vector(), 1, 10, 64, 24, false, false);
    Tensor plain;
    {
      MatmulPrecisionGuard f(MatmulPrecision::F32);
      plain = matmul(a, b);
    }
    Tensor y = matmul(a, b);
    EXPECT_EQ(y.dtype(), DType::F32);
    EXPECT_EQ(y.shape(), (Shape{2, 5, 24}));
    check(y, ref, plain, "matmul");
  }
  {
    Tensor x = f32({3, 7, 48}, rng), w = f32({20, 48}, rng), bias = f32({20}, rng);
    // y = round(x)·round(W)ᵀ + bias, the bias added unrounded.
    auto ref = naive_bmm(bf16_rounded(x).to_vector(), transposed(bf16_rounded(w).to_vector(), 20, 48), 1, 21, 48, 20,
                         false, false);
    auto bv = bias.to_vector();
    for (size_t i = 0; i < ref.size(); ++i) ref[i] += bv[i % 20];
    Tensor plain;
    {
      MatmulPrecisionGuard f(MatmulPrecision::F32);
      plain = linear(x, w, bias);
    }
    check(linear(x, w, bias), ref, plain, "linear");
  }
  const int64_t B = 3, m = 6, k = 40, n = 5;
  for (int ta = 0; ta < 2; ++ta)
    for (int tb = 0; tb < 2; ++tb) {
      Tensor a = f32(ta ? Shape{B, k, m} : Shape{B, m, k}, rng), b = f32(tb ? Shape{B, n, k} : Shape{B, k, n}, rng);
      auto ref = naive_bmm(bf16_rounded(a).to_vector(), bf16_rounded(b).to_vector(), B, m, k, n, ta, tb);
      Tensor plain;
      {
        MatmulPrecisionGuard f(MatmulPrecision::F32);
        plain = bmm(a, b, ta, tb);
      }
      const std::string tag = "bmm(ta=" + std::to_string(ta) + ",tb=" + std::to_string(tb) + ")";
      check(bmm(a, b, ta, tb), ref, plain, tag.c_str());
    }
}

TEST(MatmulBf16, F64IgnoresTheSetting) {
  Rng rng(12);
  Tensor a = rnd({6, 30}, rng), b = rnd({30, 4}, rng), w = rnd({4, 30}, rng);
  auto ref = naive_bmm(a.to_vector(), b.to_vector(), 1, 6, 30, 4, false, false);
  auto ref_linear = naive_bmm(a.to_vector(), transposed(w.to_vector(), 4, 30), 1, 6, 30, 4, false, false);
  MatmulPrecisionGuard g(MatmulPrecision::BF16);
  EXPECT_LT(max_rel_diff(matmul(a, b).to_vector(), ref), 1e-14);
  EXPECT_LT(max_rel_diff(linear(a, w).to_vector(), ref_linear), 1e-14);
  EXPECT_LT(max_rel_diff(bmm(a.reshape({1, 6, 30}), b.reshape({1, 30, 4})).to_vector(), ref), 1e-14);
}

// The backward of C = op(A)·op(B) under BF16: dA = r(dC)·r(op(B))ᵀ, dB = r(op(A))ᵀ·r(dC)
// (r = bf16 rounding), accumulated in fp32; linear's db sums the unrounded dY.
TEST(MatmulBf16, MatmulBackwardUsesRoundedOperands) {
  PoisonGuard poison;
  Rng rng(13);
  const int64_t M = 12, K = 50, N = 9;
  Tensor a = f32({M, K}, rng), b = f32({K, N}, rng), seed = f32({M, N}, rng);
  auto fn = [](const std::vector<Tensor>& in) { return matmul(in[0], in[1]); };
  std::vector<Tensor> got;
  {
    MatmulPrecisionGuard g(MatmulPrecision::BF16);
    got = forward_backward(fn, {a, b}, seed);
  }
  const auto ra = bf16_rounded(a).to_vector(), rb = bf16_rounded(b).to_vector(), rs = bf16_rounded(seed).to_vector();
  auto da = naive_bmm(rs, transposed(rb, K, N), 1, M, N, K, false, false);
  auto db = naive_bmm(transposed(ra, M, K), rs, 1, K, M, N, false, false);
  EXPECT_LT(max_rel_diff(got[1].to_vector(), da), 1e-6);
  EXPECT_LT(max_rel_diff(got[2].to_vector(), db), 1e-6);
  // The plain f32 gradients are a different (unrounded) product.
  auto plain = forward_backward(fn, {a, b}, seed);
  for (int i = 1; i <= 2; ++i) {
    EXPECT_GT(max_rel_diff(got[i], plain[i]), 1e-4) << "grad " << i << " was not computed from rounded operands";
    EXPECT_LT(max_rel_diff(got[i], plain[i]), 1e-2) << "grad " << i;
  }
}

// For linear and bmm: the BF16 backward equals the f32 backward run on operands
// and seed rounded beforehand (then f32 and bf16 are the same numbers), and it adds
// into the gradient buffers.
TEST(MatmulBf16, LinearAndBmmBackwardEqualF32BackwardOfRoundedOperands) {
  PoisonGuard poison;
  Rng rng(14);
  auto round32 = [](const Tensor& t) { return t.detach().to(DType::BF16).to(DType::F32); };
  auto check = [&](const std::function<Tensor(const std::vector<Tensor>&)>& fn, const std::vector<Tensor>& in,
                   const std::vector<bool>& rounded, const std::string& tag) {
    Tensor probe = fn(in);
    Tensor seed = f32(probe.shape(), rng);
    std::vector<Tensor> got;
    {
      MatmulPrecisionGuard g(MatmulPrecision::BF16);
      got = forward_backward(fn, in, seed);
    }
    // Reference: f32 ops on rounded matrix operands (a bias stays as is).
    std::vector<Tensor> in_r;
    for (size_t i = 0; i < in.size(); ++i) in_r.push_back(rounded[i] ? round32(in[i]) : in[i]);
    // The bias gradient is the column sum of the unrounded seed; the product
    // gradients see the rounded seed. Run the reference twice to get both.
    auto ref = forward_backward(fn, in_r, round32(seed));
    auto ref_unrounded_seed = forward_backward(fn, in_r, seed);
    EXPECT_LT(max_rel_diff(got[0], ref[0]), 1e-6) << tag << " forward";
    for (size_t i = 0; i < in.size(); ++i) {
      const Tensor& want = rounded[i] ? ref[i + 1] : ref_unrounded_seed[i + 1];
      EXPECT_LT(max_rel_diff(got[i + 1], want), 1e-6) << tag << " grad " << i;
    }
  };
  auto lin = [](const std::vector<Tensor>& in) { return linear(in[0], in[1], in[2]); };
  check(lin, {f32({4, 5, 40}, rng), f32({16, 40}, rng), f32({16}, rng)}, {true, true, false}, "linear");
  check([](const std::vector<Tensor>& in) { return linear(in[0], in[1]); }, {f32({13, 33}, rng), f32({7, 33}, rng)},
        {true, true}, "linear (no bias)");
  const int64_t B = 2, m = 5, k = 36, n = 7;
  for (int ta = 0; ta < 2; ++ta)
    for (int tb = 0; tb < 2; ++tb)
      check([ta, tb](const std::vector<Tensor>& in) { return bmm(in[0], in[1], ta, tb); },
            {f32(ta ? Shape{B, k, m} : Shape{B, m, k}, rng), f32(tb ? Shape{B, n, k} : Shape{B, k, n}, rng)},
            {true, true}, "bmm(ta=" + std::to_string(ta) + ",tb=" + std::to_string(tb) + ")");

  // Backward adds: two backward passes into the same leaves give twice one pass.
  Tensor x = f32({6, 40}, rng).set_requires_grad(true), w = f32({8, 40}, rng).set_requires_grad(true);
  Tensor seed = f32({6, 8}, rng);
  MatmulPrecisionGuard g(MatmulPrecision::BF16);
  linear(x, w).backward(seed);
  const auto gx1 = x.grad().to_vector(), gw1 = w.grad().to_vector();
  linear(x, w).backward(seed);
  std::vector<double> gx2x(gx1), gw2x(gw1);
  for (auto& v : gx2x) v *= 2;
  for (auto& v : gw2x) v *= 2;
  EXPECT_LT(max_rel_diff(x.grad().to_vector(), gx2x), 1e-6);
  EXPECT_LT(max_rel_diff(w.grad().to_vector(), gw2x), 1e-6);
}

// The precision is read when the forward runs: a graph recorded under BF16
// back-propagates with bf16 operands even after the scope ended, and one
// recorded under F32 stays f32 inside a BF16 scope.
TEST(MatmulBf16, BackwardKeepsThePrecisionOfItsForward) {
  Rng rng(15);
  Tensor a = f32({8, 40}, rng), b = f32({40, 6}, rng), seed = f32({8, 6}, rng);
  auto fn = [](const std::vector<Tensor>& in) { return matmul(in[0], in[1]); };
  std::vector<Tensor> inside, plain;
  {
    MatmulPrecisionGuard g(MatmulPrecision::BF16);
    inside = forward_backward(fn, {a, b}, seed);
  }
  plain = forward_backward(fn, {a, b}, seed);
  // Forward under BF16, backward under F32.
  Tensor la = a.clone().set_requires_grad(true), lb = b.clone().set_requires_grad(true);
  Tensor y;
  {
    MatmulPrecisionGuard g(MatmulPrecision::BF16);
    y = matmul(la, lb);
  }
  y.backward(seed);
  EXPECT_EQ(la.grad().to_vector(), inside[1].to_vector());
  EXPECT_EQ(lb.grad().to_vector(), inside[2].to_vector());
  // Forward under F32, backward under BF16.
  Tensor pa = a.clone().set_requires_grad(true), pb = b.clone().set_requires_grad(true);
  Tensor y2 = matmul(pa, pb);
  {
    MatmulPrecisionGuard g(MatmulPrecision::BF16);
    y2.backward(seed);
  }
  EXPECT_EQ(pa.grad().to_vector(), plain[1].to_vector());
  EXPECT_EQ(pb.grad().to_vector(), plain[2].to_vector());
}

// Spec §0: the SSD scan and the Koopman fit keep fp32 whatever the matmul
// precision: their outputs and gradients are bit-identical under BF16.
TEST(MatmulBf16, SsdScanAndKoopmanFitStayF32) {
  Rng rng(16);
  auto check = [&](const std::function<Tensor(const std::vector<Tensor>&)>& fn, const std::vector<Tensor>& in,
                   const char* tag) {
    Tensor seed = f32(fn(in).shape(), rng);
    auto plain = forward_backward(fn, in, seed);
    std::vector<Tensor> under_bf16;
    {
      MatmulPrecisionGuard g(MatmulPrecision::BF16);
      under_bf16 = forward_backward(fn, in, seed);
    }
    for (size_t i = 0; i < plain.size(); ++i) {
      ASSERT_TRUE(plain[i].defined()) << tag << " output " << i;
      EXPECT_EQ(under_bf16[i].to_vector(), plain[i].to_vector()) << tag << " output " << i;
    }
  };
  const int64_t b = 2, T = 24, H = 2, P = 4, G = 1, N = 8, r = 4;
  std::vector<double> dt = rnd({b, T, H}, rng).to_vector();
  for (auto& e : dt) e = 0.05 + 0.1 * std::fabs(e);  // dt > 0
  check([](const std::vector<Tensor>& in) {
    return ssd_scan(in[0], in[1], in[2], in[3], in[4], Tensor(), Tensor(), /*chunk_size=*/8).y;
  }, {f32({b, T, H, P}, rng), Tensor::from_vector(dt, {b, T, H}), Tensor::from_vector({-0.5, -1.2}, {H}),
      f32({b, T, G, N}, rng), f32({b, T, G, N}, rng)}, "ssd_scan");
  KoopmanOptions opt;
  opt.chunk_size = 8;
  check([opt](const std::vector<Tensor>& in) {
    return koopman_fit(in[0], in[1], in[2], in[3], Tensor(), Tensor(), Tensor(), opt);
  }, {l2norm(f32({b, T, H, r}, rng)), l2norm(f32({b, T, H, r}, rng)), f32({b, T, H, P}, rng),
      Tensor::from_vector({0.9}, {1})}, "koopman_fit");
}

// cuBLAS (bf16 inputs, fp32 compute) against the CPU emulation. Both multiply
// the same bf16 numbers, whose products are exact in fp32, so they differ by
// summation order only: the 1e-4 of the f32 CUDA test. Each result must also be
// off the f32 product by the bf16 amount, which proves cuBLAS was given bf16.
TEST(MatmulBf16, CudaMatchesCpu) {
  ECHO_REQUIRE_GPU();
  PoisonGuard poison;
  Rng rng(17);
  auto check = [&](const std::function<Tensor(const std::vector<Tensor>&)>& fn, const std::vector<Tensor>& cpu,
                   const char* tag) {
    Tensor seed = f32(fn(cpu).shape(), rng);
    std::vector<Tensor> gpu_in;
    for (const auto& t : cpu) gpu_in.push_back(t.to(Device::CUDA));
    std::vector<Tensor> c, g, g32;
    {
      MatmulPrecisionGuard bf16(MatmulPrecision::BF16);
      c = forward_backward(fn, cpu, seed);
      g = forward_backward(fn, gpu_in, seed.to(Device::CUDA));
    }
    g32 = forward_backward(fn, gpu_in, seed.to(Device::CUDA));
    for (size_t i = 0; i < c.size(); ++i) {
      const Tensor gi = g[i].to(Device::CPU);
      EXPECT_EQ(g[i].dtype(), DType::F32) << tag;
      EXPECT_LT(max_rel_diff(gi, c[i]), 1e-4) << tag << (i ? " grad " : " forward ") << i;
      if (i <= 2) EXPECT_GT(max_rel_diff(gi, g32[i].to(Device::CPU)), 1e-4) << tag << " output " << i << " is f32";
    }
  };
  check([](const std::vector<Tensor>& in) { return matmul(in[0], in[1]); },
        {f32({4, 50, 300}, rng), f32({300, 70}, rng)}, "matmul");
  check([](const std::vector<Tensor>& in) { return linear(in[0], in[1], in[2]); },
        {f32({8, 64, 256}, rng), f32({96, 256}, rng), f32({96}, rng)}, "linear");
  check([](const std::vector<Tensor>& in) { return linear(in[0], in[1]); }, {f32({33, 17}, rng), f32({5, 17}, rng)},
        "linear (no bias)");
  const int64_t B = 6, m = 40, k = 64, n = 24;
  for (int ta = 0; ta < 2; ++ta)
    for (int tb = 0; tb < 2; ++tb)
      check([ta, tb](const std::vector<Tensor>& in) { return bmm(in[0], in[1], ta, tb); },
            {f32(ta ? Shape{B, k, m} : Shape{B, m, k}, rng), f32(tb ? Shape{B, n, k} : Shape{B, k, n}, rng)},
            ta ? (tb ? "bmm TT" : "bmm TN") : (tb ? "bmm NT" : "bmm NN"));
  check([](const std::vector<Tensor>& in) { return bmm(in[0], in[1]); }, {f32({1, 9, 31}, rng), f32({1, 31, 5}, rng)},
        "bmm (batch 1)");
  // K = 0 under BF16: zeros or the bias, never the poison.
  MatmulPrecisionGuard bf16(MatmulPrecision::BF16);
  Tensor x = Tensor::zeros({3, 0}, DType::F32, Device::CUDA), w = Tensor::zeros({2, 0}, DType::F32, Device::CUDA);
  Tensor bias = Tensor::from_vector({1.5, -2}, {2}, DType::F32, Device::CUDA);
  EXPECT_EQ(linear(x, w, bias).to_vector(), (std::vector<double>{1.5, -2, 1.5, -2, 1.5, -2}));
  EXPECT_EQ(bmm(Tensor::zeros({2, 3, 0}, DType::F32, Device::CUDA), Tensor::zeros({2, 0, 4}, DType::F32, Device::CUDA))
                .to_vector(),
            std::vector<double>(24, 0.0));
}
