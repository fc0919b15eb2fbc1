#include "train/experiments/td0.h"

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include "autograd/device.h"
#include "autograd/parallel.h"
#include "autograd/random.h"
#include "train/experiments/common.h"

#if ECHO_HAVE_CUDA
#include "cuda/experiments/td0.cuh"
#endif

namespace echo {

using nlohmann::json;
using experiment::fit_line;
using experiment::mix_seed;
using experiment::quantile;

constexpr int kMaxParams = 64;  // = gpu::kTd0MaxParams; θ is a fixed-size local array in the chain loop

void Td0Options::apply_quick() {
  quick = true;
  c_values = {1.8, 3.0};
  eta_values = {0.75, 1.0};
  starts = {"zero", "far"};
  controls = {"geometric", "iid"};
  tanh_starts = {"zero"};
  runs_linear = 32;
  steps_linear = 20000;
  runs_tanh = 16;
  steps_tanh = 10000;
  grid_points = 24;
  truncation = 20000;
  far_start = 1000;
}

namespace td0 {

// ---- the chain and its exact quantities ---------------------------------------------

PolyChain make_poly_chain(double c, double s, int64_t N) {
  if (!(c > 1)) throw std::runtime_error("td0: the exponent c must be > 1 (π must be normalisable), got " + std::to_string(c));
  if (!(s > 0) || N < 1) throw std::runtime_error("td0: need s > 0 and N ≥ 1");
  PolyChain ch;
  ch.c = c;
  ch.s = s;
  ch.N = N;
  ch.p_up.resize(N + 1);
  ch.pi.resize(N + 1);
  ch.cdf.resize(N + 1);
  // p(x) = ((x+s)/(x+s+1))^c = exp(c · log1p(−1/(x+s+1))), accurate for large x.
  for (int64_t x = 0; x < N; ++x) ch.p_up[x] = std::exp(c * std::log1p(-1.0 / (double(x) + s + 1.0)));
  ch.p_up[N] = 0.0;  // the truncation: N always resets
  // Flow balance π(x+1) = π(x) p(x) telescopes to π(x) ∝ (s/(x+s))^c.
  double z = 0;
  for (int64_t x = 0; x <= N; ++x) z += ch.pi[x] = std::exp(c * (std::log(s) - std::log(double(x) + s)));
  double acc = 0;
  for (int64_t x = 0; x <= N; ++x) {
    ch.pi[x] /= z;
    acc += ch.pi[x];
    ch.cdf[x] = acc;
  }
  ch.cdf[N] = 1.0;
  return ch;
}

double reward(int64_t x) { return std::cos(0.5 * double(x)); }
double feature_u(int64_t x, double scale) { return double(x) / (double(x) + scale); }

void linear_features(int64_t x, const std::vector<double>& whiten, double scale, double* phi) {
  const double u = feature_u(x, scale);
  const double psi[kLinearFeatures] = {1.0, u, u * u};
  for (int i = 0; i < kLinearFeatures; ++i) {
    double s = 0;
    for (int j = 0; j < kLinearFeatures; ++j) s += whiten[i * kLinearFeatures + j] * psi[j];
    phi[i] = s;
  }
}

LinearProblem make_linear_problem(const PolyChain& ch, double discount, double scale) {
  constexpr int d = kLinearFeatures;
  LinearProblem lp;
  // Whitening: G = E_π[ψψᵀ] = L Lᵀ (Cholesky), W = L⁻¹, so E_π[φφᵀ] = I.
  std::vector<double> G(d * d, 0.0);
  for (int64_t x = 0; x <= ch.N; ++x) {
    double u = feature_u(x, scale), psi[d] = {1.0, u, u * u};
    for (int i = 0; i < d; ++i)
      for (int j = 0; j < d; ++j) G[i * d + j] += ch.pi[x] * psi[i] * psi[j];
  }
  std::vector<double> L(d * d, 0.0);
  for (int i = 0; i < d; ++i)
    for (int j = 0; j <= i; ++j) {
      double s = G[i * d + j];
      for (int k = 0; k < j; ++k) s -= L[i * d + k] * L[j * d + k];
      if (i == j) {
        if (!(s > 0)) throw std::runtime_error("td0: feature Gram matrix is not positive definite");
        L[i * d + i] = std::sqrt(s);
      } else {
        L[i * d + j] = s / L[j * d + j];
      }
    }
  lp.whiten.assign(d * d, 0.0);
  for (int col = 0; col < d; ++col)  // forward substitution L w = e_col
    for (int i = 0; i < d; ++i) {
      double s = i == col ? 1.0 : 0.0;
      for (int k = 0; k < i; ++k) s -= L[i * d + k] * lp.whiten[k * d + col];
      lp.whiten[i * d + col] = s / L[i * d + i];
    }
  // A = Σ_x π(x) φ(x) (φ(x) − γ_d [p(x) φ(x+1) + (1 − p(x)) φ(0)])ᵀ, b = Σ_x π(x) r(x) φ(x).
  lp.A.assign(d * d, 0.0);
  lp.b.assign(d, 0.0);
  double phi0[d], phi[d], phi_up[d];
  linear_features(0, lp.whiten, scale, phi0);
  for (int64_t x = 0; x <= ch.N; ++x) {
    linear_features(x, lp.whiten, scale, phi);
    linear_features(std::min(x + 1, ch.N), lp.whiten, scale, phi_up);  // weight p(N) = 0 when x = N
    for (int i = 0; i < d; ++i) {
      for (int j = 0; j < d; ++j) {
        double next = ch.p_up[x] * phi_up[j] + (1.0 - ch.p_up[x]) * phi0[j];
        lp.A[i * d + j] += ch.pi[x] * phi[i] * (phi[j] - discount * next);
      }
      lp.b[i] += ch.pi[x] * reward(x) * phi[i];
    }
  }
  lp.theta_star = experiment::solve_linear(lp.A, lp.b, d);
  std::vector<double> sym(d * d);
  for (int i = 0; i < d; ++i)
    for (int j = 0; j < d; ++j) sym[i * d + j] = 0.5 * (lp.A[i * d + j] + lp.A[j * d + i]);
  const auto eig = experiment::symmetric_eigenvalues(sym, d);
  lp.lambda_min_sym = eig.front();
  lp.lambda_max_sym = eig.back();
  return lp;
}

std::vector<double> value_function(const PolyChain& ch, double discount) {
  // V(x) = a(x) + b(x) V(0) by backward recursion from N (where p(N) = 0):
  // a(x) = r(x) + γ p(x) a(x+1), b(x) = γ p(x) b(x+1) + γ (1 − p(x)).
  std::vector<double> a(ch.N + 1), b(ch.N + 1);
  a[ch.N] = reward(ch.N);
  b[ch.N] = discount;
  for (int64_t x = ch.N - 1; x >= 0; --x) {
    a[x] = reward(x) + discount * ch.p_up[x] * a[x + 1];
    b[x] = discount * ch.p_up[x] * b[x + 1] + discount * (1.0 - ch.p_up[x]);
  }
  const double v0 = a[0] / (1.0 - b[0]);
  std::vector<double> v(ch.N + 1);
  for (int64_t x = 0; x <= ch.N; ++x) v[x] = a[x] + b[x] * v0;
  return v;
}

// ---- the tanh model ---------------------------------------------------------------

double tanh_value(const double* theta, int hidden, double ut, double* grad) {
  const double* v = theta + 1;
  const double* a = theta + 1 + hidden;
  const double* b = theta + 1 + 2 * hidden;
  double out = theta[0];
  if (grad) grad[0] = 1.0;
  for (int j = 0; j < hidden; ++j) {
    const double h = std::tanh(a[j] * ut + b[j]);
    out += v[j] * h;
    if (grad) {
      const double dh = v[j] * (1.0 - h * h);
      grad[1 + j] = h;
      grad[1 + hidden + j] = dh * ut;
      grad[1 + 2 * hidden + j] = dh;
    }
  }
  return out;
}

TanhInput standardised_input(const PolyChain& ch, double scale) {
  double m = 0, m2 = 0;
  for (int64_t x = 0; x <= ch.N; ++x) {
    const double u = feature_u(x, scale);
    m += ch.pi[x] * u;
    m2 += ch.pi[x] * u * u;
  }
  TanhInput in;
  in.mean = m;
  in.scale = std::sqrt(std::max(m2 - m * m, 1e-300));
  return in;
}

namespace {
int tanh_params(int hidden) { return 1 + 3 * hidden; }
double norm(const std::vector<double>& v) {
  double s = 0;
  for (double x : v) s += x * x;
  return std::sqrt(s);
}
}  // namespace

std::vector<double> expected_td_field(const PolyChain& ch, const std::vector<double>& theta, int hidden,
                                      double discount, double scale, const TanhInput& input) {
  const int P = tanh_params(hidden);
  if (int(theta.size()) != P) throw std::runtime_error("expected_td_field: θ has the wrong size");
  // g = Σ_x π(x) δ(x) ∇V(x), δ(x) = r(x) + γ_d [p(x) V(x+1) + (1 − p(x)) V(0)] − V(x).
  // One serial pass from N down to 0 (V(x+1) is known when x is reached); serial
  // on purpose: it is cheap, deterministic, and a parallel region per call
  // costs more than the work on a shared machine.
  std::vector<double> g(P, 0.0);
  double grad[kMaxParams];
  const double v0 = tanh_value(theta.data(), hidden, input(0, scale), nullptr);
  double v_up = 0;  // V(x+1)
  for (int64_t x = ch.N; x >= 0; --x) {
    const double vx = tanh_value(theta.data(), hidden, input(x, scale), grad);
    const double next = ch.p_up[x] * v_up + (1.0 - ch.p_up[x]) * v0;  // p_up[N] = 0
    const double w = ch.pi[x] * (reward(x) + discount * next - vx);
    for (int i = 0; i < P; ++i) g[i] += w * grad[i];
    v_up = vx;
  }
  return g;
}

namespace {
// J = ∂g/∂θ by central differences (g is smooth for the tanh model).
std::vector<double> field_jacobian(const PolyChain& ch, const std::vector<double>& theta, int hidden, double discount,
                                   double scale, const TanhInput& input) {
  const int P = int(theta.size());
  const double eps = 1e-6;
  std::vector<double> J(size_t(P) * P);
  for (int j = 0; j < P; ++j) {
    auto tp = theta, tm = theta;
    tp[j] += eps;
    tm[j] -= eps;
    auto gp = expected_td_field(ch, tp, hidden, discount, scale, input);
    auto gm = expected_td_field(ch, tm, hidden, discount, scale, input);
    for (int i = 0; i < P; ++i) J[size_t(i) * P + j] = (gp[i] - gm[i]) / (2 * eps);
  }
  return J;
}
}  // namespace

TanhProblem make_tanh_problem(const PolyChain& ch, double discount, double scale, int hidden, uint64_t init_seed) {
  const int P = tanh_params(hidden);
  if (hidden < 1 || P > kMaxParams) throw std::runtime_error("td0: tanh width must be in [1, 21]");
  TanhProblem tp;
  tp.hidden = hidden;
  tp.input = standardised_input(ch, scale);
  const TanhInput& in = tp.input;
  Rng rng(init_seed);
  tp.theta0.assign(P, 0.0);
  for (int j = 0; j < hidden; ++j) {
    tp.theta0[1 + j] = rng.normal() / std::sqrt(double(hidden));
    tp.theta0[1 + hidden + j] = rng.normal();
    tp.theta0[1 + 2 * hidden + j] = rng.normal();
  }
  // 1. Follow the expected-TD ODE dθ/dτ = g(θ) from θ₀ (the path the stochastic
  //    runs follow on average) on a shorter truncation, with Euler steps
  //    h = 1 / ((1 + γ_d) E_π‖∇V‖²), a bound on the field's Lipschitz constant.
  const PolyChain coarse = make_poly_chain(ch.c, ch.s, std::min<int64_t>(ch.N, 2000));
  std::vector<double> theta = tp.theta0;
  double h = 0;
  for (int it = 0; it < 20000; ++it) {
    if (it % 200 == 0) {
      double e = 0, grad[kMaxParams];
      for (int64_t x = 0; x <= coarse.N; ++x) {
        tanh_value(theta.data(), hidden, in(x, scale), grad);
        for (int i = 0; i < P; ++i) e += coarse.pi[x] * grad[i] * grad[i];
      }
      h = 1.0 / ((1.0 + discount) * std::max(e, 1e-12));
    }
    auto g = expected_td_field(coarse, theta, hidden, discount, scale, in);
    tp.ode_iterations = it + 1;
    if (norm(g) < 1e-7) break;
    for (int i = 0; i < P; ++i) theta[i] += h * g[i];
  }
  // 2. Newton on the full truncation (backtracking on ‖g‖).
  auto g = expected_td_field(ch, theta, hidden, discount, scale, in);
  for (int it = 0; it < 20 && norm(g) > 1e-13; ++it) {
    auto J = field_jacobian(ch, theta, hidden, discount, scale, in);
    std::vector<double> minus_g(P);
    for (int i = 0; i < P; ++i) minus_g[i] = -g[i];
    std::vector<double> step;
    try {
      step = experiment::solve_linear(J, minus_g, P);
    } catch (const std::exception&) {
      break;
    }
    double scale_step = 1.0;
    bool improved = false;
    for (int k = 0; k < 20; ++k, scale_step *= 0.5) {
      auto trial = theta;
      for (int i = 0; i < P; ++i) trial[i] += scale_step * step[i];
      auto gt = expected_td_field(ch, trial, hidden, discount, scale, in);
      if (norm(gt) < norm(g)) {
        theta = trial;
        g = gt;
        improved = true;
        break;
      }
    }
    tp.newton_iterations = it + 1;
    if (!improved) break;
  }
  tp.theta_star = theta;
  tp.field_norm = norm(g);
  auto J = field_jacobian(ch, theta, hidden, discount, scale, in);
  std::vector<double> sym(size_t(P) * P);
  for (int i = 0; i < P; ++i)
    for (int j = 0; j < P; ++j) sym[size_t(i) * P + j] = -0.5 * (J[size_t(i) * P + j] + J[size_t(j) * P + i]);
  const auto eig = experiment::symmetric_eigenvalues(sym, P);
  tp.lambda_min_sym = eig.front();
  tp.lambda_max_sym = eig.back();
  for (const auto* th : {&tp.theta0, &tp.theta_star}) {
    double e = 0, grad[kMaxParams];
    for (int64_t x = 0; x <= ch.N; ++x) {
      tanh_value(th->data(), hidden, in(x, scale), grad);
      for (int i = 0; i < P; ++i) e += ch.pi[x] * grad[i] * grad[i];
    }
    tp.grad_sq_mean = std::max(tp.grad_sq_mean, e);
  }
  return tp;
}

// ---- the chains ----------------------------------------------------------------------

std::vector<int64_t> log_grid(int64_t T, int points) {
  std::vector<int64_t> g{0};
  for (int i = 0; i < points; ++i)
    g.push_back(std::max<int64_t>(1, int64_t(std::llround(std::pow(double(T), double(i) / std::max(1, points - 1))))));
  g.push_back(T);
  std::sort(g.begin(), g.end());
  g.erase(std::unique(g.begin(), g.end()), g.end());
  return g;
}

namespace {

// Smallest x with cdf[x] > u: a draw from π given u ~ U[0, 1).
int64_t sample_stationary(const double* cdf, int64_t N, double u) {
  int64_t lo = 0, hi = N;
  while (lo < hi) {
    int64_t mid = (lo + hi) / 2;
    if (cdf[mid] > u) hi = mid;
    else lo = mid + 1;
  }
  return lo;
}

// One chain, all steps. cuda/experiments/td0.cu runs the same loop in one thread per chain.
void run_chain(const PolyChain& ch, const SimulationSpec& sp, int64_t run, Rng& rng, double* error_row,
               double* theta_out) {
  const int P = int(sp.theta0.size());
  const int G = int(sp.grid.size());
  double theta[kMaxParams], grad[kMaxParams], phi_next[kMaxParams];
  for (int i = 0; i < P; ++i) theta[i] = sp.theta0[i];
  int64_t x = sp.x0[run];
  int g = 0;
  auto record = [&](int64_t t) {
    while (g < G && sp.grid[g] == t) {
      double s = 0;
      for (int i = 0; i < P; ++i) s += (theta[i] - sp.theta_star[i]) * (theta[i] - sp.theta_star[i]);
      error_row[g++] = std::isnan(s) ? INFINITY : std::sqrt(s);
    }
  };
  record(0);
  for (int64_t t = 1; t <= sp.steps; ++t) {
    const double alpha = sp.alpha0 / std::pow(double(t) + sp.t0, sp.eta);
    // The transition x → x' of the evaluated chain.
    const int64_t x_next = rng.uniform() < ch.p_up[x] ? x + 1 : 0;
    // Semi-gradient TD(0): δ = r(x) + γ_d V_θ(x') − V_θ(x), θ ← θ + α δ ∇V_θ(x).
    double v_x, v_next;
    if (sp.model == Model::Linear) {
      linear_features(x, sp.whiten, sp.feature_scale, grad);
      linear_features(x_next, sp.whiten, sp.feature_scale, phi_next);
      v_x = v_next = 0;
      for (int i = 0; i < P; ++i) v_x += theta[i] * grad[i], v_next += theta[i] * phi_next[i];
    } else {
      v_x = tanh_value(theta, sp.hidden, sp.input(x, sp.feature_scale), grad);
      v_next = tanh_value(theta, sp.hidden, sp.input(x_next, sp.feature_scale), nullptr);
    }
    const double delta = reward(x) + sp.discount * v_next - v_x;
    for (int i = 0; i < P; ++i) theta[i] += alpha * delta * grad[i];
    // The next sampled state.
    if (sp.sampling == Sampling::Markov) {
      x = x_next;
    } else if (sp.sampling == Sampling::Geometric) {
      if (!(rng.uniform() < sp.hold)) x = sample_stationary(ch.cdf.data(), ch.N, rng.uniform());
    } else {
      x = sample_stationary(ch.cdf.data(), ch.N, rng.uniform());
    }
    record(t);
  }
  for (int i = 0; i < P; ++i) theta_out[i] = theta[i];
}

}  // namespace

SimulationResult simulate(const PolyChain& ch, const SimulationSpec& sp, bool use_cuda) {
  const int P = int(sp.theta0.size());
  const int G = int(sp.grid.size());
  if (P < 1 || P > kMaxParams || int(sp.theta_star.size()) != P)
    throw std::runtime_error("td0 simulate: θ₀ and θ* must have the same size in [1, 64]");
  if (sp.model == Model::Linear && (P != kLinearFeatures || sp.whiten.size() != size_t(P * P)))
    throw std::runtime_error("td0 simulate: the linear model needs 3 parameters and a 3×3 whitening");
  if (sp.model == Model::Tanh && P != tanh_params(sp.hidden))
    throw std::runtime_error("td0 simulate: the tanh model needs 1 + 3·hidden parameters");
  if (int64_t(sp.x0.size()) != sp.runs) throw std::runtime_error("td0 simulate: need one start per run");
  for (int64_t x : sp.x0)
    if (x < 0 || x > ch.N) throw std::runtime_error("td0 simulate: start state outside [0, N]");
  for (int i = 0; i < G; ++i)
    if (sp.grid[i] < 0 || sp.grid[i] > sp.steps || (i && sp.grid[i] <= sp.grid[i - 1]))
      throw std::runtime_error("td0 simulate: the grid must increase within [0, steps]");
  SimulationResult res;
  res.error.assign(size_t(sp.runs) * G, NAN);
  res.theta.assign(size_t(sp.runs) * P, NAN);
  // Run r draws from Rng(mix_seed(seed, r)); the GPU gets the same initial states.
  std::vector<uint64_t> states(size_t(sp.runs) * 4);
  for (int64_t r = 0; r < sp.runs; ++r) {
    auto s = Rng(mix_seed(sp.seed, uint64_t(r))).state();
    std::copy(s.begin(), s.end(), &states[size_t(r) * 4]);
  }
  if (use_cuda) {
#if ECHO_HAVE_CUDA
    gpu::td0_simulate(int(sp.model), int(sp.sampling), sp.runs, sp.steps, states.data(), sp.x0.data(),
                      sp.theta0.data(), sp.theta_star.data(), P, ch.p_up.data(), ch.cdf.data(), ch.N,
                      sp.model == Model::Linear ? sp.whiten.data() : nullptr, sp.hidden, sp.input.mean,
                      sp.input.scale, sp.discount,
                      sp.feature_scale, sp.hold, sp.alpha0, sp.t0, sp.eta, sp.grid.data(), G, res.error.data(),
                      res.theta.data());
    res.used_cuda = true;
    return res;
#else
    throw std::runtime_error("td0 simulate: built without CUDA");
#endif
  }
  parallel_for(sp.runs, [&](int64_t r) {
    Rng rng;
    std::array<uint64_t, 4> s;
    std::copy(&states[size_t(r) * 4], &states[size_t(r) * 4] + 4, s.begin());
    rng.set_state(s);
    run_chain(ch, sp, r, rng, &res.error[size_t(r) * G], &res.theta[size_t(r) * P]);
  });
  return res;
}

}  // namespace td0

// ---- the experiment ---------------------------------------------------------------------

namespace {

uint64_t config_seed(uint64_t seed, const std::string& model, const std::string& sampling, const std::string& start,
                     double c, double eta) {
  uint64_t h = 1469598103934665603ull;  // FNV-1a over the configuration's name
  for (char ch : model + "/" + sampling + "/" + start) h = (h ^ uint64_t(uint8_t(ch))) * 1099511628211ull;
  return mix_seed(seed, h, uint64_t(std::llround(c * 1000)), uint64_t(std::llround(eta * 1000)));
}

}  // namespace

json run_td0_experiment(Td0Options opt, const std::string& out_dir) {
  using namespace td0;
  if (opt.quick) opt.apply_quick();
  if (opt.threads > 0) set_num_threads(opt.threads);
  bool use_cuda = false;
  if (opt.device == "cuda") {
    if (!ECHO_HAVE_CUDA || !cuda_available())
      throw std::runtime_error("td0: --device cuda but no usable GPU: " +
                               (ECHO_HAVE_CUDA ? cuda_unavailable_reason() : std::string("built without CUDA")));
    use_cuda = true;
  } else if (opt.device == "auto") {
    use_cuda = ECHO_HAVE_CUDA && cuda_available();
  } else if (opt.device != "cpu") {
    throw std::runtime_error("td0: --device must be cpu, cuda or auto, got " + opt.device);
  }
  for (double eta : opt.eta_values)
    if (!(eta > 0.5 && eta <= 1.0)) throw std::runtime_error("td0: η must lie in (1/2, 1], got " + std::to_string(eta));
  std::filesystem::create_directories(out_dir);
  auto wall0 = std::chrono::steady_clock::now();

  // Exact quantities per c.
  struct PerC {
    PolyChain chain;
    LinearProblem linear;
    TanhProblem tanh;
    bool has_tanh = false;
  };
  std::vector<PerC> per_c;
  json problems = json::array();
  const bool want_tanh = std::find(opt.models.begin(), opt.models.end(), "tanh") != opt.models.end();
  for (double c : opt.c_values) {
    PerC pc;
    pc.chain = make_poly_chain(c, opt.shift, opt.truncation);
    pc.linear = make_linear_problem(pc.chain, opt.discount, opt.feature_scale);
    const auto value = value_function(pc.chain, opt.discount);
    // π-weighted norms: ‖V‖_π and the approximation errors of the TD fixed points.
    double v2 = 0, lin_err2 = 0, tanh_err2 = 0, tail = 0;
    double phi[kLinearFeatures];
    for (int64_t x = 0; x <= pc.chain.N; ++x) {
      linear_features(x, pc.linear.whiten, opt.feature_scale, phi);
      double vl = 0;
      for (int i = 0; i < kLinearFeatures; ++i) vl += pc.linear.theta_star[i] * phi[i];
      v2 += pc.chain.pi[x] * value[x] * value[x];
      lin_err2 += pc.chain.pi[x] * (vl - value[x]) * (vl - value[x]);
    }
    // Mass the untruncated chain puts beyond N: Σ_{x>N} (s/(x+s))^c / Σ_{x≥0} (s/(x+s))^c,
    // with the infinite sums approximated by integrals for the tail.
    {
      double head = 0;
      for (int64_t x = 0; x <= pc.chain.N; ++x) head += std::pow(opt.shift / (double(x) + opt.shift), c);
      double t = std::pow(opt.shift, c) * std::pow(double(pc.chain.N) + 0.5 + opt.shift, 1 - c) / (c - 1);
      tail = t / (head + t);
    }
    json pj = {{"c", c},
               {"beta", c - 1},
               {"N", pc.chain.N},
               {"pi0", pc.chain.pi[0]},
               {"truncated_mass", tail},
               {"value_norm", std::sqrt(v2)},
               {"linear", {{"theta_star", pc.linear.theta_star},
                           {"A", pc.linear.A},
                           {"b", pc.linear.b},
                           {"lambda_min_sym", pc.linear.lambda_min_sym},
                           {"lambda_max_sym", pc.linear.lambda_max_sym},
                           {"approx_error", std::sqrt(lin_err2)}}}};
    if (want_tanh) {
      pc.tanh = make_tanh_problem(pc.chain, opt.discount, opt.feature_scale, opt.hidden,
                                  mix_seed(opt.seed, 0x7A4, uint64_t(opt.hidden)));
      pc.has_tanh = true;
      for (int64_t x = 0; x <= pc.chain.N; ++x) {
        double vt = tanh_value(pc.tanh.theta_star.data(), opt.hidden, pc.tanh.input(x, opt.feature_scale), nullptr);
        tanh_err2 += pc.chain.pi[x] * (vt - value[x]) * (vt - value[x]);
      }
      pj["tanh"] = {{"theta0", pc.tanh.theta0},
                    {"input_mean", pc.tanh.input.mean},
                    {"input_scale", pc.tanh.input.scale},
                    {"theta_star", pc.tanh.theta_star},
                    {"field_norm_at_theta_star", pc.tanh.field_norm},
                    {"lambda_min_sym", pc.tanh.lambda_min_sym},
                    {"lambda_max_sym", pc.tanh.lambda_max_sym},
                    {"grad_sq_mean", pc.tanh.grad_sq_mean},
                    {"ode_iterations", pc.tanh.ode_iterations},
                    {"newton_iterations", pc.tanh.newton_iterations},
                    {"approx_error", std::sqrt(tanh_err2)}};
    }
    problems.push_back(pj);
    per_c.push_back(std::move(pc));
  }
  std::ofstream(out_dir + "/td0_problems.json") << problems.dump(2) << '\n';

  std::ofstream runs_csv(out_dir + "/td0_runs.csv"), curves_csv(out_dir + "/td0_curves.csv");
  runs_csv.precision(6);
  curves_csv.precision(6);
  runs_csv << "model,sampling,start,c,beta,eta,runs,steps,alpha0,t0,lambda_min,alpha0_lambda,err0_median,"
              "final_median,final_q90,final_mean_sq,diverged,slope_median,slope_q90,slope_mean_sq,r2_median,"
              "claim_norm_exponent,classical_norm_exponent,seconds,device\n";
  curves_csv << "model,sampling,start,c,eta,alpha0,t,median,q90,mean_sq\n";
  json rows = json::array();
  struct Plan {
    std::string sampling, start;
    double eta;
    double alpha0;  // < 0: the model's default
  };
  for (const auto& model : opt.models) {
    if (model != "linear" && model != "tanh") throw std::runtime_error("td0: model must be linear or tanh, got " + model);
    const bool linear = model == "linear";
    std::vector<Plan> plans;
    for (double eta : opt.eta_values) {
      for (const auto& s : linear ? opt.starts : opt.tanh_starts) plans.push_back({"markov", s, eta, -1});
      for (const auto& s : opt.controls) plans.push_back({s, "zero", eta, -1});
      if (linear && eta == 1.0)
        for (double a : opt.extra_alpha0_linear) plans.push_back({"markov", "zero", eta, a});
    }
    for (size_t ci = 0; ci < per_c.size(); ++ci)
      for (const auto& plan : plans) {
        const std::string& sampling = plan.sampling;
        const std::string& start = plan.start;
        const double eta = plan.eta;
          const PerC& pc = per_c[ci];
          const double c = pc.chain.c;
          auto t_start = std::chrono::steady_clock::now();
          SimulationSpec sp;
          sp.model = linear ? Model::Linear : Model::Tanh;
          if (sampling == "markov") sp.sampling = Sampling::Markov;
          else if (sampling == "geometric") sp.sampling = Sampling::Geometric;
          else if (sampling == "iid") sp.sampling = Sampling::Iid;
          else throw std::runtime_error("td0: sampling must be markov, geometric or iid, got " + sampling);
          sp.runs = linear ? opt.runs_linear : opt.runs_tanh;
          sp.steps = linear ? opt.steps_linear : opt.steps_tanh;
          sp.seed = config_seed(opt.seed, model, sampling,
                                plan.alpha0 > 0 ? start + "/a" + std::to_string(plan.alpha0) : start, c, eta);
          Rng start_rng(mix_seed(sp.seed, 0x57A27));
          for (int64_t r = 0; r < sp.runs; ++r) {
            if (start == "zero") sp.x0.push_back(0);
            else if (start == "far") sp.x0.push_back(std::min(opt.far_start, pc.chain.N));
            else if (start == "stationary")
              sp.x0.push_back(std::upper_bound(pc.chain.cdf.begin(), pc.chain.cdf.end(), start_rng.uniform()) -
                              pc.chain.cdf.begin());
            else throw std::runtime_error("td0: start must be zero, far or stationary, got " + start);
          }
          if (linear) {
            sp.theta0.assign(kLinearFeatures, 0.0);
            sp.theta_star = pc.linear.theta_star;
            sp.whiten = pc.linear.whiten;
          } else {
            sp.theta0 = pc.tanh.theta0;
            sp.theta_star = pc.tanh.theta_star;
            sp.hidden = opt.hidden;
            sp.input = pc.tanh.input;
          }
          sp.discount = opt.discount;
          sp.feature_scale = opt.feature_scale;
          sp.hold = opt.hold;
          sp.alpha0 = plan.alpha0 > 0 ? plan.alpha0 : linear ? opt.alpha0_linear : opt.alpha0_tanh;
          sp.t0 = opt.t0;
          if (!linear && sp.alpha0 <= 0) {
            const double lmin = pc.tanh.lambda_min_sym;
            sp.alpha0 = lmin > 1e-3 ? 1.0 / lmin : 2.0;  // a degenerate fixed point gets a plain α₀ = 2
            sp.t0 = std::max(opt.t0, std::pow(sp.alpha0 * pc.tanh.grad_sq_mean, 1.0 / eta));
          }
          sp.eta = eta;
          sp.grid = log_grid(sp.steps, opt.grid_points);
          const auto res = simulate(pc.chain, sp, use_cuda);
          const int G = int(sp.grid.size());

          std::vector<double> med(G), q90(G), msq(G);
          int64_t diverged = 0;
          for (int64_t r = 0; r < sp.runs; ++r) diverged += !std::isfinite(res.error[size_t(r) * G + G - 1]);
          for (int gi = 0; gi < G; ++gi) {
            std::vector<double> col(sp.runs);
            double s2 = 0;
            for (int64_t r = 0; r < sp.runs; ++r) {
              col[r] = res.error[size_t(r) * G + gi];
              s2 += col[r] * col[r];
            }
            med[gi] = quantile(col, 0.5);
            q90[gi] = quantile(col, 0.9);
            msq[gi] = s2 / double(sp.runs);
            curves_csv << model << ',' << sampling << ',' << start << ',' << c << ',' << eta << ',' << sp.alpha0
                       << ',' << sp.grid[gi]
                       << ',' << med[gi] << ',' << q90[gi] << ',' << msq[gi] << '\n';
          }
          // Log-log slopes on t ∈ [fit_from·T, T].
          std::vector<double> lx, lm, lq, ls;
          for (int gi = 0; gi < G; ++gi) {
            if (sp.grid[gi] < opt.fit_from * double(sp.steps) || sp.grid[gi] <= 0) continue;
            if (!(med[gi] > 0 && std::isfinite(q90[gi]) && std::isfinite(msq[gi]))) continue;
            lx.push_back(std::log(double(sp.grid[gi])));
            lm.push_back(std::log(med[gi]));
            lq.push_back(std::log(q90[gi]));
            ls.push_back(std::log(msq[gi]));
          }
          const auto fm = fit_line(lx, lm), fq = fit_line(lx, lq), fs = fit_line(lx, ls);
          const double beta = c - 1;
          const double lambda = linear ? pc.linear.lambda_min_sym : pc.tanh.lambda_min_sym;
          // The claim (Hölder γ = 1 for both models: their gradients are Lipschitz in θ).
          const double claim = beta > 1 ? std::min(beta / 2, eta) : NAN;
          // Classical stochastic approximation (i.i.d.-like noise): ‖θ_t − θ*‖ ~ sqrt(α_t) = t^(−η/2)
          // for η < 1; for η = 1, t^(−min(1/2, α₀λ)) with λ the local contraction rate.
          const double classical = eta < 1 ? eta / 2 : std::min(0.5, sp.alpha0 * lambda);
          const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();
          json row = {{"model", model},
                      {"sampling", sampling},
                      {"start", start},
                      {"c", c},
                      {"beta", beta},
                      {"eta", eta},
                      {"runs", sp.runs},
                      {"steps", sp.steps},
                      {"alpha0", sp.alpha0},
                      {"t0", sp.t0},
                      {"lambda_min", lambda},
                      {"alpha0_lambda", sp.alpha0 * lambda},
                      {"err0_median", med[0]},
                      {"final_median", med[G - 1]},
                      {"final_q90", q90[G - 1]},
                      {"final_mean_sq", msq[G - 1]},
                      {"diverged", diverged},
                      {"slope_median", fm.slope},
                      {"slope_q90", fq.slope},
                      {"slope_mean_sq", fs.slope},
                      {"r2_median", fm.r2},
                      {"claim_norm_exponent", claim},
                      {"classical_norm_exponent", classical},
                      {"seconds", secs},
                      {"device", res.used_cuda ? "cuda" : "cpu"}};
          rows.push_back(row);
          const std::vector<std::string> cols{"model", "sampling", "start", "c", "beta", "eta", "runs", "steps",
                                              "alpha0", "t0", "lambda_min", "alpha0_lambda", "err0_median",
                                              "final_median", "final_q90", "final_mean_sq", "diverged",
                                              "slope_median", "slope_q90", "slope_mean_sq", "r2_median",
                                              "claim_norm_exponent", "classical_norm_exponent", "seconds", "device"};
          for (size_t k = 0; k < cols.size(); ++k) {
            const auto& v = row[cols[k]];
            if (v.is_string()) runs_csv << v.get<std::string>();
            else if (v.is_number_float()) runs_csv << v.get<double>();
            else runs_csv << v.dump();
            runs_csv << (k + 1 < cols.size() ? ',' : '\n');
          }
          runs_csv.flush();
          curves_csv.flush();
        }
  }

  json summary;
  summary["experiment"] = "td0";
  summary["paper"] = "arXiv 2502.05706";
  summary["quick"] = opt.quick;
  summary["seed"] = opt.seed;
  summary["device"] = use_cuda ? "cuda" : "cpu";
  summary["options"] = {{"c_values", opt.c_values},        {"eta_values", opt.eta_values},
                        {"models", opt.models},            {"starts", opt.starts},
                        {"controls", opt.controls},        {"tanh_starts", opt.tanh_starts},
                        {"runs_linear", opt.runs_linear},  {"steps_linear", opt.steps_linear},
                        {"runs_tanh", opt.runs_tanh},      {"steps_tanh", opt.steps_tanh},
                        {"grid_points", opt.grid_points},  {"fit_from", opt.fit_from},
                        {"shift", opt.shift},              {"discount", opt.discount},
                        {"feature_scale", opt.feature_scale}, {"truncation", opt.truncation},
                        {"far_start", opt.far_start},      {"hold", opt.hold},
                        {"alpha0_linear", opt.alpha0_linear}, {"alpha0_tanh", opt.alpha0_tanh},
                        {"t0", opt.t0},                    {"hidden", opt.hidden},
                        {"extra_alpha0_linear", opt.extra_alpha0_linear}};
  summary["problems"] = problems;
  summary["rows"] = rows;
  summary["threads"] = num_threads();
  summary["seconds"] = std::chrono::duration<double>(std::chrono::steady_clock::now() - wall0).count();
  summary["files"] = {"td0_runs.csv", "td0_curves.csv", "td0_problems.json", "td0_summary.json"};
  std::ofstream(out_dir + "/td0_summary.json") << summary.dump(2) << '\n';
  return summary;
}

}  // namespace echo
