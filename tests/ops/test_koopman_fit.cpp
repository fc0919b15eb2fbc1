#include "ops/koopman_fit.h"

#include "ops/reference/koopman_fit.h"

#include <limits>

#include "autograd/parallel.h"
#include "ops/runner.h"
#include "test_util.h"

using namespace echo;
using namespace echo::testing;

namespace {

struct Problem {
  int64_t b = 1, T = 1, H = 1, r = 1, P = 1;
  Tensor k, q, v, gamma, beta, mask, coef;
  KoopmanOptions opt;
  std::vector<Tensor> inputs() const { return {k, q, v, gamma, beta, mask, coef}; }
};

Tensor normalised(const Tensor& x) {
  auto a = x.to_vector();
  const int64_t r = x.size(-1);
  for (size_t i = 0; i < a.size(); i += r) {
    double s = 0;
    for (int64_t j = 0; j < r; ++j) s += a[i + j] * a[i + j];
    for (int64_t j = 0; j < r; ++j) a[i + j] /= std::sqrt(s);
  }
  return Tensor::from_vector(a, x.shape(), DType::F64);
}

struct Spec {
  int64_t b = 2, T = 37, H = 2, r = 4, P = 3, S = 8;
  int K = 2;
  bool prefix = false, beta = false, coef = false;
  double beta_lo = 0.5, beta_hi = 1.0;
};

Problem make_problem(const Spec& s, Rng& rng) {
  Problem p;
  p.b = s.b, p.T = s.T, p.H = s.H, p.r = s.r, p.P = s.P;
  p.opt.chunk_size = s.S;
  p.opt.power_steps = s.K;
  p.k = normalised(rnd({s.b, s.T, s.H, s.r}, rng));
  p.q = normalised(rnd({s.b, s.T, s.H, s.r}, rng));
  p.v = rnd({s.b, s.T, s.H, s.P}, rng);
  p.gamma = Tensor::scalar(rng.uniform(0.6, 1.3), DType::F64);
  if (s.beta) p.beta = rand_uniform({s.b, s.T, s.H}, rng, s.beta_lo, s.beta_hi, DType::F64);
  if (s.coef) p.coef = rnd({s.H, s.K + 1}, rng, DType::F64, 0.7);
  if (s.prefix) {  // a context of ~70% of the positions with holes, so some lag pairs break
    std::vector<int64_t> m(s.b * s.T);
    for (auto& x : m) x = rng.uniform() < 0.7 ? 1 : 0;
    p.mask = Tensor::from_ints(m, {s.b, s.T}, DType::I32);
  }
  return p;
}

// β_t alternating between ~0.03 and ~3.
Tensor strongly_varying_beta(const Problem& p, Rng& rng) {
  std::vector<double> b(p.b * p.T * p.H);
  for (int64_t n = 0; n < p.b; ++n)
    for (int64_t t = 0; t < p.T; ++t)
      for (int64_t h = 0; h < p.H; ++h) b[(n * p.T + t) * p.H + h] = (t % 2 ? 3.0 : 0.03) * rng.uniform(0.8, 1.2);
  return Tensor::from_vector(b, {p.b, p.T, p.H}, DType::F64);
}

// The naive reference of ops/reference/koopman_fit.h on a Problem's tensors.
using NaiveResult = reference::KoopmanResult;
NaiveResult naive_koopman(const Problem& p) {
  auto values = [](const Tensor& t) { return t.defined() ? t.to_vector() : std::vector<double>(); };
  return reference::koopman_fit_direct(
      {p.b, p.T, p.H, p.r, p.P},
      {values(p.k), values(p.q), values(p.v), p.gamma.item(), values(p.beta), values(p.mask), values(p.coef)},
      {p.opt.chunk_size, p.opt.power_steps, p.opt.power_iters, p.opt.ridge});
}

Tensor run(const Problem& p) { return koopman_fit(p.k, p.q, p.v, p.gamma, p.beta, p.mask, p.coef, p.opt); }

Problem to_dtype(const Problem& p, DType dt) {
  Problem c = p;
  for (Tensor* t : {&c.k, &c.q, &c.v, &c.gamma, &c.beta, &c.coef})
    if (t->defined()) *t = t->to(dt);
  return c;
}

double max_of(const std::vector<double>& x) { return x.empty() ? 0.0 : *std::max_element(x.begin(), x.end()); }

std::string describe(const Spec& s) {
  return "r=" + std::to_string(s.r) + " P=" + std::to_string(s.P) + " T=" + std::to_string(s.T) +
         " S=" + std::to_string(s.S) + " K=" + std::to_string(s.K) + (s.prefix ? " prefix" : " chunk") +
         (s.beta ? " beta" : "") + (s.coef ? " coef" : "");
}

}  // namespace

