// Numerical guards: softplus and the SSD decays at extreme inputs, a Mamba layer
// whose dt_raw is huge or tiny, and f32 training at a high learning rate.
// (The NaN/Inf step guard is tests/train/test_trainer.cpp
// Trainer.NonFiniteStepsAbortWithAClearMessage; the Cholesky retry is
// tests/ops/test_koopman_fit.cpp KoopmanFit.CholeskyRetryOnSingularStatistics.)
#include <cmath>

#include "autograd/tape.h"
#include "models/lm.h"
#include "ops/binary.h"
#include "ops/reduce.h"
#include "ops/ssd_scan.h"
#include "ops/unary.h"
#include "train/checkpoint.h"
#include "reliability/reliability_util.h"
#include "test_util.h"
#include "train/train_util.h"

using namespace echo;
using namespace echo::testing;

namespace {

void expect_all_finite(const Tensor& t, const std::string& what) {
  ASSERT_TRUE(t.defined()) << what;
  const auto v = t.to_vector();
  size_t bad = 0;
  for (double x : v) bad += !std::isfinite(x);
  EXPECT_EQ(bad, 0u) << what << ": " << bad << " of " << v.size() << " values are not finite";
}

}  // namespace

TEST(Numerics, SoftplusAndItsGradientAtExtremeInputs) {
  for (DType dt : {DType::F32, DType::F64}) {
    const std::vector<double> xs = {-1e30, -1e4, -100, -20, 0, 20, 20.5, 100, 1e4, 1e30};
    Tensor x = Tensor::from_vector(xs, {(int64_t)xs.size()}, dt);
    x.set_requires_grad(true);
    Tensor y = softplus(x);
    sum(y).backward();
    const auto yv = y.to_vector(), gv = x.grad().to_vector();
    for (size_t i = 0; i < xs.size(); ++i) {
      SCOPED_TRACE("x = " + std::to_string(xs[i]) + (dt == DType::F32 ? " f32" : " f64"));
      ASSERT_TRUE(std::isfinite(yv[i]) && std::isfinite(gv[i]));
      EXPECT_GE(yv[i], 0.0);
      // softplus(x) → x for large x and → e^x (≥ 0) for very negative x; slope σ(x) ∈ [0, 1].
      if (xs[i] >= 20) EXPECT_NEAR(yv[i], xs[i], 1e-6 * std::fabs(xs[i]));
      if (xs[i] <= -100) EXPECT_LT(yv[i], 1e-30);
      EXPECT_GE(gv[i], 0.0);
      EXPECT_LE(gv[i], 1.0);
    }
  }
}

// dt from 1e-30 to 1e6 with A up to −16: dt·A reaches −1.6e7, whose exp underflows
// to 0 in f32; the chunked scan must stay finite forward and backward.
TEST(Numerics, SsdScanStaysFiniteForHugeAndTinySteps) {
  const int64_t b = 1, T = 40, H = 4, P = 2, G = 1, N = 3;
  Rng rng(5);
  std::vector<double> dt(b * T * H);
  const double levels[] = {1e6, 1e3, 1e-30, 0.0};
  for (int64_t t = 0; t < T; ++t)
    for (int64_t h = 0; h < H; ++h) dt[t * H + h] = levels[(t + h) % 4];
  for (DType type : {DType::F32, DType::F64}) {
    Tensor x = randn({b, T, H, P}, rng, type), B = randn({b, T, G, N}, rng, type), C = randn({b, T, G, N}, rng, type);
    Tensor dtt = Tensor::from_vector(dt, {b, T, H}, type);
    Tensor A = Tensor::from_vector({-16.0, -1.0, -1e-3, -8.0}, {H}, type);
    for (Tensor* t : {&x, &B, &C, &dtt, &A}) t->set_requires_grad(true);
    for (int64_t chunk : {8, 64}) {
      SsdResult r = ssd_scan(x, dtt, A, B, C, Tensor(), Tensor(), chunk);
      expect_all_finite(r.y, "y");
      expect_all_finite(r.h_final, "h_final");
      for (Tensor* t : {&x, &B, &C, &dtt, &A}) t->zero_grad();
      // Scale the loss so that huge y (≈ dt·x) does not overflow the f32 sum.
      add(sum(scale(r.y, 1e-8)), sum(r.h_final)).backward();
      for (const auto& [t, name] : std::vector<std::pair<Tensor*, const char*>>{
               {&x, "dx"}, {&dtt, "ddt"}, {&A, "dA"}, {&B, "dB"}, {&C, "dC"}})
        expect_all_finite(t->grad(), std::string(name) + (type == DType::F32 ? " f32" : " f64"));
    }
  }
}

