// ssd_scan: the chunked algorithm against the plain sequential recurrence
// (ops/reference/ssd_scan.cpp: forward, and a reverse-time backward), finite-difference
// gradchecks, chunk-size independence, f32 vs f64, large decays, the decode
// step, CUDA vs CPU.
#include "ops/ssd_scan.h"

#include "ops/reference/ssd_scan.h"

#include "ops/runner.h"
#include "test_util.h"

using namespace echo;
using namespace echo::testing;

namespace {

struct Cfg {
  int64_t b, T, H, P, G, N;
  bool with_D, with_h0;
};

struct Inputs {
  Tensor x, dt, A, B, C, D, h0;
  std::vector<Tensor> list() const { return {x, dt, A, B, C, D, h0}; }
};

// dt = softplus(z)·dt_scale (> 0), A = −exp(u) (< 0), like a Mamba-2 layer.
Inputs make_inputs(const Cfg& c, Rng& rng, double dt_scale = 1.0, double a_lo = -1.0, double a_hi = 1.0) {
  Inputs in;
  in.x = rnd({c.b, c.T, c.H, c.P}, rng);
  std::vector<double> dt(c.b * c.T * c.H), A(c.H);
  for (auto& v : dt) v = dt_scale * std::log1p(std::exp(rng.normal()));
  for (auto& v : A) v = -std::exp(rng.uniform(a_lo, a_hi));
  in.dt = Tensor::from_vector(dt, {c.b, c.T, c.H}, DType::F64);
  in.A = Tensor::from_vector(A, {c.H}, DType::F64);
  in.B = rnd({c.b, c.T, c.G, c.N}, rng);
  in.C = rnd({c.b, c.T, c.G, c.N}, rng);
  if (c.with_D) in.D = rnd({c.H}, rng);
  if (c.with_h0) in.h0 = rnd({c.b, c.H, c.P, c.N}, rng);
  return in;
}

Inputs cast(const Inputs& in, DType t, Device dev = Device::CPU) {
  auto cv = [&](const Tensor& a) { return a.defined() ? a.to(t).to(dev) : Tensor(); };
  return {cv(in.x), cv(in.dt), cv(in.A), cv(in.B), cv(in.C), cv(in.D), cv(in.h0)};
}

// ---- the oracle: the recurrence, one step at a time (ops/reference/ssd_scan.h) -------

using Oracle = reference::SsdResults;

Oracle oracle(const Cfg& c, const Inputs& in, const std::vector<double>& dy = {},
              const std::vector<double>& dhf = {}) {
  auto values = [](const Tensor& t) { return t.defined() ? t.to_vector() : std::vector<double>(); };
  return reference::ssd_scan_sequential({c.b, c.T, c.H, c.P, c.G, c.N},
                                        {values(in.x), values(in.dt), values(in.A), values(in.B), values(in.C),
                                         values(in.D), values(in.h0)},
                                        dy, dhf);
}

// ---- the op under test, through autograd ---------------------------------------------

struct OpRun {
  Tensor y, h_final;
  std::vector<Tensor> grads;  // x, dt, A, B, C, D, h0 (undefined where absent)
};

OpRun run_op(const Inputs& in, int64_t chunk, const Tensor& dy, const Tensor& dhf) {
  std::vector<Tensor> leaves = in.list();
  for (auto& l : leaves)
    if (l.defined()) l = l.detach().clone().set_requires_grad(true);
  SsdResult r = ssd_scan(leaves[0], leaves[1], leaves[2], leaves[3], leaves[4], leaves[5], leaves[6], chunk);
  run_backward({r.y, r.h_final}, {dy, dhf});
  OpRun out{r.y.detach(), r.h_final.detach(), {}};
  for (auto& l : leaves) out.grads.push_back(l.defined() ? l.grad() : Tensor());
  return out;
}

const char* kNames[] = {"x", "dt", "A", "B", "C", "D", "h0"};

void expect_matches_oracle(const Cfg& c, int64_t chunk, uint64_t seed, double tol) {
  SCOPED_TRACE("b=" + std::to_string(c.b) + " T=" + std::to_string(c.T) + " H=" + std::to_string(c.H) +
               " P=" + std::to_string(c.P) + " G=" + std::to_string(c.G) + " N=" + std::to_string(c.N) +
               " D=" + std::to_string(c.with_D) + " h0=" + std::to_string(c.with_h0) +
               " chunk=" + std::to_string(chunk));
  Rng rng(seed);
  Inputs in = make_inputs(c, rng);
  Tensor dy = rnd({c.b, c.T, c.H, c.P}, rng), dhf = rnd({c.b, c.H, c.P, c.N}, rng);
  Oracle o = oracle(c, in, dy.to_vector(), dhf.to_vector());
  OpRun r = run_op(in, chunk, dy, dhf);
  EXPECT_LT(max_rel_diff(r.y.to_vector(), o.y), tol) << "y";
  EXPECT_LT(max_rel_diff(r.h_final.to_vector(), o.h_final), tol) << "h_final";
  const std::vector<double>* ref[] = {&o.dx, &o.ddt, &o.dA, &o.dB, &o.dC, &o.dD, &o.dh0};
  for (int i = 0; i < 7; ++i) {
    if (!in.list()[i].defined()) continue;
    ASSERT_TRUE(r.grads[i].defined()) << kNames[i];
    EXPECT_LT(max_rel_diff(r.grads[i].to_vector(), *ref[i]), tol) << "grad " << kNames[i];
  }
}

}  // namespace