// ---------------------------------------------------------------------------------
// 1. The op equals the naive reference in float64.
// ---------------------------------------------------------------------------------
TEST(KoopmanFit, MatchesNaiveReferenceF64) {
  PoisonGuard poison;
  Rng rng(11);
  std::vector<Spec> specs;
  for (bool prefix : {false, true})
    for (bool beta : {false, true})
      for (bool coef : {false, true}) {
        Spec s;
        s.prefix = prefix, s.beta = beta, s.coef = coef;
        specs.push_back(s);
      }
  for (int K : {0, 1, 3}) {
    Spec s;
    s.K = K, s.coef = K == 1, s.beta = true;
    specs.push_back(s);
  }
  {
    Spec s;  // r = 24
    s.b = 1, s.T = 100, s.H = 2, s.r = 24, s.P = 8, s.S = 32, s.beta = true, s.coef = true;
    specs.push_back(s);
    s.prefix = true, s.beta = false;
    specs.push_back(s);
  }
  {
    Spec s;  // r = 56
    s.b = 1, s.T = 150, s.H = 1, s.r = 56, s.P = 16, s.S = 64, s.coef = true;
    specs.push_back(s);
    s.prefix = true, s.beta = true, s.coef = false;
    specs.push_back(s);
  }
  for (const Spec& s : specs) {
    ASSERT_NE(s.T % s.S, 0);
    Problem p = make_problem(s, rng);
    NaiveResult ref = naive_koopman(p);
    EXPECT_LT(max_rel_diff(run(p).to_vector(), ref.y), 1e-10) << describe(s);
    EXPECT_LT(max_rel_diff(koopman_fit_sigma(p.k, p.beta, p.mask, p.opt).to_vector(), ref.sigma), 1e-10)
        << describe(s);
  }
}

TEST(KoopmanFit, MatchesNaiveReferenceWhereAlphaBelowOne) {
  PoisonGuard poison;
  Rng rng(12);
  for (bool prefix : {false, true})
    for (bool coef : {false, true}) {
      Spec s;
      s.prefix = prefix, s.coef = coef, s.beta = true;
      Problem p = make_problem(s, rng);
      // A weak write followed by a strong one makes the lag pair outweigh what G
      // holds of the earlier key: σ̂ > 1.
      p.beta = strongly_varying_beta(p, rng);
      NaiveResult ref = naive_koopman(p);
      EXPECT_GT(max_of(ref.sigma), 1.0) << "the inputs must reach σ̂ > 1 (α < 1) in some operator";
      EXPECT_LT(max_rel_diff(run(p).to_vector(), ref.y), 1e-10) << describe(s);
      EXPECT_LT(max_rel_diff(koopman_fit_sigma(p.k, p.beta, p.mask, p.opt).to_vector(), ref.sigma), 1e-10);
    }
}

TEST(KoopmanFit, ChunkZeroReadsNothingAndOutputIsCausal) {
  Rng rng(13);
  Spec s;
  s.beta = true, s.coef = true;
  Problem p = make_problem(s, rng);
  const auto y = run(p).to_vector();
  for (int64_t n = 0; n < p.b; ++n)
    for (int64_t t = 0; t < s.S; ++t)
      for (int64_t e = 0; e < p.H * p.P; ++e) EXPECT_EQ(y[(n * p.T + t) * p.H * p.P + e], 0.0);
  // Changing tokens of chunk 2 onwards leaves chunks 0..2 unchanged.
  Problem p2 = p;
  auto kv = p.k.to_vector(), vv = p.v.to_vector();
  for (int64_t n = 0; n < p.b; ++n)
    for (int64_t t = 2 * s.S; t < p.T; ++t) {
      for (int64_t e = 0; e < p.H * p.P; ++e) vv[(n * p.T + t) * p.H * p.P + e] += 1.0;
      for (int64_t e = 0; e < p.H * p.r; ++e) kv[(n * p.T + t) * p.H * p.r + e] *= -1.0;
    }
  p2.k = Tensor::from_vector(kv, p.k.shape(), DType::F64);
  p2.v = Tensor::from_vector(vv, p.v.shape(), DType::F64);
  const auto y2 = run(p2).to_vector();
  for (int64_t n = 0; n < p.b; ++n)
    for (int64_t t = 0; t < 3 * s.S; ++t)
      for (int64_t e = 0; e < p.H * p.P; ++e)
        EXPECT_EQ(y[(n * p.T + t) * p.H * p.P + e], y2[(n * p.T + t) * p.H * p.P + e]);
  EXPECT_GT(max_rel_diff(y2, y), 1e-3);  // and later chunks do change
}

