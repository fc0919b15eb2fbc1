// Tests of the two theory experiments (train/experiments/adam_regions.*,
// train/experiments/td0.*): the building blocks on hand-made cases, the exact
// reference quantities of the TD(0) chain, and the quick modes' outputs.
#include <cmath>
#include <filesystem>
#include <fstream>
#include <string>

#include "test_util.h"
#include "train/experiments/adam_regions.h"
#include "train/experiments/common.h"
#include "train/experiments/td0.h"
#include "train/train_util.h"

using namespace echo;
using nlohmann::json;

namespace {

std::string temp_dir(const std::string& name) {
  auto dir = std::filesystem::temp_directory_path() / ("echo_test_experiments_" + name);
  std::filesystem::remove_all(dir);
  return dir.string();
}

int64_t count_lines(const std::string& path) {
  std::ifstream f(path);
  int64_t n = 0;
  std::string line;
  while (std::getline(f, line)) ++n;
  return n;
}

}  // namespace

// ---- adam-regions building blocks --------------------------------------------------

TEST(AdamRegions, PatternFlipsCountHammingDistance) {
  std::vector<uint8_t> a{1, 0, 1, 1, 0, 0}, b{1, 1, 0, 1, 0, 1};
  EXPECT_EQ(count_pattern_flips(a, b), 3);
  EXPECT_EQ(count_pattern_flips(a, a), 0);
  EXPECT_THROW(count_pattern_flips(a, std::vector<uint8_t>(5)), std::runtime_error);
}

TEST(AdamRegions, MarginCrossingsNeedBothSidesOfTheBand) {
  const double tau = 0.01;
  MarginTracker m({-1.0, 0.005, 1.0, -0.5}, std::vector<double>(4, tau));
  // entry 0 crosses −→+; entry 1 leaves the band for the first time (no count);
  // entry 2 only enters the band; entry 3 stays.
  EXPECT_EQ(m.update({1.0, 0.02, 0.005, -0.5}), 1);
  // Now every entry ends on the other side of its last side: 4 crossings.
  EXPECT_EQ(m.update({-1.0, -0.02, -0.02, 0.5}), 4);
  // Jitter inside (−τ, τ) never counts, however often the sign changes.
  MarginTracker j({0.5 * tau}, {tau});
  for (int i = 0; i < 10; ++i) EXPECT_EQ(j.update({(i % 2 ? 1 : -1) * 0.9 * tau}), 0);
  EXPECT_EQ(j.update({tau}), 0);   // first exit sets the side
  EXPECT_EQ(j.update({-tau}), 1);  // reaching exactly −τ counts
  EXPECT_THROW(j.update({1.0, 2.0}), std::runtime_error);
}

TEST(AdamRegions, EffectiveDimensionOfAConstructedLowRankMatrix) {
  // M = Σ_i s_i u_i v_iᵀ with orthonormal u (rows = 40) and v (cols = 120), s = (10, 3, 1):
  // σ² = (100, 9, 1), Σ = 110, so k90 = 1 (100/110 ≥ 0.9), k99 = 2 (109/110 ≥ 0.99),
  // participation ratio 110² / (100² + 9² + 1²).
  const int rows = 40, cols = 120, r = 3;
  const double s[r] = {10, 3, 1};
  Rng rng(7);
  auto orthonormal = [&](int n) {
    std::vector<std::vector<double>> q;
    for (int k = 0; k < r; ++k) {
      std::vector<double> v(n);
      for (auto& x : v) x = rng.normal();
      for (const auto& p : q) {
        double d = 0;
        for (int i = 0; i < n; ++i) d += v[i] * p[i];
        for (int i = 0; i < n; ++i) v[i] -= d * p[i];
      }
      double nn = 0;
      for (double x : v) nn += x * x;
      for (auto& x : v) x /= std::sqrt(nn);
      q.push_back(v);
    }
    return q;
  };
  auto u = orthonormal(rows), v = orthonormal(cols);
  std::vector<double> m(size_t(rows) * cols, 0.0);
  for (int k = 0; k < r; ++k)
    for (int i = 0; i < rows; ++i)
      for (int j = 0; j < cols; ++j) m[size_t(i) * cols + j] += s[k] * u[k][i] * v[k][j];
  auto d = effective_dimension(m, rows, cols);
  EXPECT_EQ(d.k90, 1);
  EXPECT_EQ(d.k99, 2);
  EXPECT_NEAR(d.participation_ratio, 110.0 * 110.0 / (10000.0 + 81.0 + 1.0), 1e-10);
  ASSERT_EQ(d.sigma_sq.size(), size_t(rows));
  EXPECT_NEAR(d.sigma_sq[0], 100, 1e-9);
  EXPECT_NEAR(d.sigma_sq[1], 9, 1e-9);
  EXPECT_NEAR(d.sigma_sq[2], 1, 1e-9);
  EXPECT_LT(d.sigma_sq[3], 1e-9);
  // Rank one: everything is one direction.
  std::vector<double> one(size_t(rows) * cols);
  for (int i = 0; i < rows; ++i)
    for (int j = 0; j < cols; ++j) one[size_t(i) * cols + j] = u[0][i] * v[1][j];
  auto d1 = effective_dimension(one, rows, cols);
  EXPECT_EQ(d1.k90, 1);
  EXPECT_EQ(d1.k99, 1);
  EXPECT_NEAR(d1.participation_ratio, 1.0, 1e-9);
  EXPECT_THROW(effective_dimension(one, rows + 1, cols), std::runtime_error);
}