// 1. float64: forward and every gradient equal the sequential recurrence.
TEST(SsdScan, MatchesSequentialRecurrenceF64) {
  PoisonGuard poison;
  const std::pair<Cfg, int64_t> cases[] = {
      {{2, 37, 4, 5, 2, 3, true, true}, 8},      // G > 1, T % chunk ≠ 0
      {{1, 64, 3, 4, 1, 6, false, false}, 16},   // no D, no h0, T % chunk = 0
      {{2, 50, 4, 3, 4, 4, true, false}, 7},     // one head per group, odd chunk
      {{1, 45, 6, 2, 3, 5, false, true}, 64},    // chunk > T
      {{3, 33, 2, 7, 1, 9, true, true}, 1},      // chunk of one step
      {{1, 130, 8, 6, 2, 8, true, true}, 32},
  };
  uint64_t seed = 10;
  for (const auto& [cfg, chunk] : cases) expect_matches_oracle(cfg, chunk, seed++, 1e-10);
}

// ... and the result does not depend on the chunk size beyond rounding.
TEST(SsdScan, IndependentOfChunkSizeF64) {
  const Cfg c{2, 300, 4, 6, 2, 5, true, true};
  Rng rng(20);
  Inputs in = make_inputs(c, rng);
  Tensor dy = rnd({c.b, c.T, c.H, c.P}, rng), dhf = rnd({c.b, c.H, c.P, c.N}, rng);
  OpRun ref = run_op(in, 16, dy, dhf);
  for (int64_t chunk : {64, 256}) {
    OpRun r = run_op(in, chunk, dy, dhf);
    EXPECT_LT(max_rel_diff(r.y, ref.y), 1e-12) << chunk;
    EXPECT_LT(max_rel_diff(r.h_final, ref.h_final), 1e-12) << chunk;
    for (int i = 0; i < 7; ++i)
      EXPECT_LT(max_rel_diff(r.grads[i], ref.grads[i]), 1e-12) << kNames[i] << " chunk " << chunk;
  }
}