// ---------------------------------------------------------------------------------
// 2. Gradients: float64 finite differences, on inputs with σ̂ < 1 (α ≡ 1).
// ---------------------------------------------------------------------------------
namespace {
void gradcheck_problem(const Problem& p, const std::string& label) {
  const auto sigma = koopman_fit_sigma(p.k, p.beta, p.mask, p.opt).to_vector();
  ASSERT_LT(max_of(sigma), 0.95) << label << ": the check needs α ≡ 1";
  const KoopmanOptions opt = p.opt;
  expect_gradcheck(
      [opt](const std::vector<Tensor>& in) {
        return std::vector<Tensor>{koopman_fit(in[0], in[1], in[2], in[3], in[4], in[5], in[6], opt)};
      },
      p.inputs(), {true, true, true, true, true, false, true},
      {label + ".k", label + ".q", label + ".v", label + ".gamma", label + ".beta", label + ".mask", label + ".coef"});
}
Problem small_sigma_problem(Spec s, Rng& rng) {
  for (int attempt = 0; attempt < 200; ++attempt) {
    Problem p = make_problem(s, rng);
    if (max_of(koopman_fit_sigma(p.k, p.beta, p.mask, p.opt).to_vector()) < 0.9) return p;
  }
  ADD_FAILURE() << "no inputs with σ̂ < 0.9 found";
  return make_problem(s, rng);
}
}  // namespace

TEST(KoopmanFit, GradcheckF64ChunkMode) {
  Rng rng(21);
  Spec s;  // chunks of 12 tokens in r = 4 and β ∈ [0.7, 1] keep σ̂ well below 1
  s.T = 40, s.S = 12, s.beta = true, s.beta_lo = 0.7, s.coef = true;
  gradcheck_problem(small_sigma_problem(s, rng), "chunk");
  s.coef = false, s.beta = false, s.K = 3;
  gradcheck_problem(small_sigma_problem(s, rng), "chunk_K3");
  s.K = 0, s.beta = true;
  gradcheck_problem(small_sigma_problem(s, rng), "chunk_K0");
}

TEST(KoopmanFit, GradcheckF64PrefixMode) {
  Rng rng(22);
  Spec s;
  s.T = 25, s.prefix = true, s.beta = true, s.beta_lo = 0.7, s.coef = true;
  gradcheck_problem(small_sigma_problem(s, rng), "prefix");
  s.beta = false, s.coef = false, s.K = 1, s.r = 6;
  gradcheck_problem(small_sigma_problem(s, rng), "prefix_K1");
}

