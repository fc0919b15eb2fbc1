// `echo-lm experiment td0`: makes the central claim of Sridhar & Johansen,
// "Convergence of TD(0) under Polynomial Mixing with Nonlinear Function
// Approximation" (arXiv 2502.05706) measurable.
//
// Claim under test: for mixing exponent β > 1, Hölder exponent γ of the
// (generalised) gradient and step sizes α_t ∝ t^(−η), η ∈ (1/2, 1], vanilla
// semi-gradient TD(0) (no projection) satisfies with high probability
//     ‖θ_t − θ*‖ ≤ C t^(−β/2) + C' t^(−ηγ),
// from any initial state of the chain.
//
// The chain lives on {0, 1, 2, …, N}: from x it moves up with probability
//     p(x) = P(x, x+1) = ((x+s)/(x+s+1))^c,
// otherwise it resets to 0 (and N always resets: the truncation is part of the
// simulated chain, so the exact quantities below are exact for what is run).
// The stationary law is π(x) ∝ (s/(x+s))^c, the excursion length from 0 has
// tail P(τ > m) = (s/(m+s))^c, and the chain mixes in total variation like
// t^(−(c−1)): β = c − 1. Two controls share π and the transition law of the
// evaluated chain (hence θ*) but not its mixing: "geometric" draws the states
// x_t from a lazy independence sampler (keep x_t with probability `hold`, else
// a fresh draw from π; TV mixing hold^t) and the next state x'_t ~ P(x_t, ·);
// "iid" draws x_t ~ π independently and x'_t ~ P(x_t, ·).
//
// docs/experiments/td0.md derives the reference solutions and states what
// agrees with the claim and what does not.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace echo {

struct Td0Options {
  bool quick = false;
  uint64_t seed = 0;
  int threads = 0;             // 0: leave the OpenMP default
  std::string device = "auto"; // cpu | cuda | auto (cuda when built with CUDA and a GPU is present)

  std::vector<double> c_values{1.8, 2.5, 3.0, 4.0, 6.0};   // β = c − 1; c = 1.8 is the β < 1 control
  std::vector<double> eta_values{0.6, 0.75, 0.9, 1.0};
  std::vector<std::string> models{"linear", "tanh"};
  std::vector<std::string> starts{"zero", "far", "stationary"};  // Markov sampling, every start
  std::vector<std::string> controls{"geometric", "iid"};         // run from the zero start
  std::vector<std::string> tanh_starts{"zero"};                  // starts for the tanh model (cost)
  // Extra linear runs (Markov, zero start, η = 1 only) with these α₀: with
  // α₀λ_min < 1/2 classical theory predicts the slower rate t^(−α₀λ_min).
  std::vector<double> extra_alpha0_linear{0.5};

  int64_t runs_linear = 128, steps_linear = 1000000;
  int64_t runs_tanh = 64, steps_tanh = 1000000;
  int grid_points = 40;         // log-spaced measurement times in [1, T]
  double fit_from = 0.01;       // slopes are fitted on t ∈ [fit_from·T, T]

  double shift = 4.0;           // s
  double discount = 0.7;        // the MDP's discount (called γ_d to keep γ for Hölder)
  double feature_scale = 4.0;   // u(x) = x / (x + L)
  int64_t truncation = 200000;  // N
  int64_t far_start = 10000;    // x₀ of the "far" start
  double hold = 0.9;            // geometric control: P(keep the state)
  // α_t = α₀ / (t + t₀)^η. The linear model uses α₀ = alpha0_linear (instance-
  // independent: whitening pins λ_min(A_sym) = 1 − γ_d, so α₀λ_min = 0.6). For the
  // tanh model alpha0_tanh ≤ 0 means α₀ = 1/λ_min and t₀ = max(t0, (α₀ G)^(1/η)),
  // λ_min the smallest eigenvalue of the symmetric part of −∂g/∂θ at θ* and
  // G = E_π‖∇V_θ(x)‖² (the larger of its values at θ₀ and θ*), so that
  // α₀λ_min = 1 > 1/2 (the classical condition for the fastest rate at η = 1)
  // while the first single-sample steps, of size ≈ α_t‖∇V‖², stay below 1.
  double alpha0_linear = 2.0, alpha0_tanh = 0.0, t0 = 100.0;
  // One hidden unit: with 2 or more the expected-TD fixed points of this chain
  // are (near-)degenerate (λ_min ≈ 0), so ‖θ_t − θ*‖ has no rate to measure.
  int hidden = 1;

  void apply_quick();
};