TEST(AdamRegions, SingleRunIsReproducibleAndSane) {
  AdamRegionsOptions opt;
  opt.apply_quick();
  AdamRegionsRun run;
  run.samples = 128;
  run.width = 16;
  run.depth = 2;
  run.latent = 4;
  json a = run_adam_regions_single(opt, run, nullptr);
  json b = run_adam_regions_single(opt, run, nullptr);
  a.erase("seconds");
  b.erase("seconds");
  EXPECT_EQ(a, b) << "same options and run must give the same numbers";
  opt.seed = 1;
  json c = run_adam_regions_single(opt, run, nullptr);
  EXPECT_NE(a["train_loss"], c["train_loss"]);
  EXPECT_LT(a["train_loss"].get<double>(), 0.5 * a["train_loss_init"].get<double>());
}

TEST(AdamRegions, QuickModeWritesWellFormedOutputs) {
  AdamRegionsOptions opt;
  opt.quick = true;
  const std::string dir = temp_dir("adam");
  json s = run_adam_regions_experiment(opt, dir);
  for (const char* f : {"runs.jsonl", "summary.csv", "curves.csv", "summary.json"})
    EXPECT_TRUE(std::filesystem::exists(dir + "/" + f)) << f;
  // Quick grid: configurations base, n=128, H=16, k=2, k=8, L=1 (the base point is
  // shared by all sweeps), two optimizers, one replicate, plus long runs (cosine
  // and constant learning rate) for each optimizer.
  const int64_t runs = s["runs"].get<int64_t>();
  EXPECT_EQ(runs, 6 * 2 + 2 * 2);
  EXPECT_EQ(count_lines(dir + "/runs.jsonl"), runs);
  EXPECT_EQ(count_lines(dir + "/summary.csv"), runs + 1);
  EXPECT_GT(count_lines(dir + "/curves.csv"), runs * 10);
  std::ifstream in(dir + "/runs.jsonl");
  std::string line;
  while (std::getline(in, line)) {
    json r = json::parse(line);
    const std::string id = r["id"];
    const int64_t T = r["steps"];
    EXPECT_TRUE(std::isfinite(r["train_loss"].get<double>())) << id;
    EXPECT_TRUE(std::isfinite(r["gap"].get<double>())) << id;
    EXPECT_LT(r["train_loss"].get<double>(), r["train_loss_init"].get<double>()) << id;
    if (r["schedule"] == "cosine")  // the last steps have lr ≈ 0, so the patterns freeze before T
      EXPECT_LT(r["phases"]["lr_at_freeze_over_peak"].get<double>(), 1.0) << id;
    // A crossing needs at least one sign flip since the unit last left the band.
    EXPECT_LE(r["total_crossings"].get<int64_t>(), r["total_flips"].get<int64_t>()) << id;
    EXPECT_GE(r["distinct_patterns"].get<int64_t>(), 1) << id;
    EXPECT_LE(r["distinct_patterns"].get<int64_t>(), T + 1) << id;
    EXPECT_GE(r["distinct_patterns_per_sample"].get<double>(), 1.0) << id;
    EXPECT_LE(r["freeze_step"].get<int64_t>(), T) << id;
    EXPECT_LE(r["freeze_step"].get<int64_t>(), r["flip_freeze_step"].get<int64_t>()) << id;
    EXPECT_GE(r["deff_k90"].get<int>(), 1) << id;
    EXPECT_LE(r["deff_k90"].get<int>(), r["deff_k99"].get<int>()) << id;
    EXPECT_LE(r["deff_k99"].get<int>(), r["deff_rows"].get<int>()) << id;
    EXPECT_GE(r["deff_pr"].get<double>(), 1.0 - 1e-9) << id;
  }
  EXPECT_FALSE(s["table"].empty());
  EXPECT_TRUE(s["slopes"].contains("samples/adam/total_crossings"));
  EXPECT_TRUE(s["vs_deff"].contains("adam"));
}