TEST(KoopmanFit, RunnerExampleGradchecks) {
  const RunnerOp* op = find_runner_op("koopman_fit");
  ASSERT_NE(op, nullptr);
  EXPECT_EQ(op->not_differentiable, std::vector<std::string>{"mask"});
  Rng rng(23);
  OpAttrs attrs;
  NamedTensors in = op->example(rng, attrs);
  ASSERT_TRUE(in.count("beta") && in.count("coef"));
  Problem p;
  p.k = in["k"], p.q = in["q"], p.v = in["v"], p.gamma = in["gamma"], p.beta = in["beta"], p.coef = in["coef"];
  p.opt.chunk_size = static_cast<int64_t>(attrs.at("chunk_size"));
  p.opt.power_steps = static_cast<int>(attrs.at("power_steps"));
  p.opt.power_iters = static_cast<int>(attrs.at("power_iters"));
  p.opt.ridge = attrs.at("ridge");
  EXPECT_NE(p.k.size(1) % p.opt.chunk_size, 0);
  // The runner's forward is the op.
  NamedTensors out = op->forward(in, attrs);
  EXPECT_EQ(max_rel_diff(out.at("y"), run(p)), 0.0);
  const auto sigma = koopman_fit_sigma(p.k, p.beta, p.mask, p.opt).to_vector();
  ASSERT_LT(max_of(sigma), 0.95) << "the example must keep α ≡ 1";
  // Gradient check through op.forward (its one output is y).
  gradcheck_runner_forward(*op, in, attrs);
  // Integer and float masks give the same result.
  in["mask"] = Tensor::from_ints(std::vector<int64_t>(p.k.size(0) * p.k.size(1), 1), {p.k.size(0), p.k.size(1)});
  const Tensor y_int = op->forward(in, attrs).at("y");
  in["mask"] = Tensor::full({p.k.size(0), p.k.size(1)}, 1.0, DType::F64);
  EXPECT_EQ(max_rel_diff(op->forward(in, attrs).at("y"), y_int), 0.0);
}

// The shift property: with orthonormal keys, G⁻¹M maps each stored key to the next
// one, so the j-th filter term answers a query equal to key i with the value stored
// at i + j (scaled by (1+ε)^{-(j+1)} from the ridge), and with zero past the end.
TEST(KoopmanFit, ShiftPropertyWithOrthonormalKeys) {
  Rng rng(24);
  const int64_t r = 8, P = 5, n_ctx = 8, K = 3;
  // A random orthonormal basis (Gram-Schmidt).
  std::vector<std::vector<double>> basis;
  while ((int64_t)basis.size() < r) {
    std::vector<double> x(r);
    for (auto& e : x) e = rng.normal();
    for (const auto& u : basis) {
      double d = 0;
      for (int64_t i = 0; i < r; ++i) d += x[i] * u[i];
      for (int64_t i = 0; i < r; ++i) x[i] -= d * u[i];
    }
    double nx = 0;
    for (double e : x) nx += e * e;
    for (auto& e : x) e /= std::sqrt(nx);
    basis.push_back(x);
  }
  for (bool prefix : {false, true}) {
    // Context: positions 0..7 hold the keys; queries at 8..15 ask for key (t-8).
    const int64_t T = 2 * n_ctx;
    std::vector<double> k(T * r), q(T * r), v = rnd({1, T, 1, P}, rng).to_vector();
    for (int64_t t = 0; t < T; ++t)
      for (int64_t i = 0; i < r; ++i) {
        k[t * r + i] = basis[t % n_ctx][i];
        q[t * r + i] = basis[t % n_ctx][i];
      }
    KoopmanOptions opt;
    opt.chunk_size = n_ctx;
    opt.power_steps = K;
    Tensor mask;
    if (prefix) {
      std::vector<int64_t> m(T, 0);
      for (int64_t t = 0; t < n_ctx; ++t) m[t] = 1;
      mask = Tensor::from_ints(m, {1, T});
    }
    for (int64_t j = 0; j <= K; ++j) {
      std::vector<double> c(K + 1, 0.0);
      c[j] = 1.0;
      Tensor y = koopman_fit(Tensor::from_vector(k, {1, T, 1, r}, DType::F64),
                             Tensor::from_vector(q, {1, T, 1, r}, DType::F64),
                             Tensor::from_vector(v, {1, T, 1, P}, DType::F64), Tensor::scalar(1.0, DType::F64),
                             Tensor(), mask, Tensor::from_vector(c, {1, K + 1}, DType::F64), opt);
      const auto yv = y.to_vector();
      const double scale = std::pow(1.0 + opt.ridge, -double(j + 1));
      for (int64_t i = 0; i < n_ctx; ++i)
        for (int64_t a = 0; a < P; ++a) {
          const double expected = i + j < n_ctx ? scale * v[(i + j) * P + a] : 0.0;
          EXPECT_NEAR(yv[(n_ctx + i) * P + a], expected, 1e-12) << "j=" << j << " i=" << i << (prefix ? " prefix" : " chunk");
        }
    }
  }
}