// 2. Finite-difference gradcheck of every input, both outputs seeded.
TEST(SsdScan, GradcheckF64) {
  const std::pair<Cfg, int64_t> cases[] = {
      {{2, 11, 4, 3, 2, 2, true, true}, 4},
      {{1, 9, 2, 2, 1, 3, false, true}, 16},
      {{1, 13, 3, 2, 3, 2, true, false}, 5},
  };
  uint64_t seed = 30;
  for (const auto& [cfg, chunk] : cases) {
    Rng rng(seed++);
    Inputs in = make_inputs(cfg, rng);
    const int64_t cs = chunk;
    expect_gradcheck(
        [cs](const std::vector<Tensor>& v) {
          SsdResult r = ssd_scan(v[0], v[1], v[2], v[3], v[4], v[5], v[6], cs);
          return std::vector<Tensor>{r.y, r.h_final};
        },
        in.list(), {true, true, true, true, true, true, true}, {"x", "dt", "A", "B", "C", "D", "h0"});
  }
}

// 3. f32 CPU against f64 within 1e-5 relative (forward and all gradients).
TEST(SsdScan, Float32MatchesFloat64) {
  PoisonGuard poison;
  const Cfg c{2, 100, 4, 8, 2, 8, true, true};
  Rng rng(40);
  Inputs in = make_inputs(c, rng);
  Tensor dy = rnd({c.b, c.T, c.H, c.P}, rng), dhf = rnd({c.b, c.H, c.P, c.N}, rng);
  OpRun r64 = run_op(in, 16, dy, dhf);
  OpRun r32 = run_op(cast(in, DType::F32), 16, dy.to(DType::F32), dhf.to(DType::F32));
  EXPECT_LT(max_rel_diff(r32.y, r64.y), 1e-5);
  EXPECT_LT(max_rel_diff(r32.h_final, r64.h_final), 1e-5);
  for (int i = 0; i < 7; ++i) EXPECT_LT(max_rel_diff(r32.grads[i], r64.grads[i]), 1e-5) << kNames[i];
}

// Large decays: dt up to ~10 and A down to -16, so |dt·A| reaches ~160 per step and
// the chunk cumulative sums reach thousands. Segment sums formed as differences of
// cumulative sums would lose the small steps after a large one (badly in f32).
TEST(SsdScan, LargeDecaysStayFiniteAndExact) {
  const Cfg c{2, 150, 4, 4, 2, 4, true, true};
  Rng rng(50);
  Inputs in = make_inputs(c, rng, 1.0, std::log(1.0), std::log(16.0));
  // A mix of large and tiny steps: dt in (0, 10].
  std::vector<double> dt(c.b * c.T * c.H);
  for (int64_t b = 0; b < c.b; ++b)
    for (int64_t t = 0; t < c.T; ++t)
      for (int64_t h = 0; h < c.H; ++h)
        dt[(b * c.T + t) * c.H + h] = (t + 3 * h) % 16 == 0 ? rng.uniform(8.0, 10.0) : rng.uniform(1e-3, 0.02);
  in.dt = Tensor::from_vector(dt, {c.b, c.T, c.H}, DType::F64);
  in.A = Tensor::from_vector({-16.0, -12.0, -8.0, -4.0}, {c.H}, DType::F64);
  Tensor dy = rnd({c.b, c.T, c.H, c.P}, rng), dhf = rnd({c.b, c.H, c.P, c.N}, rng);
  Oracle o = oracle(c, in, dy.to_vector(), dhf.to_vector());
  const std::vector<double>* ref[] = {&o.dx, &o.ddt, &o.dA, &o.dB, &o.dC, &o.dD, &o.dh0};
  for (int64_t chunk : {16, 64}) {
    OpRun r = run_op(in, chunk, dy, dhf);
    EXPECT_LT(max_rel_diff(r.y.to_vector(), o.y), 1e-10);
    EXPECT_LT(max_rel_diff(r.h_final.to_vector(), o.h_final), 1e-10);
    for (int i = 0; i < 7; ++i) EXPECT_LT(max_rel_diff(r.grads[i].to_vector(), *ref[i]), 1e-10) << kNames[i];
    OpRun r32 = run_op(cast(in, DType::F32), chunk, dy.to(DType::F32), dhf.to(DType::F32));
    for (const Tensor& t : {r32.y, r32.h_final})
      for (double v : t.to_vector()) ASSERT_TRUE(std::isfinite(v));
    // Stable segment sums keep f32 within ~7e-7 here; forming them as differences of
    // the chunk's cumulative sums gives ~4e-5 on y (checked by mutating segsum_decay).
    const double tol32 = 4e-6;
    EXPECT_LT(max_rel_diff(r32.y.to_vector(), o.y), tol32);
    EXPECT_LT(max_rel_diff(r32.h_final.to_vector(), o.h_final), tol32);
    for (int i = 0; i < 7; ++i) EXPECT_LT(max_rel_diff(r32.grads[i].to_vector(), *ref[i]), tol32) << kNames[i];
  }
}