// ---- td0: the chain and the exact quantities -----------------------------------------

TEST(Td0, StationaryLawSumsToOneAndIsStationary) {
  for (double c : {1.8, 3.0, 6.0}) {
    const auto ch = td0::make_poly_chain(c, 4.0, 5000);
    double total = 0;
    for (double p : ch.pi) total += p;
    EXPECT_NEAR(total, 1.0, 1e-12) << "c=" << c;
    EXPECT_DOUBLE_EQ(ch.cdf.back(), 1.0);
    // (πP)(x+1) = π(x) p(x), (πP)(0) = Σ_x π(x) (1 − p(x)).
    double back_to_zero = 0, worst = 0;
    for (int64_t x = 0; x <= ch.N; ++x) {
      back_to_zero += ch.pi[x] * (1 - ch.p_up[x]);
      if (x < ch.N) worst = std::max(worst, std::fabs(ch.pi[x] * ch.p_up[x] - ch.pi[x + 1]) / ch.pi[x + 1]);
    }
    worst = std::max(worst, std::fabs(back_to_zero - ch.pi[0]) / ch.pi[0]);
    EXPECT_LT(worst, 1e-12) << "c=" << c;
    // Closed form π(x)/π(0) = (s/(x+s))^c and p(x) = ((x+s)/(x+s+1))^c.
    EXPECT_NEAR(ch.pi[10] / ch.pi[0], std::pow(4.0 / 14.0, c), 1e-13);
    EXPECT_NEAR(ch.p_up[10], std::pow(14.0 / 15.0, c), 1e-14);
    EXPECT_EQ(ch.p_up[ch.N], 0.0);
  }
  EXPECT_THROW(td0::make_poly_chain(1.0, 4.0, 100), std::runtime_error);
}

TEST(Td0, ExactLinearFixedPointSolvesTheTdEquations) {
  const double discount = 0.7, scale = 4.0;
  const auto ch = td0::make_poly_chain(2.5, 4.0, 20000);
  const auto lp = td0::make_linear_problem(ch, discount, scale);
  const int d = td0::kLinearFeatures;
  // A θ* = b.
  for (int i = 0; i < d; ++i) {
    double s = 0;
    for (int j = 0; j < d; ++j) s += lp.A[i * d + j] * lp.theta_star[j];
    EXPECT_NEAR(s, lp.b[i], 1e-13);
  }
  // Whitened features: E_π[φφᵀ] = I.
  double gram[d][d] = {};
  double phi[d];
  for (int64_t x = 0; x <= ch.N; ++x) {
    td0::linear_features(x, lp.whiten, scale, phi);
    for (int i = 0; i < d; ++i)
      for (int j = 0; j < d; ++j) gram[i][j] += ch.pi[x] * phi[i] * phi[j];
  }
  for (int i = 0; i < d; ++i)
    for (int j = 0; j < d; ++j) EXPECT_NEAR(gram[i][j], i == j ? 1.0 : 0.0, 1e-10);
  // Independent path: the TD fixed point in the raw features ψ = (1, u, u²),
  // E_π[(r + γ_d ψ(x')ᵀw − ψ(x)ᵀw) ψ(x)] = 0, solved directly; it must be the same
  // value function: w = Wᵀ θ*.
  std::vector<double> A(d * d, 0.0), b(d, 0.0);
  for (int64_t x = 0; x <= ch.N; ++x) {
    auto psi = [&](int64_t y) {
      double u = double(y) / (double(y) + scale);
      return std::vector<double>{1.0, u, u * u};
    };
    auto px = psi(x), p0 = psi(0), pu = psi(std::min(x + 1, ch.N));
    for (int i = 0; i < d; ++i) {
      for (int j = 0; j < d; ++j)
        A[i * d + j] += ch.pi[x] * px[i] * (px[j] - discount * (ch.p_up[x] * pu[j] + (1 - ch.p_up[x]) * p0[j]));
      b[i] += ch.pi[x] * std::cos(0.5 * double(x)) * px[i];
    }
  }
  auto w = experiment::solve_linear(A, b, d);
  for (int j = 0; j < d; ++j) {
    double s = 0;
    for (int i = 0; i < d; ++i) s += lp.whiten[i * d + j] * lp.theta_star[i];
    EXPECT_NEAR(s, w[j], 1e-8 * (1 + std::fabs(w[j])));
  }
  // Whitening pins the smallest eigenvalue of sym(A) at 1 − γ_d (constant functions).
  EXPECT_NEAR(lp.lambda_min_sym, 1 - discount, 1e-10);
}