// NaN in dt (e.g. from a corrupt input file) reaches the vectorised exp of the
// decays; it must come out as NaN, without undefined behaviour on the way (the
// exponent bits of NaN once went through a signed left shift: found by fuzzing,
// tests/fuzz/regressions/op_runner/ssd_scan_nan_exp_shift).
TEST(Numerics, SsdScanPropagatesNaNWithoutUndefinedBehaviour) {
  const int64_t b = 1, T = 10, H = 2, P = 2, G = 1, N = 2;
  Rng rng(6);
  for (DType type : {DType::F32, DType::F64}) {
    std::vector<double> dt(b * T * H, 0.1);
    dt[7] = NAN;
    dt[12] = -NAN;  // the sign bit set too
    SsdResult r = ssd_scan(randn({b, T, H, P}, rng, type), Tensor::from_vector(dt, {b, T, H}, type),
                           Tensor::from_vector({-1.0, -2.0}, {H}, type), randn({b, T, G, N}, rng, type),
                           randn({b, T, G, N}, rng, type), Tensor(), Tensor(), 4);
    bool any_nan = false;
    for (double v : r.y.to_vector()) any_nan = any_nan || std::isnan(v);
    EXPECT_TRUE(any_nan) << "NaN in dt must not vanish";
  }
}

// The model-level path: dt = softplus(dt_raw + dt_bias) with dt_bias forced to
// ±1e4 and ±60 on different heads gives dt ∈ {~0, 1e4}; the loss, every gradient
// and the decode step stay finite.
TEST(Numerics, MambaLayerWithHugeOrTinyDtStaysFinite) {
  nlohmann::json j = tiny_model_config("MM").to_json();
  j["mamba"]["headdim"] = 8;  // d_inner 64 / 8 = 8 heads: room for every level
  auto model = make_model(parse_config(j), 3);
  for (int layer = 0; layer < 2; ++layer) {
    const Tensor& bias = model->params().get("layers." + std::to_string(layer) + ".mixer.dt_bias");
    std::vector<double> v(bias.numel());
    const double levels[] = {1e4, 60, -60, -1e4};
    for (size_t h = 0; h < v.size(); ++h) v[h] = levels[(h + layer) % 4];
    NoGrad no_grad;
    Tensor dst = bias;
    dst.copy_(Tensor::from_vector(v, bias.shape(), DType::F32));
  }
  Rng rng(9);
  std::vector<int64_t> tok(2 * 37), tgt(2 * 37);
  for (size_t i = 0; i < tok.size(); ++i) {
    tok[i] = rng.randint(0, 128);
    tgt[i] = rng.randint(0, 128);
  }
  Tensor tokens = Tensor::from_ints(tok, {2, 37}), targets = Tensor::from_ints(tgt, {2, 37});
  Tensor loss = model->loss(tokens, targets);
  ASSERT_TRUE(std::isfinite(loss.item())) << loss.item();
  loss.backward();
  for (const auto& p : model->params().all()) expect_all_finite(p.tensor.grad(), p.name + " grad");
  DecodeState state = model->make_decode_state(2);
  for (int64_t t = 0; t < 12; ++t) {
    Tensor logits = model->step(Tensor::from_ints({tok[t], tok[37 + t]}, {2}), state);
    expect_all_finite(logits, "decode logits at step " + std::to_string(t));
  }
}

// f32 training at lr 3e-2 (10× the default) for 500 steps: every step finite,
// none skipped by the NaN/Inf guard, final parameters finite.
TEST(Numerics, F32TrainingAtHighLearningRateStaysFinite) {
  TempDir d;
  TrainOptions o = tiny_training(d.path(), 500);
  o.lr = 3e-2;
  o.warmup = 20;
  o.log_every = 1;
  o.threads = 1;
  TrainSummary s = train(o);
  EXPECT_EQ(s.final_step, o.steps);
  auto rec = step_records(d.file("metrics.jsonl"));
  ASSERT_EQ((int64_t)rec.size(), o.steps);
  for (const auto& [step, r] : rec) {
    ASSERT_FALSE(r.contains("skipped")) << "step " << step << ": " << r.dump();
    ASSERT_TRUE(r["loss"].is_number() && std::isfinite(r["loss"].get<double>())) << r.dump();
    ASSERT_TRUE(r["grad_norm"].is_number() && std::isfinite(r["grad_norm"].get<double>())) << r.dump();
  }
  auto model = load_model(d.file("latest.h5"));  // the loader itself refuses non-finite values
  EXPECT_LT(rec.rbegin()->second["loss"].get<double>(), rec.begin()->second["loss"].get<double>());
}