// 5. The decode step, streamed over T tokens, reproduces the chunked y and h_final.
TEST(SsdScan, StepStreamingEqualsChunked) {
  for (bool with_D : {true, false}) {
    const Cfg c{2, 41, 4, 3, 2, 5, with_D, true};
    Rng rng(60);
    Inputs in = make_inputs(c, rng);
    SsdResult full = ssd_scan(in.x, in.dt, in.A, in.B, in.C, in.D, in.h0, 16);
    const auto x = in.x.to_vector(), dt = in.dt.to_vector(), B = in.B.to_vector(), C = in.C.to_vector();
    const auto yfull = full.y.to_vector();
    Tensor state = in.h0.clone();
    for (int64_t t = 0; t < c.T; ++t) {
      std::vector<double> xt, dtt, Bt, Ct, yt_ref;
      for (int64_t b = 0; b < c.b; ++b) {
        for (int64_t k = 0; k < c.H * c.P; ++k) {
          xt.push_back(x[(b * c.T + t) * c.H * c.P + k]);
          yt_ref.push_back(yfull[(b * c.T + t) * c.H * c.P + k]);
        }
        for (int64_t h = 0; h < c.H; ++h) dtt.push_back(dt[(b * c.T + t) * c.H + h]);
        for (int64_t k = 0; k < c.G * c.N; ++k) {
          Bt.push_back(B[(b * c.T + t) * c.G * c.N + k]);
          Ct.push_back(C[(b * c.T + t) * c.G * c.N + k]);
        }
      }
      Tensor yt = ssd_step(Tensor::from_vector(xt, {c.b, c.H, c.P}, DType::F64),
                           Tensor::from_vector(dtt, {c.b, c.H}, DType::F64), in.A,
                           Tensor::from_vector(Bt, {c.b, c.G, c.N}, DType::F64),
                           Tensor::from_vector(Ct, {c.b, c.G, c.N}, DType::F64), in.D, state);
      ASSERT_LT(max_rel_diff(yt.to_vector(), yt_ref), 1e-12) << "t=" << t;
    }
    EXPECT_LT(max_rel_diff(state, full.h_final), 1e-12);
  }
}

// An empty sequence passes the initial state through (and its gradient back).
TEST(SsdScan, EmptySequence) {
  PoisonGuard poison;
  Rng rng(65);
  const Cfg c{2, 0, 4, 3, 2, 5, true, true};
  Inputs in = make_inputs(c, rng);
  Tensor dy = rnd({c.b, 0, c.H, c.P}, rng), dhf = rnd({c.b, c.H, c.P, c.N}, rng);
  OpRun r = run_op(in, 16, dy, dhf);
  EXPECT_EQ(r.y.numel(), 0);
  EXPECT_EQ(max_rel_diff(r.h_final, in.h0), 0.0);
  EXPECT_EQ(max_rel_diff(r.grads[6], dhf), 0.0);
  EXPECT_EQ(max_rel_diff(r.grads[2], Tensor::zeros({c.H}, DType::F64)), 0.0);
}