TEST(Td0, ValueFunctionSatisfiesBellman) {
  const double discount = 0.7;
  const auto ch = td0::make_poly_chain(3.0, 4.0, 3000);
  const auto v = td0::value_function(ch, discount);
  double worst = 0;
  for (int64_t x = 0; x <= ch.N; ++x) {
    double next = (x < ch.N ? ch.p_up[x] * v[x + 1] : 0.0) + (1 - ch.p_up[x]) * v[0];
    worst = std::max(worst, std::fabs(v[x] - td0::reward(x) - discount * next));
  }
  EXPECT_LT(worst, 1e-12);
}

TEST(Td0, TanhGradientMatchesFiniteDifferencesAndReferenceIsAFixedPoint) {
  const int hidden = 2;
  std::vector<double> theta{0.3, -0.7, 1.1, 0.4, -1.3, 0.2, 0.9};
  std::vector<double> grad(theta.size());
  const double ut = 0.37;
  td0::tanh_value(theta.data(), hidden, ut, grad.data());
  for (size_t i = 0; i < theta.size(); ++i) {
    auto tp = theta, tm = theta;
    tp[i] += 1e-6;
    tm[i] -= 1e-6;
    double fd = (td0::tanh_value(tp.data(), hidden, ut, nullptr) - td0::tanh_value(tm.data(), hidden, ut, nullptr)) / 2e-6;
    EXPECT_NEAR(grad[i], fd, 1e-8) << "parameter " << i;
  }
  const auto ch = td0::make_poly_chain(3.0, 4.0, 20000);
  const auto tp = td0::make_tanh_problem(ch, 0.7, 4.0, 1, 11);
  auto g = td0::expected_td_field(ch, tp.theta_star, 1, 0.7, 4.0, tp.input);
  double gn = 0;
  for (double x : g) gn += x * x;
  EXPECT_LT(std::sqrt(gn), 1e-10);
  EXPECT_GT(tp.lambda_min_sym, 0.0) << "the one-unit reference should be locally contracting";
  auto g0 = td0::expected_td_field(ch, tp.theta0, 1, 0.7, 4.0, tp.input);
  double g0n = 0;
  for (double x : g0) g0n += x * x;
  EXPECT_GT(std::sqrt(g0n), 1e-3) << "θ₀ should not already be the fixed point";
}

TEST(Td0, LogGridIsIncreasingFromZeroToT) {
  auto g = td0::log_grid(100000, 30);
  EXPECT_EQ(g.front(), 0);
  EXPECT_EQ(g.back(), 100000);
  for (size_t i = 1; i < g.size(); ++i) EXPECT_LT(g[i - 1], g[i]);
  EXPECT_GE(g.size(), 25u);
}