// ---------------------------------------------------------------------------------
// 3. f32 against f64.
// ---------------------------------------------------------------------------------
TEST(KoopmanFit, F32MatchesF64) {
  Rng rng(31);
  for (bool prefix : {false, true}) {
    Spec s;
    s.b = 2, s.T = 200, s.H = 2, s.r = 24, s.P = 32, s.S = 64, s.prefix = prefix, s.beta = true, s.coef = true;
    Problem p = make_problem(s, rng);
    Problem p32 = to_dtype(p, DType::F32);
    for (Problem* pp : {&p, &p32})
      for (Tensor* t : {&pp->k, &pp->q, &pp->v, &pp->gamma, &pp->beta, &pp->coef}) t->set_requires_grad(true);
    Tensor y = run(p), y32 = run(p32);
    EXPECT_LT(max_rel_diff(y32.to_vector(), y.to_vector()), 1e-4) << describe(s);
    Tensor seed = rnd(y.shape(), rng);
    y.backward(seed);
    y32.backward(seed.to(DType::F32));
    const char* names[] = {"k", "q", "v", "gamma", "beta", "coef"};
    int i = 0;
    for (auto [a, b] : {std::pair{&p.k, &p32.k}, {&p.q, &p32.q}, {&p.v, &p32.v}, {&p.gamma, &p32.gamma},
                        {&p.beta, &p32.beta}, {&p.coef, &p32.coef}})
      EXPECT_LT(max_rel_diff(b->grad().to_vector(), a->grad().to_vector()), 1e-3) << names[i++] << " " << describe(s);
  }
}

// ---------------------------------------------------------------------------------
// 4. Streaming equals the chunked op; the state does not grow.
// ---------------------------------------------------------------------------------
namespace {
Tensor slice_token(const Tensor& x, int64_t t) {  // [b,T,H,...] -> [b,H,...] at t
  const int64_t b = x.size(0), T = x.size(1);
  const int64_t inner = x.numel() / (b * T);
  auto a = x.to_vector();
  std::vector<double> out(b * inner);
  for (int64_t n = 0; n < b; ++n)
    for (int64_t e = 0; e < inner; ++e) out[n * inner + e] = a[(n * T + t) * inner + e];
  Shape s = x.shape();
  s.erase(s.begin() + 1);
  return Tensor::from_vector(out, s, x.dtype());
}
void expect_stream_matches(const Problem& p, double tol, DType dt) {
  Problem pd = to_dtype(p, dt);
  const Tensor y = run(pd);
  KoopmanStream stream(p.b, p.H, p.r, p.P, dt, Device::CPU, p.opt);
  const int64_t bytes = stream.state_bytes();
  // Committed and running (G, M, Cᵀ), Rᵀ and the previous key, per head.
  const int64_t per_head = 2 * (2 * p.r * p.r + p.r * p.P) + p.r * p.P + p.r;
  EXPECT_EQ(bytes, p.b * p.H * per_head * (int64_t)dtype_size(dt));
  std::vector<double> ys(y.numel());
  const int64_t inner = p.H * p.P;
  for (int64_t t = 0; t < p.T; ++t) {
    Tensor yt = stream.step(slice_token(pd.k, t), slice_token(pd.q, t), slice_token(pd.v, t),
                            pd.beta.defined() ? slice_token(pd.beta, t) : Tensor(), pd.gamma, pd.coef);
    const auto a = yt.to_vector();
    for (int64_t n = 0; n < p.b; ++n)
      for (int64_t e = 0; e < inner; ++e) ys[(n * p.T + t) * inner + e] = a[n * inner + e];
    EXPECT_EQ(stream.state_bytes(), bytes);
  }
  EXPECT_EQ(stream.position(), p.T);
  EXPECT_LT(max_rel_diff(ys, y.to_vector()), tol);
}
}  // namespace

