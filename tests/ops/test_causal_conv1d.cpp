#include "ops/causal_conv1d.h"

#include "ops/runner.h"
#include "test_util.h"

using namespace echo;
using namespace echo::testing;

namespace {
// Independent naive reference, written as a convolution with a zero-padded history.
std::vector<double> ref_conv(const std::vector<double>& x, const std::vector<double>& w,
                             const std::vector<double>& bias, int64_t B, int64_t T, int64_t C, int64_t W) {
  std::vector<double> y(B * T * C);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t c = 0; c < C; ++c) {
      std::vector<double> padded(W - 1, 0.0);  // x[-(W-1)..-1] = 0
      for (int64_t t = 0; t < T; ++t) padded.push_back(x[(b * T + t) * C + c]);
      for (int64_t t = 0; t < T; ++t) {
        double acc = bias.empty() ? 0.0 : bias[c];
        for (int64_t k = 0; k < W; ++k) acc += w[c * W + k] * padded[t + k];
        y[(b * T + t) * C + c] = acc;
      }
    }
  return y;
}
GradcheckFn conv_fn() {
  return [](const std::vector<Tensor>& in) { return std::vector<Tensor>{causal_conv1d(in[0], in[1], in[2])}; };
}
}  // namespace

TEST(CausalConv1d, MatchesNaiveLoopF64AndF32) {
  PoisonGuard poison;
  Rng rng(1);
  struct Dims { int64_t B, T, C, W; };
  for (Dims d : {Dims{2, 11, 5, 4}, Dims{1, 3, 7, 4}, Dims{3, 9, 4, 1}, Dims{2, 6, 3, 8}}) {
    Tensor x = rnd({d.B, d.T, d.C}, rng), w = rnd({d.C, d.W}, rng), bias = rnd({d.C}, rng);
    auto ref = ref_conv(x.to_vector(), w.to_vector(), bias.to_vector(), d.B, d.T, d.C, d.W);
    EXPECT_LT(max_rel_diff(causal_conv1d(x, w, bias).to_vector(), ref), 1e-14);
    EXPECT_LT(max_rel_diff(causal_conv1d(x.to(DType::F32), w.to(DType::F32), bias.to(DType::F32)).to_vector(), ref),
              1e-6);
    auto ref_nb = ref_conv(x.to_vector(), w.to_vector(), {}, d.B, d.T, d.C, d.W);
    EXPECT_LT(max_rel_diff(causal_conv1d(x, w).to_vector(), ref_nb), 1e-14);
  }
}

TEST(CausalConv1d, GradcheckF64) {
  Rng rng(2);
  Tensor x = rnd({2, 7, 3}, rng), w = rnd({3, 4}, rng), bias = rnd({3}, rng);
  expect_gradcheck(conv_fn(), {x, w, bias}, {true, true, true}, {"x", "w", "bias"});
  expect_gradcheck(conv_fn(), {x, w, Tensor()}, {true, true, false}, {"x", "w", "bias"});
  expect_gradcheck(conv_fn(), {x, w, bias}, {false, false, true}, {"x", "w", "bias"});
  expect_gradcheck(conv_fn(), {x, w, bias}, {false, true, false}, {"x", "w", "bias"});
  // Window longer than the sequence, and many rows (several row chunks for dw).
  Tensor xs = rnd({1, 3, 2}, rng), ws = rnd({2, 6}, rng), bs = rnd({2}, rng);
  expect_gradcheck(conv_fn(), {xs, ws, bs}, {true, true, true}, {"x", "w", "bias"});
  Tensor xl = rnd({3, 70, 2}, rng), wl = rnd({2, 3}, rng), bl = rnd({2}, rng);
  GradcheckOptions opt;
  opt.max_elements = 100;
  expect_gradcheck(conv_fn(), {xl, wl, bl}, {true, true, true}, {"x", "w", "bias"}, opt);
}

TEST(CausalConv1d, SteppingEqualsFullSequence) {
  PoisonGuard poison;
  Rng rng(5);
  for (int64_t W : {1, 2, 4}) {
    for (DType dt : {DType::F64, DType::F32}) {
      const int64_t B = 2, T = 9, C = 5;
      Tensor x = rnd({B, T, C}, rng, dt), w = rnd({C, W}, rng, dt), bias = rnd({C}, rng, dt);
      auto full = causal_conv1d(x, w, bias).to_vector();
      Tensor state = Tensor::zeros({B, C, W - 1}, dt);
      auto xv = x.to_vector();
      double worst = 0;
      for (int64_t t = 0; t < T; ++t) {
        std::vector<double> xt(B * C);
        for (int64_t b = 0; b < B; ++b)
          for (int64_t c = 0; c < C; ++c) xt[b * C + c] = xv[(b * T + t) * C + c];
        const int64_t v0 = state.version();
        auto yt = causal_conv1d_step(Tensor::from_vector(xt, {B, C}, dt), state, w, bias).to_vector();
        EXPECT_GT(state.version(), v0);
        for (int64_t b = 0; b < B; ++b)
          for (int64_t c = 0; c < C; ++c)
            worst = std::max(worst, std::fabs(yt[b * C + c] - full[(b * T + t) * C + c]));
      }
      EXPECT_LT(worst, dt == DType::F64 ? 1e-14 : 1e-6) << "W=" << W;
      // The state holds the last W-1 inputs, oldest first.
      auto sv = state.to_vector();
      for (int64_t b = 0; b < B; ++b)
        for (int64_t c = 0; c < C; ++c)
          for (int64_t k = 0; k < W - 1; ++k)
            EXPECT_EQ(sv[(b * C + c) * (W - 1) + k], xv[(b * T + T - (W - 1) + k) * C + c]);
    }
  }
}