namespace {
td0::SimulationSpec linear_spec(const td0::PolyChain& ch, const td0::LinearProblem& lp, td0::Sampling sampling,
                                int64_t runs, int64_t steps, double eta, uint64_t seed) {
  td0::SimulationSpec sp;
  sp.model = td0::Model::Linear;
  sp.sampling = sampling;
  sp.runs = runs;
  sp.steps = steps;
  sp.x0.assign(runs, 0);
  sp.theta0.assign(td0::kLinearFeatures, 0.0);
  sp.theta_star = lp.theta_star;
  sp.whiten = lp.whiten;
  sp.discount = 0.7;
  sp.feature_scale = 4.0;
  sp.hold = 0.9;
  sp.alpha0 = 2.0;
  sp.t0 = 100;
  sp.eta = eta;
  sp.grid = td0::log_grid(steps, 20);
  sp.seed = seed;
  return sp;
}
}  // namespace

TEST(Td0, LinearIidTdConvergesTowardThetaStar) {
  const auto ch = td0::make_poly_chain(3.0, 4.0, 20000);
  const auto lp = td0::make_linear_problem(ch, 0.7, 4.0);
  auto sp = linear_spec(ch, lp, td0::Sampling::Iid, 32, 50000, 1.0, 5);
  auto res = td0::simulate(ch, sp, false);
  const int G = int(sp.grid.size());
  std::vector<double> first(sp.runs), last(sp.runs), mid(sp.runs);
  int gm = 0;
  while (sp.grid[gm] < 500) ++gm;
  for (int64_t r = 0; r < sp.runs; ++r) {
    first[r] = res.error[r * G];
    mid[r] = res.error[r * G + gm];
    last[r] = res.error[r * G + G - 1];
  }
  const double e0 = experiment::quantile(first, 0.5), e_mid = experiment::quantile(mid, 0.5),
               e_end = experiment::quantile(last, 0.5);
  EXPECT_NEAR(e0, std::sqrt(lp.theta_star[0] * lp.theta_star[0] + lp.theta_star[1] * lp.theta_star[1] +
                            lp.theta_star[2] * lp.theta_star[2]),
              1e-12);
  EXPECT_LT(e_end, 0.05 * e0);
  // With η = 1 and α₀λ_min = 0.6 > 1/2 the error falls like t^(−1/2): from t ≈ 500 to
  // 50000 (100×) that is ≈ 10×; accept anything between 4× and 30×.
  EXPECT_GT(e_mid / e_end, 4.0);
  EXPECT_LT(e_mid / e_end, 30.0);
  // Deterministic given the seed; another seed gives other numbers.
  auto again = td0::simulate(ch, sp, false);
  EXPECT_EQ(res.error, again.error);
  sp.seed = 6;
  auto other = td0::simulate(ch, sp, false);
  EXPECT_NE(res.error, other.error);
}

TEST(Td0, SimulateRejectsBadSpecs) {
  const auto ch = td0::make_poly_chain(3.0, 4.0, 100);
  const auto lp = td0::make_linear_problem(ch, 0.7, 4.0);
  auto sp = linear_spec(ch, lp, td0::Sampling::Markov, 2, 10, 0.75, 1);
  sp.x0 = {0, 101};
  EXPECT_THROW(td0::simulate(ch, sp, false), std::runtime_error);
  sp.x0 = {0};
  EXPECT_THROW(td0::simulate(ch, sp, false), std::runtime_error);
  sp.x0 = {0, 0};
  sp.grid = {0, 5, 5};
  EXPECT_THROW(td0::simulate(ch, sp, false), std::runtime_error);
}

TEST(Td0, CudaChainsMatchCpuChains) {
  ECHO_REQUIRE_GPU();
  const auto ch = td0::make_poly_chain(2.5, 4.0, 20000);
  const auto lp = td0::make_linear_problem(ch, 0.7, 4.0);
  for (auto sampling : {td0::Sampling::Markov, td0::Sampling::Geometric, td0::Sampling::Iid}) {
    auto sp = linear_spec(ch, lp, sampling, 64, 20000, 0.75, 3);
    auto cpu = td0::simulate(ch, sp, false), gpu = td0::simulate(ch, sp, true);
    EXPECT_TRUE(gpu.used_cuda);
    EXPECT_LT(echo::testing::max_rel_diff(gpu.error, cpu.error), 1e-9);
    EXPECT_LT(echo::testing::max_rel_diff(gpu.theta, cpu.theta), 1e-9);
  }
  const auto tp = td0::make_tanh_problem(ch, 0.7, 4.0, 1, 2);
  td0::SimulationSpec sp = linear_spec(ch, lp, td0::Sampling::Markov, 64, 20000, 0.9, 4);
  sp.model = td0::Model::Tanh;
  sp.hidden = 1;
  sp.input = tp.input;
  sp.theta0 = tp.theta0;
  sp.theta_star = tp.theta_star;
  sp.alpha0 = 10;
  sp.t0 = 1000;
  auto cpu = td0::simulate(ch, sp, false), gpu = td0::simulate(ch, sp, true);
  EXPECT_LT(echo::testing::max_rel_diff(gpu.error, cpu.error), 1e-8);
}