TEST(SsdScan, RejectsBadShapesWithTheInputName) {
  Rng rng(70);
  const Cfg c{2, 8, 4, 3, 2, 5, true, true};
  Inputs in = make_inputs(c, rng);
  auto message = [](auto&& f) {
    try { f(); } catch (const std::runtime_error& e) { return std::string(e.what()); }
    return std::string("no error");
  };
  std::string m = message([&] { ssd_scan(in.x, in.dt, in.A, rnd({2, 8, 3, 5}, rng), rnd({2, 8, 3, 5}, rng)); });
  EXPECT_NE(m.find("ssd_scan"), std::string::npos) << m;
  EXPECT_NE(m.find("H=4"), std::string::npos) << m;
  m = message([&] { ssd_scan(in.x, in.dt, in.A, in.B, rnd({2, 8, 2, 4}, rng)); });
  EXPECT_NE(m.find("C must have shape [2,8,2,5]"), std::string::npos) << m;
  m = message([&] { ssd_scan(in.x, in.dt, rnd({3}, rng), in.B, in.C); });
  EXPECT_NE(m.find("A must have shape [4]"), std::string::npos) << m;
  m = message([&] { ssd_scan(in.x, in.dt, in.A, in.B, in.C, in.D, rnd({2, 4, 3, 4}, rng)); });
  EXPECT_NE(m.find("h0 must have shape [2,4,3,5]"), std::string::npos) << m;
  m = message([&] { ssd_scan(in.x, in.dt, in.A, in.B, in.C, Tensor(), Tensor(), 0); });
  EXPECT_NE(m.find("chunk_size"), std::string::npos) << m;
  m = message([&] { ssd_scan(in.x.to(DType::F32), in.dt, in.A, in.B, in.C); });
  EXPECT_NE(m.find("mixed"), std::string::npos) << m;
}

TEST(SsdScan, RunnerOpRunsItsExampleAndGradchecks) {
  const RunnerOp* op = find_runner_op("ssd_scan");
  ASSERT_NE(op, nullptr);
  EXPECT_EQ(op->outputs, (std::vector<std::string>{"y", "h_final"}));
  Rng rng(80);
  OpAttrs attrs;
  NamedTensors in = op->example(rng, attrs);
  NamedTensors out = op->forward(in, attrs);
  EXPECT_EQ(out.at("y").shape(), in.at("x").shape());
  EXPECT_EQ(out.at("h_final").shape(), in.at("h0").shape());
  std::vector<std::string> names = op->inputs;
  names.insert(names.end(), op->optional_inputs.begin(), op->optional_inputs.end());
  std::vector<Tensor> inputs;
  for (const auto& n : names) inputs.push_back(in.at(n));
  expect_gradcheck(
      [&](const std::vector<Tensor>& v) {
        NamedTensors m;
        for (size_t i = 0; i < names.size(); ++i) m[names[i]] = v[i];
        NamedTensors o = op->forward(m, attrs);
        return std::vector<Tensor>{o.at("y"), o.at("h_final")};
      },
      inputs, std::vector<bool>(names.size(), true), names);
}