namespace td0 {

// The truncated polynomially mixing chain and its exact stationary law.
struct PolyChain {
  double c = 0, s = 0;
  int64_t N = 0;
  std::vector<double> p_up;  // P(x, x+1), x = 0..N (p_up[N] = 0)
  std::vector<double> pi;    // stationary law, Σ = 1
  std::vector<double> cdf;   // cumulative π, cdf[N] = 1
};
PolyChain make_poly_chain(double c, double s, int64_t N);

double reward(int64_t x);                                // r(x) = cos(x / 2)
double feature_u(int64_t x, double scale);               // u(x) = x / (x + L) ∈ [0, 1)

// Linear TD: φ(x) = W ψ(x), ψ = (1, u, u²), W whitening under π (E_π φφᵀ = I).
constexpr int kLinearFeatures = 3;
struct LinearProblem {
  std::vector<double> whiten;      // W, 3×3 row-major
  std::vector<double> A, b;        // A = E_π[φ(φ − γ_d E[φ(x')|x])ᵀ], b = E_π[r φ]
  std::vector<double> theta_star;  // A⁻¹ b
  double lambda_min_sym = 0;       // extreme eigenvalues of (A + Aᵀ)/2
  double lambda_max_sym = 0;
};
LinearProblem make_linear_problem(const PolyChain& chain, double discount, double feature_scale);
void linear_features(int64_t x, const std::vector<double>& whiten, double scale, double* phi);

// Exact value function of the truncated chain, V = r + γ_d P V.
std::vector<double> value_function(const PolyChain& chain, double discount);

// Tanh model V_θ(x) = w₀ + Σ_j v_j tanh(a_j ũ + b_j) with the standardised
// input ũ = (u(x) − E_π u) / sd_π(u); θ = (w₀, v[H], a[H], b[H]). The
// reference θ* is the zero of the expected semi-gradient TD field
// g(θ) = E_π[δ_θ(x) ∇V_θ(x)] reached from θ₀: the expected-TD ODE
// dθ/dτ = g(θ), then Newton steps on the full truncation.
struct TanhInput {
  double mean = 0, scale = 1;  // ũ = (u − mean) / scale
  double operator()(int64_t x, double feature_scale) const { return (feature_u(x, feature_scale) - mean) / scale; }
};
TanhInput standardised_input(const PolyChain& chain, double feature_scale);

struct TanhProblem {
  int hidden = 0;
  TanhInput input;
  std::vector<double> theta0, theta_star;
  double field_norm = 0;        // ‖g(θ*)‖
  double lambda_min_sym = 0;    // extreme eigenvalues of −(J + Jᵀ)/2, J = ∂g/∂θ at θ*
  double lambda_max_sym = 0;
  double grad_sq_mean = 0;      // max over θ₀, θ* of E_π‖∇V_θ(x)‖²
  int ode_iterations = 0, newton_iterations = 0;
};
double tanh_value(const double* theta, int hidden, double u_tilde, double* grad /*may be null*/);
std::vector<double> expected_td_field(const PolyChain& chain, const std::vector<double>& theta, int hidden,
                                      double discount, double feature_scale, const TanhInput& input);
TanhProblem make_tanh_problem(const PolyChain& chain, double discount, double feature_scale, int hidden,
                              uint64_t init_seed);

enum class Sampling { Markov = 0, Geometric = 1, Iid = 2 };
enum class Model { Linear = 0, Tanh = 1 };

// One batch of independent runs of TD(0) from the same θ₀.
struct SimulationSpec {
  Model model = Model::Linear;
  Sampling sampling = Sampling::Markov;
  int64_t runs = 0, steps = 0;
  std::vector<int64_t> x0;           // per run
  std::vector<double> theta0, theta_star;
  std::vector<double> whiten;        // linear model only
  int hidden = 0;                    // tanh model only
  TanhInput input;                   // tanh model only
  double discount = 0, feature_scale = 0, hold = 0, alpha0 = 0, t0 = 0, eta = 0;
  std::vector<int64_t> grid;         // measurement times, increasing, in [0, steps]
  uint64_t seed = 0;
};
struct SimulationResult {
  std::vector<double> error;  // ‖θ_t − θ*‖, runs × grid (row-major)
  std::vector<double> theta;  // final θ, runs × P
  bool used_cuda = false;
};
SimulationResult simulate(const PolyChain& chain, const SimulationSpec& spec, bool use_cuda);

std::vector<int64_t> log_grid(int64_t T, int points);

}  // namespace td0

// The whole experiment: writes <out_dir>/td0_runs.csv (one row per
// configuration), td0_curves.csv (quantiles on the time grid), td0_problems.json
// (exact quantities per c) and returns the summary (also td0_summary.json).
nlohmann::json run_td0_experiment(Td0Options opt, const std::string& out_dir);

}  // namespace echo
