#include "train/optimizer.h"

#include "test_util.h"

using namespace echo;
using namespace echo::testing;

TEST(AdamW, MatchesTheFormulaOverSeveralSteps) {
  Rng rng(1);
  Tensor w = rnd({5, 3}, rng).set_requires_grad(true);
  Tensor b = rnd({3}, rng).set_requires_grad(true);
  AdamWConfig cfg{0.9, 0.95, 1e-8, 0.1};
  AdamW opt({{"w", w, true}, {"b", b, false}}, cfg);
  auto pw = w.to_vector(), pb = b.to_vector();
  std::vector<double> mw(15, 0), vw(15, 0), mb(3, 0), vb(3, 0);
  for (int step = 1; step <= 4; ++step) {
    Tensor gw = rnd({5, 3}, rng), gb = rnd({3}, rng);
    w.set_grad(gw.clone());
    b.set_grad(gb.clone());
    const double lr = 0.01 * step;
    opt.step(lr);
    auto upd = [&](std::vector<double>& p, std::vector<double>& m, std::vector<double>& v,
                   const std::vector<double>& g, bool decay) {
      for (size_t i = 0; i < p.size(); ++i) {
        if (decay) p[i] *= 1 - lr * cfg.weight_decay;
        m[i] = cfg.beta1 * m[i] + (1 - cfg.beta1) * g[i];
        v[i] = cfg.beta2 * v[i] + (1 - cfg.beta2) * g[i] * g[i];
        double mh = m[i] / (1 - std::pow(cfg.beta1, step)), vh = v[i] / (1 - std::pow(cfg.beta2, step));
        p[i] -= lr * mh / (std::sqrt(vh) + cfg.eps);
      }
    };
    upd(pw, mw, vw, gw.to_vector(), true);
    upd(pb, mb, vb, gb.to_vector(), false);
    EXPECT_LT(max_rel_diff(w.to_vector(), pw), 1e-14) << "step " << step;
    EXPECT_LT(max_rel_diff(b.to_vector(), pb), 1e-14) << "step " << step;
  }
  EXPECT_EQ(opt.steps(), 4);
}

TEST(AdamW, SkipsParametersWithoutGradient) {
  Tensor w = Tensor::full({4}, 2.0, DType::F64).set_requires_grad(true);
  AdamW opt({{"w", w, true}}, {});
  opt.step(0.1);
  for (double x : w.to_vector()) EXPECT_EQ(x, 2.0);
}

TEST(GradClip, GlobalNormAndScaling) {
  Tensor a = Tensor::zeros({2}, DType::F64).set_requires_grad(true);
  Tensor b = Tensor::zeros({1}, DType::F64).set_requires_grad(true);
  a.set_grad(Tensor::from_vector({3, 0}, {2}, DType::F64));
  b.set_grad(Tensor::from_vector({4}, {1}, DType::F64));
  std::vector<ParamRef> ps{{"a", a, true}, {"b", b, true}};
  EXPECT_DOUBLE_EQ(global_grad_norm(ps), 5.0);
  scale_grads(ps, 0.5);
  EXPECT_DOUBLE_EQ(global_grad_norm(ps), 2.5);
  EXPECT_TRUE(grads_finite(ps));
  b.set_grad(Tensor::from_vector({NAN}, {1}, DType::F64));
  EXPECT_FALSE(grads_finite(ps));
}

// step(lr, s) is scale_grads(s) then step(lr), to the bit, in f32 and f64 and
// on every device; the CPU does it in one pass and leaves the gradient unscaled.
TEST(AdamW, ScaledStepEqualsScaleGradsThenStep) {
  std::vector<Device> devices{Device::CPU};
  if (cuda_available()) devices.push_back(Device::CUDA);
  for (Device device : devices) {
    for (DType dtype : {DType::F32, DType::F64}) {
      if (device == Device::CUDA && dtype == DType::F64) continue;
      Rng rng(7);
      Tensor init = rnd({37, 41}, rng, dtype);
      Tensor fused = init.to(device).set_requires_grad(true), split = init.to(device).set_requires_grad(true);
      AdamW a({{"p", fused, true}}, {}), b({{"p", split, true}}, {});
      for (int s = 0; s < 3; ++s) {
        Tensor g = rnd({37, 41}, rng, dtype).to(device);
        fused.set_grad(g.clone());
        split.set_grad(g.clone());
        const double scale = 0.37 + 0.1 * s;
        a.step(1e-2, scale);
        std::vector<ParamRef> refs{{"p", split, true}};
        scale_grads(refs, scale);
        b.step(1e-2);
        EXPECT_EQ(fused.to_vector(), split.to_vector()) << device_name(device) << " step " << s;
        EXPECT_EQ(a.exp_avg_sq()[0].to_vector(), b.exp_avg_sq()[0].to_vector());
      }
    }
  }
}

TEST(Schedule, WarmupThenCosine) {
  EXPECT_DOUBLE_EQ(lr_schedule(5, 10, 110, 1.0, 0.1), 0.5);
  EXPECT_DOUBLE_EQ(lr_schedule(10, 10, 110, 1.0, 0.1), 1.0);
  EXPECT_NEAR(lr_schedule(60, 10, 110, 1.0, 0.1), 0.55, 1e-12);
  EXPECT_NEAR(lr_schedule(110, 10, 110, 1.0, 0.1), 0.1, 1e-12);
  EXPECT_NEAR(lr_schedule(500, 10, 110, 1.0, 0.1), 0.1, 1e-12);
}