TEST(CausalConv1d, BadShapesThrowNamingTheInput) {
  Tensor x = Tensor::zeros({2, 5, 3}, DType::F32), w = Tensor::zeros({3, 4}, DType::F32);
  expect_throw_containing([&] { causal_conv1d(x, Tensor::zeros({4, 4}, DType::F32)); },
                          "causal_conv1d: w must have shape [3,W]");
  expect_throw_containing([&] { causal_conv1d(x, w, Tensor::zeros({4}, DType::F32)); },
                          "causal_conv1d: bias must have shape [3]");
  expect_throw_containing([&] { causal_conv1d(Tensor::zeros({5, 3}, DType::F32), w); },
                          "causal_conv1d: x must have rank 3");
  expect_throw_containing([&] { causal_conv1d(x, Tensor::zeros({3, 0}, DType::F32)); },
                          "causal_conv1d: w must have shape");
  Tensor bad_state = Tensor::zeros({2, 3, 4}, DType::F32);
  expect_throw_containing([&] { causal_conv1d_step(Tensor::zeros({2, 3}, DType::F32), bad_state, w); },
                          "causal_conv1d_step: conv_state must have shape [2,3,3]");
}

TEST(CausalConv1d, RunnerEntry) {
  const RunnerOp* op = find_runner_op("causal_conv1d");
  ASSERT_NE(op, nullptr);
  gradcheck_runner_example(*op);
  EXPECT_EQ(op->inputs, (std::vector<std::string>{"x", "w"}));
  EXPECT_EQ(op->optional_inputs, (std::vector<std::string>{"bias"}));
  EXPECT_EQ(op->outputs, (std::vector<std::string>{"y"}));
  Rng rng(4);
  OpAttrs attrs;
  NamedTensors in = op->example(rng, attrs);
  const int64_t B = in["x"].size(0), T = in["x"].size(1), C = in["x"].size(2), W = in["w"].size(1);
  auto ref = ref_conv(in["x"].to_vector(), in["w"].to_vector(), in["bias"].to_vector(), B, T, C, W);
  EXPECT_LT(max_rel_diff(op->forward(in, attrs).at("y").to_vector(), ref), 1e-14);
  in.erase("bias");
  auto ref_nb = ref_conv(in["x"].to_vector(), in["w"].to_vector(), {}, B, T, C, W);
  EXPECT_LT(max_rel_diff(op->forward(in, attrs).at("y").to_vector(), ref_nb), 1e-14);
}

TEST(CausalConv1d, CudaMatchesCpu) {
  ECHO_REQUIRE_GPU();
  Rng rng(3);
  // 600 rows (10 chunks of the dw sum); C = 300 > 256 channels (a second block
  // column of the dw grid) with T = 3 < W (taps before time 0); W = 1.
  struct Dims { int64_t B, T, C, W; };
  for (Dims dims : {Dims{3, 200, 130, 4}, Dims{2, 3, 300, 4}, Dims{2, 70, 33, 1}}) {
    const int64_t B = dims.B, T = dims.T, C = dims.C, W = dims.W;
    for (bool with_bias : {true, false}) {
      Tensor x = rnd({B, T, C}, rng, DType::F32), w = rnd({C, W}, rng, DType::F32), bias = rnd({C}, rng, DType::F32);
      if (!with_bias) bias = Tensor();
      Tensor xc = x.to(Device::CUDA), wc = w.to(Device::CUDA), bc = with_bias ? bias.to(Device::CUDA) : Tensor();
      for (Tensor* t : {&x, &w, &bias, &xc, &wc, &bc})
        if (t->defined()) t->set_requires_grad(true);
      Tensor y = causal_conv1d(x, w, bias), yc = causal_conv1d(xc, wc, bc);
      EXPECT_LT(max_rel_diff(yc.to(Device::CPU), y), 1e-5) << T << " " << C << " " << W;
      Tensor seed = rnd(y.shape(), rng, DType::F32);
      y.backward(seed);
      yc.backward(seed.to(Device::CUDA));
      EXPECT_LT(max_rel_diff(xc.grad().to(Device::CPU), x.grad()), 1e-5) << T << " " << C << " " << W;
      EXPECT_LT(max_rel_diff(wc.grad().to(Device::CPU), w.grad()), 1e-5) << T << " " << C << " " << W;
      if (with_bias)
        EXPECT_LT(max_rel_diff(bc.grad().to(Device::CPU), bias.grad()), 1e-5) << T << " " << C << " " << W;
    }
  }
  // Decode step on the GPU equals the CPU step (state included).
  const int64_t B = 2, C = 33, W = 4;
  Tensor w = rnd({C, W}, rng, DType::F32), bias = rnd({C}, rng, DType::F32);
  Tensor state = rnd({B, C, W - 1}, rng, DType::F32), state_c = state.to(Device::CUDA);
  for (int step = 0; step < 5; ++step) {
    Tensor xt = rnd({B, C}, rng, DType::F32);
    Tensor y = causal_conv1d_step(xt, state, w, bias);
    Tensor yc = causal_conv1d_step(xt.to(Device::CUDA), state_c, w.to(Device::CUDA), bias.to(Device::CUDA));
    EXPECT_LT(max_rel_diff(yc.to(Device::CPU), y), 1e-6);
    EXPECT_LT(max_rel_diff(state_c.to(Device::CPU), state), 1e-7);
  }
}