TEST(KoopmanFit, StreamingEqualsChunkedOp) {
  Rng rng(41);
  Spec s;
  s.b = 2, s.T = 45, s.H = 2, s.r = 6, s.P = 5, s.S = 8, s.beta = true, s.coef = true;
  expect_stream_matches(make_problem(s, rng), 1e-10, DType::F64);
  s.beta = false, s.coef = false, s.K = 1, s.beta_hi = 3.0;
  expect_stream_matches(make_problem(s, rng), 1e-10, DType::F64);
  s.beta = true, s.beta_lo = 0.1, s.beta_hi = 4.0;  // α < 1 in some operators
  expect_stream_matches(make_problem(s, rng), 1e-10, DType::F64);
  s.r = 24, s.P = 32, s.S = 16, s.T = 70;
  expect_stream_matches(make_problem(s, rng), 1e-10, DType::F64);
  // f32: both sides round; chunks longer than r keep G well conditioned.
  s.S = 32, s.T = 100, s.beta_lo = 0.5, s.beta_hi = 1.0;
  expect_stream_matches(make_problem(s, rng), 1e-4, DType::F32);
}

TEST(KoopmanFit, StreamStateSizeIsFixed) {
  KoopmanOptions opt;
  KoopmanStream stream(3, 4, 24, 32, DType::F32, Device::CPU, opt);
  // Committed (G, M, Cᵀ), running (G, M, Cᵀ), Rᵀ and the previous key, per head.
  const int64_t per_head = 2 * (24 * 24 + 24 * 24 + 24 * 32) + 24 * 32 + 24;
  EXPECT_EQ(stream.state_bytes(), 3 * 4 * per_head * 4);
}

// ---------------------------------------------------------------------------------
// 5. Ill-conditioned statistics stay finite; the Cholesky retry path.
// ---------------------------------------------------------------------------------
namespace {
bool all_finite(const std::vector<double>& x) {
  for (double e : x)
    if (!std::isfinite(e)) return false;
  return true;
}
}  // namespace

TEST(KoopmanFit, DegenerateKeysGiveFiniteOutputsAndGradients) {
  Rng rng(51);
  for (double ridge : {1e-3, 0.0})
    for (DType dt : {DType::F64, DType::F32})
      for (bool prefix : {false, true}) {
        Spec s;
        s.T = 64, s.S = 16, s.r = 8, s.prefix = prefix, s.beta = true, s.coef = true;
        Problem p = make_problem(s, rng);
        p.opt.ridge = ridge;
        // Chunks 0-1: all-zero keys; chunks 2-3: one key repeated.
        auto k = p.k.to_vector();
        const int64_t row = p.H * p.r;
        for (int64_t n = 0; n < p.b; ++n)
          for (int64_t t = 0; t < p.T; ++t)
            for (int64_t e = 0; e < row; ++e) {
              double& x = k[(n * p.T + t) * row + e];
              x = t < 2 * s.S ? 0.0 : k[(n * p.T + 2 * s.S) * row + e];
            }
        p.k = Tensor::from_vector(k, p.k.shape(), DType::F64);
        Problem pd = to_dtype(p, dt);
        for (Tensor* t : {&pd.k, &pd.q, &pd.v, &pd.gamma, &pd.beta, &pd.coef}) t->set_requires_grad(true);
        Tensor y = run(pd);
        const std::string label = std::string(dtype_name(dt)) + " ridge=" + std::to_string(ridge) + (prefix ? " prefix" : "");
        EXPECT_TRUE(all_finite(y.to_vector())) << label;
        y.backward(rnd(y.shape(), rng, dt));
        for (Tensor* t : {&pd.k, &pd.q, &pd.v, &pd.gamma, &pd.beta, &pd.coef})
          EXPECT_TRUE(all_finite(t->grad().to_vector())) << label;
      }
}

TEST(KoopmanFit, CholeskyRetryOnSingularStatistics) {
  PoisonGuard poison;
  Rng rng(52);
  for (bool prefix : {false, true}) {
    Spec s;
    s.r = 4, s.prefix = prefix, s.beta = true, s.coef = true;
    Problem p = make_problem(s, rng);
    p.opt.ridge = 0;
    // Keys with an exactly zero last coordinate: G is singular, the first Cholesky
    // meets a zero pivot and the op must use G + 1e-4·I.
    auto k = p.k.to_vector();
    for (size_t i = 0; i < k.size(); i += s.r) k[i + s.r - 1] = 0.0;
    p.k = normalised(Tensor::from_vector(k, p.k.shape(), DType::F64));
    NaiveResult ref = naive_koopman(p);
    const auto y = run(p).to_vector();
    EXPECT_TRUE(all_finite(y));
    EXPECT_GT(max_of(ref.y), 1e-3);
    EXPECT_LT(max_rel_diff(y, ref.y), 1e-10) << (prefix ? "prefix" : "chunk");
  }
  // All-zero keys, no ridge: every operator is the retry's 1e-4·I and reads C = 0.
  Spec s;
  Problem p = make_problem(s, rng);
  p.opt.ridge = 0;
  p.k = Tensor::zeros(p.k.shape(), DType::F64);
  const auto y = run(p).to_vector();
  for (double e : y) EXPECT_EQ(e, 0.0);
}

