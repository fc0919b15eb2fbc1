// `echo-lm experiment adam-regions|td0`: the two theory seeds as built-in
// experiments (train/experiments/adam_regions.h, train/experiments/td0.h;
// docs/experiments/ has the commands, results and verdicts). Each writes its
// CSV/JSONL files into --out and prints a one-line JSON summary.
#include <iostream>
#include <memory>

#include "train/cli.h"
#include "train/experiments/adam_regions.h"
#include "train/experiments/td0.h"

namespace echo::cli {

namespace {

struct AdamRegionsArgs {
  AdamRegionsOptions opt;
  std::string out = "runs/experiments/adam_regions";
};

struct Td0Args {
  Td0Options opt;
  std::string out = "runs/experiments/td0";
};

// --quick replaces the grid and the sizes, so a grid flag next to it would be
// silently ignored: refuse the combination instead.
void reject_with_quick(const CLI::App& cmd, bool quick, const std::vector<std::string>& grid_flags) {
  if (!quick) return;
  for (const auto& f : grid_flags)
    if (cmd.count(f) > 0)
      throw std::runtime_error(cmd.get_name() + ": " + f + " cannot be combined with --quick (quick mode fixes the grid)");
}

void add_adam_regions(CLI::App& parent) {
  auto a = std::make_shared<AdamRegionsArgs>();
  auto& o = a->opt;
  CLI::App* cmd = parent.add_subcommand(
      "adam-regions",
      "Activation-region crossings, freeze time, d_eff and the train/test gap along full-batch Adam (and GD) "
      "trajectories of a ReLU MLP on teacher-student regression (arXiv 2505.15013). One-factor sweeps of n, H, k "
      "and depth around a base point, plus long base runs.");
  cmd->add_flag("--quick", o.quick, "tiny grid and short runs (seconds); fixes every grid flag");
  cmd->add_option("--out", a->out, "output directory")->capture_default_str();
  cmd->add_option("--seed", o.seed, "base seed (data, teachers, initialisations)")->capture_default_str();
  cmd->add_option("--threads", o.threads, "OpenMP/OpenBLAS threads (0 = default)")->capture_default_str();
  const std::vector<std::string> grid{"--steps",   "--long-steps", "--long-constant", "--replicates", "--samples",
                                      "--widths",  "--latents",    "--depths",        "--base",       "--optimizers"};
  cmd->add_option("--steps", o.steps, "steps T of the sweep runs")->capture_default_str();
  cmd->add_option("--long-steps", o.long_steps, "steps of the long base runs (0 = none)")->capture_default_str();
  cmd->add_flag("--long-constant,!--no-long-constant", o.long_constant,
                "also run the long base runs at a constant learning rate (default: on)");
  cmd->add_option("--replicates", o.replicates, "seeds per configuration")->capture_default_str();
  cmd->add_option("--samples", o.samples_sweep, "n sweep, comma-separated")->delimiter(',')->capture_default_str();
  cmd->add_option("--widths", o.width_sweep, "H sweep, comma-separated")->delimiter(',')->capture_default_str();
  cmd->add_option("--latents", o.latent_sweep, "k sweep, comma-separated")->delimiter(',')->capture_default_str();
  cmd->add_option("--depths", o.depth_sweep, "hidden-layer sweep, comma-separated")
      ->delimiter(',')
      ->capture_default_str();
  auto base = std::make_shared<std::vector<int>>();
  cmd->add_option("--base", *base, "base point n,H,depth,k (default 1024,64,2,4)")->delimiter(',')->expected(4);
  cmd->add_option("--optimizers", o.optimizers, "optimizers, comma-separated: adam, sgd (full-batch GD)")
      ->delimiter(',')
      ->check(CLI::IsMember({"adam", "sgd"}))
      ->capture_default_str();
  cmd->add_option("--adam-lr", o.adam_lr, "peak Adam learning rate (cosine to 0)")->capture_default_str();
  cmd->add_option("--sgd-lr", o.sgd_lr, "peak GD learning rate (cosine to 0)")->capture_default_str();
  cmd->add_option("--label-noise", o.label_noise, "std of the label noise")->capture_default_str();
  cmd->add_option("--tau-fraction", o.tau_fraction, "margin τ as a fraction of the init pre-activation RMS")
      ->capture_default_str();
  cmd->add_option("--update-rows", o.update_rows, "per-step updates kept for d_eff")->capture_default_str();
  cmd->callback([a, base, cmd, grid] {
    reject_with_quick(*cmd, a->opt.quick, grid);
    if (!base->empty()) {
      a->opt.base_samples = (*base)[0];
      a->opt.base_width = (*base)[1];
      a->opt.base_depth = (*base)[2];
      a->opt.base_latent = (*base)[3];
    }
    const auto s = run_adam_regions_experiment(a->opt, a->out);
    nlohmann::json line = {{"experiment", s["experiment"]}, {"out", a->out},           {"quick", s["quick"]},
                           {"runs", s["runs"]},             {"seconds", s["seconds"]}, {"vs_deff", s["vs_deff"]}};
    std::cout << line.dump() << "\n";
  });
}

void add_td0(CLI::App& parent) {
  auto a = std::make_shared<Td0Args>();
  auto& o = a->opt;
  CLI::App* cmd = parent.add_subcommand(
      "td0",
      "Semi-gradient TD(0) (linear and one-unit tanh models) on a polynomially mixing chain with geometric and "
      "i.i.d. controls; quantiles of ||theta_t - theta*|| and fitted rates (arXiv 2502.05706).");
  cmd->add_flag("--quick", o.quick, "two c, two eta, short chains (seconds); fixes every grid flag");
  cmd->add_option("--out", a->out, "output directory")->capture_default_str();
  cmd->add_option("--seed", o.seed, "base seed")->capture_default_str();
  cmd->add_option("--threads", o.threads, "OpenMP threads for the CPU chains (0 = default)")->capture_default_str();
  cmd->add_option("--device", o.device, "cpu, cuda (one chain per GPU thread) or auto")
      ->check(CLI::IsMember({"cpu", "cuda", "auto"}))
      ->capture_default_str();
  const std::vector<std::string> grid{"--c",          "--eta",         "--models",      "--starts",
                                      "--controls",   "--tanh-starts", "--runs-linear", "--steps-linear",
                                      "--runs-tanh",  "--steps-tanh",  "--grid-points", "--truncation",
                                      "--far-start",  "--extra-alpha0-linear"};
  cmd->add_option("--c", o.c_values, "tail exponents c (beta = c - 1), comma-separated")
      ->delimiter(',')
      ->capture_default_str();
  cmd->add_option("--eta", o.eta_values, "step-size exponents eta in (1/2, 1], comma-separated")
      ->delimiter(',')
      ->capture_default_str();
  cmd->add_option("--models", o.models, "linear, tanh")->delimiter(',')->check(CLI::IsMember({"linear", "tanh"}))
      ->capture_default_str();
  cmd->add_option("--starts", o.starts, "starts of the Markov runs (linear model): zero, far, stationary")
      ->delimiter(',')
      ->check(CLI::IsMember({"zero", "far", "stationary"}))
      ->capture_default_str();
  cmd->add_option("--tanh-starts", o.tanh_starts, "starts of the Markov runs (tanh model)")
      ->delimiter(',')
      ->check(CLI::IsMember({"zero", "far", "stationary"}))
      ->capture_default_str();
  cmd->add_option("--controls", o.controls, "control samplers (zero start): geometric, iid")
      ->delimiter(',')
      ->check(CLI::IsMember({"geometric", "iid"}))
      ->capture_default_str();
  cmd->add_option("--extra-alpha0-linear", o.extra_alpha0_linear,
                  "extra alpha0 values for linear Markov runs at eta = 1")
      ->delimiter(',')
      ->capture_default_str();
  cmd->add_option("--runs-linear", o.runs_linear, "independent runs per linear configuration")->capture_default_str();
  cmd->add_option("--steps-linear", o.steps_linear, "steps T of the linear runs")->capture_default_str();
  cmd->add_option("--runs-tanh", o.runs_tanh, "independent runs per tanh configuration")->capture_default_str();
  cmd->add_option("--steps-tanh", o.steps_tanh, "steps T of the tanh runs")->capture_default_str();
  cmd->add_option("--grid-points", o.grid_points, "log-spaced measurement times")->capture_default_str();
  cmd->add_option("--truncation", o.truncation, "N: the chain lives on {0..N}")->capture_default_str();
  cmd->add_option("--far-start", o.far_start, "x0 of the far start")->capture_default_str();
  cmd->add_option("--hidden", o.hidden, "tanh model width")->capture_default_str();
  cmd->add_option("--alpha0-linear", o.alpha0_linear, "alpha0 of the linear model")->capture_default_str();
  cmd->add_option("--alpha0-tanh", o.alpha0_tanh, "alpha0 of the tanh model (<= 0: 1/lambda_min at theta*, with t0 raised for stability; see docs/experiments/td0.md)")
      ->capture_default_str();
  cmd->add_option("--t0", o.t0, "t0 in alpha_t = alpha0 / (t + t0)^eta")->capture_default_str();
  cmd->add_option("--discount", o.discount, "discount of the evaluated chain")->capture_default_str();
  cmd->add_option("--hold", o.hold, "geometric control: probability of keeping the state")->capture_default_str();
  cmd->callback([a, cmd, grid] {
    reject_with_quick(*cmd, a->opt.quick, grid);
    const auto s = run_td0_experiment(a->opt, a->out);
    nlohmann::json line = {{"experiment", s["experiment"]}, {"out", a->out},
                           {"quick", s["quick"]},           {"configurations", s["rows"].size()},
                           {"device", s["device"]},         {"seconds", s["seconds"]}};
    std::cout << line.dump() << "\n";
  });
}

}  // namespace

void add_experiment_commands(CLI::App& app) {
  CLI::App* cmd = app.add_subcommand(
      "experiment", "Run a built-in theory experiment (adam-regions, td0); see docs/experiments/.");
  cmd->require_subcommand(1);
  add_adam_regions(*cmd);
  add_td0(*cmd);
}

}  // namespace echo::cli
