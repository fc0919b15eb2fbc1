// `echo-lm experiment adam-regions`: makes the central claims of Sridhar &
// Johansen, "Convergence of Adam in Deep ReLU Networks via Directional
// Complexity and Kakeya Bounds" (arXiv 2505.15013) measurable.
//
// Claim under test: along Adam's trajectory the number of activation-region
// crossings is near-linear in an effective dimension d_eff (not exponential),
// training has a sub-linear phase and, once the activation patterns freeze, a
// linear phase, and the generalisation gap scales like sqrt(d_eff / n).
//
// Setting: teacher–student regression. z ~ N(0, I_k), x = U z / sqrt(k) ∈ R^D
// with U having orthonormal columns (so E‖x‖² = 1), y = teacher(z) + noise,
// teacher a small ReLU net. The student is a ReLU MLP trained full-batch with
// Adam (or plain gradient descent, "sgd", as the control) on the mean squared
// error with a cosine learning-rate schedule. docs/experiments/adam_regions.md
// states the predictions and the measurements.
//
// The MLP is a compact dedicated forward/backward on OpenBLAS GEMMs in float64
// rather than the tape: every step needs every pre-activation of the whole
// training set anyway (to count pattern flips), full-batch training of a tiny
// net is GEMM-bound, and float64 keeps sign flips of near-zero pre-activations
// from being rounding noise.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace echo {

struct AdamRegionsOptions {
  bool quick = false;         // tiny grid, short runs (the test uses it)
  uint64_t seed = 0;
  int threads = 0;            // 0: leave the OpenMP/OpenBLAS default

  // One-factor-at-a-time sweeps around the base configuration.
  int input_dim = 32;                                  // D
  int base_latent = 4, base_samples = 1024, base_width = 64, base_depth = 2;
  std::vector<int> latent_sweep{2, 4, 8, 16};          // k
  std::vector<int> samples_sweep{128, 256, 512, 1024, 2048, 4096};  // n
  std::vector<int> width_sweep{16, 32, 64, 128};       // H
  std::vector<int> depth_sweep{1, 2, 3};               // hidden layers
  std::vector<std::string> optimizers{"adam", "sgd"};
  int replicates = 3;                                  // seeds per configuration

  int64_t steps = 1500;         // T (full batch, one step = one update)
  // Long runs of the base configuration (sweep "long", replicate 0, every
  // optimizer) for the convergence phases; 0 disables them.
  int64_t long_steps = 10000;
  // Also run the long base runs at a constant learning rate (sweep
  // "long-constant"): under the cosine schedule the patterns freeze only once
  // the rate has decayed to ~0, which hides any post-freeze phase.
  bool long_constant = true;
  double adam_lr = 3e-3;        // peak of the cosine schedule
  double adam_beta1 = 0.9, adam_beta2 = 0.999, adam_eps = 1e-8;
  double sgd_lr = 0.05;
  int teacher_width = 8;
  double label_noise = 0.1;     // std of the Gaussian label noise (train and test)
  int test_samples = 2048;
  double tau_fraction = 0.01;   // margin τ_l = tau_fraction · RMS(layer-l pre-activations at init)
  int update_rows = 400;        // per-step updates kept (evenly spread) for d_eff
  int curve_points = 160;       // logged points per run

  // Replaces the grids by the quick ones (n ≤ 256, H ≤ 32, T = 400, 1 replicate,
  // long runs of 800 steps).
  void apply_quick();
};

// ---- building blocks (exposed for the tests) ---------------------------------

// Hamming distance between two activation patterns (1 = unit active).
int64_t count_pattern_flips(const std::vector<uint8_t>& before, const std::vector<uint8_t>& after);

// Margin crossings: a pre-activation counts as crossing when it goes from
// ≤ −τ to ≥ +τ or back. Values inside (−τ, τ) never count; a unit that starts
// inside the band gets its side the first time it leaves the band.
class MarginTracker {
 public:
  // `values` are the initial pre-activations, `tau` one threshold per entry.
  MarginTracker(const std::vector<double>& values, std::vector<double> tau);
  // Updates the sides; returns the number of crossings between the previous
  // call (or the initial values) and `values`.
  int64_t update(const std::vector<double>& values);

 private:
  std::vector<double> tau_;
  std::vector<int8_t> side_;  // −1, +1, 0 = not yet outside the band
};

struct EffectiveDimension {
  int k90 = 0, k99 = 0;            // smallest k holding 90% / 99% of Σσ²
  double participation_ratio = 0;  // (Σσ²)² / Σσ⁴
  std::vector<double> sigma_sq;    // squared singular values, descending
};
// Effective dimension of the row space of a rows × cols matrix (row-major):
// the squared singular values are the eigenvalues of the Gram matrix M Mᵀ.
EffectiveDimension effective_dimension(const std::vector<double>& matrix, int rows, int cols);

// One training run, fully determined by its fields.
struct AdamRegionsRun {
  std::string optimizer = "adam";
  int latent = 4, samples = 1024, width = 64, depth = 2, replicate = 0;
  std::string sweep = "base";  // which sweep it belongs to (for the tables)
  int64_t steps = 0;           // 0: the options' `steps`
  std::string schedule = "cosine";  // cosine (peak → 0 over the run) or constant
};

// Runs one configuration; appends its logged curve to `curves_csv` (may be
// null) and returns its summary row.
nlohmann::json run_adam_regions_single(const AdamRegionsOptions& opt, const AdamRegionsRun& run,
                                       std::ostream* curves_csv);

// The whole experiment: writes <out_dir>/runs.jsonl (one summary per run),
// summary.csv, curves.csv, and returns the aggregated summary (medians per
// configuration, fitted log-log slopes), also written to summary.json.
nlohmann::json run_adam_regions_experiment(AdamRegionsOptions opt, const std::string& out_dir);

}  // namespace echo