TEST(KoopmanFit, RejectsBadArguments) {
  Rng rng(53);
  Spec s;
  Problem p = make_problem(s, rng);
  auto expect_throw_with = [](auto fn, const std::string& needle) {
    try {
      fn();
      ADD_FAILURE() << "no exception; expected one naming " << needle;
    } catch (const std::runtime_error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("koopman_fit"), std::string::npos) << e.what();
    }
  };
  expect_throw_with([&] { koopman_fit(p.k, p.q.reshape({2, 37, 8}), p.v, p.gamma, {}, {}, {}, p.opt); }, "q");
  expect_throw_with([&] { koopman_fit(p.k, p.q, p.v.reshape({2, 37, 3, 2}), p.gamma, {}, {}, {}, p.opt); }, "v");
  expect_throw_with([&] { koopman_fit(p.k, p.q, p.v, Tensor::zeros({2}, DType::F64), {}, {}, {}, p.opt); }, "gamma");
  expect_throw_with([&] { koopman_fit(p.k, p.q, p.v, p.gamma, Tensor::zeros({2, 37}, DType::F64), {}, {}, p.opt); }, "beta");
  expect_throw_with([&] { koopman_fit(p.k, p.q, p.v, p.gamma, {}, Tensor::zeros({2, 36}, DType::I32), {}, p.opt); }, "mask");
  expect_throw_with([&] { koopman_fit(p.k, p.q, p.v, p.gamma, {}, Tensor::full({2, 37}, 2.0, DType::I32), {}, p.opt); }, "mask");
  expect_throw_with([&] { koopman_fit(p.k, p.q, p.v, p.gamma, {}, {}, Tensor::zeros({2, 2}, DType::F64), p.opt); }, "coef");
  expect_throw_with([&] { koopman_fit(p.k, p.q.to(DType::F32), p.v, p.gamma, {}, {}, {}, p.opt); }, "mixed");
  KoopmanOptions bad = p.opt;
  bad.chunk_size = 0;
  expect_throw_with([&] { koopman_fit(p.k, p.q, p.v, p.gamma, {}, {}, {}, bad); }, "chunk_size");
}

// ---------------------------------------------------------------------------------
// CUDA against CPU (skipped without a GPU).
// ---------------------------------------------------------------------------------
namespace {
void expect_cuda_matches_cpu(const Spec& s, uint64_t seed, double ridge = 1e-3, bool degenerate = false) {
  Rng rng(seed);
  Problem p = to_dtype(make_problem(s, rng), DType::F32);
  p.opt.ridge = ridge;
  if (degenerate) {  // first half zero keys, then one repeated key
    auto k = p.k.to_vector();
    const int64_t row = p.H * p.r;
    for (int64_t n = 0; n < p.b; ++n)
      for (int64_t t = 0; t < p.T; ++t)
        for (int64_t e = 0; e < row; ++e)
          k[(n * p.T + t) * row + e] = t < p.T / 2 ? 0.0 : k[(n * p.T + p.T / 2) * row + e];
    p.k = Tensor::from_vector(k, p.k.shape(), DType::F32);
  }
  Problem c = p;
  for (Tensor* t : {&c.k, &c.q, &c.v, &c.gamma, &c.beta, &c.mask, &c.coef})
    if (t->defined()) *t = t->to(Device::CUDA);
  for (Problem* pp : {&p, &c})
    for (Tensor* t : {&pp->k, &pp->q, &pp->v, &pp->gamma, &pp->beta, &pp->coef})
      if (t->defined()) t->set_requires_grad(true);
  Tensor y = run(p), yc = run(c);
  const auto ycv = yc.to(Device::CPU).to_vector();
  EXPECT_TRUE(all_finite(ycv)) << describe(s);
  if (!degenerate) {
    EXPECT_LT(max_rel_diff(ycv, y.to_vector()), 1e-4) << describe(s);
    EXPECT_LT(max_rel_diff(koopman_fit_sigma(c.k, c.beta, c.mask, c.opt).to_vector(),
                           koopman_fit_sigma(p.k, p.beta, p.mask, p.opt).to_vector()), 1e-5);
  }
  Tensor seed_t = rnd(y.shape(), rng, DType::F32);
  y.backward(seed_t);
  yc.backward(seed_t.to(Device::CUDA));
  const char* names[] = {"k", "q", "v", "gamma", "beta", "coef"};
  int i = 0;
  for (auto [a, b] : {std::pair{&p.k, &c.k}, {&p.q, &c.q}, {&p.v, &c.v}, {&p.gamma, &c.gamma}, {&p.beta, &c.beta},
                      {&p.coef, &c.coef}}) {
    const char* name = names[i++];
    if (!a->defined()) continue;
    const auto gc = b->grad().to(Device::CPU).to_vector();
    EXPECT_TRUE(all_finite(gc)) << name << " " << describe(s);
    if (!degenerate) EXPECT_LT(max_rel_diff(gc, a->grad().to_vector()), 1e-3) << name << " " << describe(s);
  }
}
}  // namespace