TEST(AdamW, CudaMatchesCpu) {
  ECHO_REQUIRE_GPU();
  Rng rng(3);
  Tensor p = rnd({1000, 33}, rng, DType::F32);
  Tensor pc = p.to(Device::CUDA);
  p.set_requires_grad(true);
  pc.set_requires_grad(true);
  AdamW a({{"p", p, true}}, {}), c({{"p", pc, true}}, {});
  for (int s = 0; s < 3; ++s) {
    Tensor g = rnd({1000, 33}, rng, DType::F32);
    p.set_grad(g);
    pc.set_grad(g.to(Device::CUDA));
    a.step(1e-2);
    c.step(1e-2);
    std::vector<ParamRef> pr{{"p", p, true}}, prc{{"p", pc, true}};
    EXPECT_NEAR(global_grad_norm(prc), global_grad_norm(pr), 1e-6 * global_grad_norm(pr));
  }
  EXPECT_LT(max_rel_diff(pc.to(Device::CPU), p), 1e-5);
}

// The clipping and NaN-guard reductions on the GPU: sizes below, at and above
// one element per reduction block (256 blocks of 256 threads), a NaN or Inf in
// the middle or at the very end, scaling, and no cudaMalloc once warm.
TEST(GradClip, CudaMatchesCpu) {
  ECHO_REQUIRE_GPU();
  Rng rng(4);
  for (int64_t n : {1, 5, 256, 1000, 65536 + 3, 3000000}) {
    Tensor a = Tensor::zeros({n}, DType::F32).set_requires_grad(true);
    Tensor ac = Tensor::zeros({n}, DType::F32, Device::CUDA).set_requires_grad(true);
    Tensor g = rnd({n}, rng, DType::F32);
    a.set_grad(g.clone());
    ac.set_grad(g.to(Device::CUDA));
    std::vector<ParamRef> cpu{{"a", a, true}}, gpu{{"a", ac, true}};
    const double norm = global_grad_norm(cpu);
    EXPECT_NEAR(global_grad_norm(gpu), norm, 1e-10 * norm) << n;  // double sums, another order
    EXPECT_TRUE(grads_finite(gpu)) << n;
    scale_grads(gpu, 0.25);
    EXPECT_NEAR(global_grad_norm(gpu), 0.25 * norm, 1e-6 * norm) << n;
    for (int64_t at : {n / 2, n - 1}) {
      for (double bad : {double(NAN), double(INFINITY)}) {
        std::vector<double> values = g.to_vector();
        values[at] = bad;
        ac.set_grad(Tensor::from_vector(values, {n}, DType::F32, Device::CUDA));
        EXPECT_FALSE(grads_finite(gpu)) << n << " at " << at;
      }
    }
  }
  Tensor p = Tensor::zeros({4096}, DType::F32, Device::CUDA).set_requires_grad(true);
  p.set_grad(Tensor::full({4096}, 1.0, DType::F32, Device::CUDA));
  std::vector<ParamRef> ps{{"p", p, true}};
  global_grad_norm(ps);
  const size_t mallocs = cuda_allocator_stats().system_alloc_calls;
  for (int i = 0; i < 3; ++i) {
    EXPECT_DOUBLE_EQ(global_grad_norm(ps), 64.0);
    EXPECT_TRUE(grads_finite(ps));
  }
  EXPECT_EQ(cuda_allocator_stats().system_alloc_calls, mallocs);
}

// All gradients of a model in one reduction: tensors of every size around the
// block range (4096 elements), one without a gradient, against the CPU; a NaN or
// Inf in the first, a middle or the last tensor; one device-to-host copy per call.
TEST(GradClip, CudaStatsOverManyTensorsInOneCopy) {
  ECHO_REQUIRE_GPU();
  Rng rng(5);
  std::vector<ParamRef> cpu, gpu;
  const std::vector<int64_t> sizes{1, 4095, 4096, 4097, 3, 100000, 8192, 77};
  for (size_t i = 0; i < sizes.size(); ++i) {
    const std::string name = "p" + std::to_string(i);
    Tensor a = Tensor::zeros({sizes[i]}, DType::F32).set_requires_grad(true);
    Tensor ac = Tensor::zeros({sizes[i]}, DType::F32, Device::CUDA).set_requires_grad(true);
    if (i != 4) {  // p4 has no gradient: it counts as zero
      Tensor g = rnd({sizes[i]}, rng, DType::F32, 1.0 + double(i));
      a.set_grad(g.clone());
      ac.set_grad(g.to(Device::CUDA));
    }
    cpu.push_back({name, a, true});
    gpu.push_back({name, ac, true});
  }
  const GradStats want = grad_stats(cpu);
  const int64_t copies = host_sync_counts().device_to_host_copies;
  const GradStats got = grad_stats(gpu);
  EXPECT_EQ(host_sync_counts().device_to_host_copies - copies, 1) << "one copy back for all tensors";
  EXPECT_TRUE(want.finite);
  EXPECT_TRUE(got.finite);
  EXPECT_GT(want.sum_squares, 1e5);
  EXPECT_NEAR(got.sum_squares, want.sum_squares, 1e-12 * want.sum_squares);  // double sums, another order
  EXPECT_EQ(grad_stats(gpu).sum_squares, got.sum_squares) << "the same bits on every call";
  for (size_t i : {size_t(0), size_t(5), sizes.size() - 1}) {
    for (double bad : {double(NAN), double(INFINITY)}) {
      Tensor saved = gpu[i].param.grad();
      std::vector<double> values = saved.to(Device::CPU).to_vector();
      values[values.size() - 1] = bad;
      gpu[i].param.set_grad(Tensor::from_vector(values, {sizes[i]}, DType::F32, Device::CUDA));
      EXPECT_FALSE(grad_stats(gpu).finite) << "tensor " << i;
      gpu[i].param.set_grad(saved);
    }
  }
  EXPECT_TRUE(grad_stats(gpu).finite);
}