// 4. CUDA against the CPU, forward and backward. The GPU runs f32; the CPU
// reference runs f64 on the same (f32-representable) inputs, so the tolerance
// measures the GPU's own rounding.
namespace {
void expect_cuda_matches_cpu(const Cfg& c, int64_t chunk, uint64_t seed) {
  SCOPED_TRACE("T=" + std::to_string(c.T) + " H=" + std::to_string(c.H) + " P=" + std::to_string(c.P) +
               " G=" + std::to_string(c.G) + " N=" + std::to_string(c.N) + " chunk=" + std::to_string(chunk));
  Rng rng(seed);
  Inputs in = cast(cast(make_inputs(c, rng), DType::F32), DType::F64);
  Tensor dy = rnd({c.b, c.T, c.H, c.P}, rng, DType::F32), dhf = rnd({c.b, c.H, c.P, c.N}, rng, DType::F32);
  OpRun cpu = run_op(in, chunk, dy.to(DType::F64), dhf.to(DType::F64));
  OpRun gpu = run_op(cast(in, DType::F32, Device::CUDA), chunk, dy.to(Device::CUDA), dhf.to(Device::CUDA));
  EXPECT_LT(max_rel_diff(gpu.y.to(Device::CPU).to(DType::F64), cpu.y), 1e-4) << "y";
  EXPECT_LT(max_rel_diff(gpu.h_final.to(Device::CPU).to(DType::F64), cpu.h_final), 1e-4) << "h_final";
  for (int i = 0; i < 7; ++i) {
    if (!cpu.grads[i].defined()) continue;
    ASSERT_TRUE(gpu.grads[i].defined()) << kNames[i];
    EXPECT_LT(max_rel_diff(gpu.grads[i].to(Device::CPU).to(DType::F64), cpu.grads[i]), 1e-4) << "grad " << kNames[i];
  }
  // The f32 CPU path on the same inputs, for comparison in a failure message.
  OpRun cpu32 = run_op(cast(in, DType::F32), chunk, dy, dhf);
  EXPECT_LT(max_rel_diff(cpu32.y.to(DType::F64), cpu.y), 1e-4) << "cpu f32 y";
}
}  // namespace

TEST(SsdScan, CudaMatchesCpu) {
  ECHO_REQUIRE_GPU();
  expect_cuda_matches_cpu({2, 37, 4, 5, 2, 3, true, true}, 8, 90);
  expect_cuda_matches_cpu({1, 200, 4, 64, 1, 64, true, false}, 64, 91);
  expect_cuda_matches_cpu({2, 300, 6, 80, 3, 70, false, true}, 64, 92);  // several P and N tiles
  expect_cuda_matches_cpu({1, 520, 2, 16, 2, 16, true, true}, 256, 93);  // chunk > tile
  expect_cuda_matches_cpu({2, 45, 4, 8, 1, 8, true, true}, 1, 94);
}

TEST(SsdScan, CudaStepMatchesCpu) {
  ECHO_REQUIRE_GPU();
  Rng rng(95);
  const int64_t b = 3, H = 4, P = 70, G = 2, N = 40;
  Tensor x = rnd({b, H, P}, rng, DType::F32), B = rnd({b, G, N}, rng, DType::F32),
         C = rnd({b, G, N}, rng, DType::F32), D = rnd({H}, rng, DType::F32),
         state = rnd({b, H, P, N}, rng, DType::F32);
  Tensor dt = rand_uniform({b, H}, rng, 0.01, 2.0, DType::F32), A = rand_uniform({H}, rng, -4.0, -0.5, DType::F32);
  Tensor state_gpu = state.to(Device::CUDA);
  Tensor y = ssd_step(x, dt, A, B, C, D, state);
  // and a state with no D
  Tensor state2 = state.clone(), state2_gpu = state.to(Device::CUDA);
  Tensor y2 = ssd_step(x, dt, A, B, C, Tensor(), state2);
  Tensor y2g = ssd_step(x.to(Device::CUDA), dt.to(Device::CUDA), A.to(Device::CUDA), B.to(Device::CUDA),
                        C.to(Device::CUDA), Tensor(), state2_gpu);
  EXPECT_LT(max_rel_diff(y2g.to(Device::CPU), y2), 1e-5);
  Tensor yg = ssd_step(x.to(Device::CUDA), dt.to(Device::CUDA), A.to(Device::CUDA), B.to(Device::CUDA),
                       C.to(Device::CUDA), D.to(Device::CUDA), state_gpu);
  EXPECT_LT(max_rel_diff(yg.to(Device::CPU), y), 1e-5);
  EXPECT_LT(max_rel_diff(state_gpu.to(Device::CPU), state), 1e-5);
}