TEST(Td0, QuickModeWritesWellFormedOutputs) {
  Td0Options opt;
  opt.quick = true;
  opt.device = "cpu";
  const std::string dir = temp_dir("td0");
  json s = run_td0_experiment(opt, dir);
  for (const char* f : {"td0_runs.csv", "td0_curves.csv", "td0_problems.json", "td0_summary.json"})
    EXPECT_TRUE(std::filesystem::exists(dir + "/" + f)) << f;
  // Quick grid per c and η: linear {markov×(zero, far), geometric, iid} + one extra α₀ at η = 1;
  // tanh {markov zero, geometric, iid}. Two c, two η.
  const int64_t expected = 2 * (2 * 4 + 1) + 2 * 2 * 3;
  ASSERT_EQ(int64_t(s["rows"].size()), expected);
  EXPECT_EQ(count_lines(dir + "/td0_runs.csv"), expected + 1);
  EXPECT_EQ(s["problems"].size(), 2u);
  for (const auto& p : s["problems"]) {
    EXPECT_LT(p["linear"]["approx_error"].get<double>(), p["value_norm"].get<double>());
    EXPECT_LT(p["tanh"]["field_norm_at_theta_star"].get<double>(), 1e-9);
  }
  for (const auto& r : s["rows"]) {
    EXPECT_EQ(r["diverged"].get<int64_t>(), 0) << r.dump();
    EXPECT_TRUE(std::isfinite(r["slope_median"].get<double>())) << r.dump();
    // Everything moves toward θ*; the linear model from the zero start gets close.
    EXPECT_LT(r["final_median"].get<double>(), r["err0_median"].get<double>()) << r.dump();
    if (r["model"] == "linear" && r["sampling"] == "iid")
      EXPECT_LT(r["final_median"].get<double>(), 0.05 * r["err0_median"].get<double>()) << r.dump();
  }
}

// ---- the command line ------------------------------------------------------------------

TEST(ExperimentCli, QuickModesRunEndToEndAndRejectBadFlags) {
  echo::testing::TempDir dir;
  for (const std::string name : {"adam-regions", "td0"}) {
    const std::string out = dir.file(name);
    auto r = echo::testing::run_echo({"experiment", name, "--quick", "--out", out, "--threads", "1"}, dir);
    ASSERT_EQ(r.status, 0) << name << ": " << r.err;
    json line = json::parse(r.out);  // one JSON object
    EXPECT_EQ(line["experiment"], name);
    EXPECT_EQ(line["quick"], true);
    EXPECT_TRUE(std::filesystem::exists(out + (name == "td0" ? "/td0_summary.json" : "/summary.json")));
    auto help = echo::testing::run_echo({"experiment", name, "--help"}, dir);
    EXPECT_EQ(help.status, 0);
    for (const char* flag : {"--quick", "--out", "--seed", "--threads"})
      EXPECT_NE(help.out.find(flag), std::string::npos) << name << " --help lacks " << flag;
  }
  auto bad = echo::testing::run_echo({"experiment", "td0", "--quick", "--c", "3"}, dir);
  EXPECT_NE(bad.status, 0);
  EXPECT_NE(bad.err.find("cannot be combined with --quick"), std::string::npos) << bad.err;
  bad = echo::testing::run_echo({"experiment", "td0", "--eta", "0.4", "--out", dir.file("x")}, dir);
  EXPECT_NE(bad.status, 0);
  EXPECT_NE(bad.err.find("(1/2, 1]"), std::string::npos) << bad.err;
  bad = echo::testing::run_echo({"experiment", "nosuch"}, dir);
  EXPECT_NE(bad.status, 0);
}