TEST(KoopmanFit, CudaMatchesCpu) {
  ECHO_REQUIRE_GPU();
  Spec s;
  s.b = 2, s.T = 150, s.H = 3, s.r = 24, s.P = 32, s.S = 64, s.beta = true, s.coef = true;
  expect_cuda_matches_cpu(s, 61);
  s.prefix = true;
  expect_cuda_matches_cpu(s, 62);
  s.prefix = false, s.beta = false, s.coef = false, s.K = 0;
  expect_cuda_matches_cpu(s, 63);
  // Large r: chunks of ≥ 2r tokens keep G well conditioned, so that f32 rounding
  // differences between the two backends stay small.
  s.r = 56, s.P = 64, s.K = 2, s.coef = true, s.S = 128, s.T = 300;
  expect_cuda_matches_cpu(s, 64);
  s.r = 64, s.P = 128, s.H = 1, s.beta = true;
  expect_cuda_matches_cpu(s, 65);
  s.r = 5, s.P = 3, s.S = 8, s.T = 37, s.K = 3, s.prefix = true;
  expect_cuda_matches_cpu(s, 66);
}

TEST(KoopmanFit, CudaDegenerateKeysStayFinite) {
  ECHO_REQUIRE_GPU();
  Spec s;
  s.b = 2, s.T = 128, s.H = 2, s.r = 16, s.P = 16, s.S = 32, s.beta = true, s.coef = true;
  for (double ridge : {1e-3, 0.0}) {
    expect_cuda_matches_cpu(s, 71, ridge, true);
    s.prefix = true;
    expect_cuda_matches_cpu(s, 72, ridge, true);
    s.prefix = false;
  }
}

TEST(KoopmanFit, CudaStreamMatchesCpuStream) {
  ECHO_REQUIRE_GPU();
  Rng rng(81);
  Spec s;
  s.b = 2, s.T = 40, s.H = 2, s.r = 24, s.P = 32, s.S = 8, s.beta = true, s.coef = true;
  Problem p = to_dtype(make_problem(s, rng), DType::F32);
  KoopmanStream cpu(p.b, p.H, p.r, p.P, DType::F32, Device::CPU, p.opt);
  KoopmanStream gpu(p.b, p.H, p.r, p.P, DType::F32, Device::CUDA, p.opt);
  EXPECT_EQ(cpu.state_bytes(), gpu.state_bytes());
  for (int64_t t = 0; t < p.T; ++t) {
    Tensor k = slice_token(p.k, t), q = slice_token(p.q, t), v = slice_token(p.v, t), b = slice_token(p.beta, t);
    Tensor y = cpu.step(k, q, v, b, p.gamma, p.coef);
    Tensor yc = gpu.step(k.to(Device::CUDA), q.to(Device::CUDA), v.to(Device::CUDA), b.to(Device::CUDA),
                         p.gamma.to(Device::CUDA), p.coef.to(Device::CUDA));
    EXPECT_LT(max_rel_diff(yc.to(Device::CPU).to_vector(), y.to_vector()), 1e-4) << "t=" << t;
  }
}
