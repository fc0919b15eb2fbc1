#include "train/experiments/adam_regions.h"

#include <cblas.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <numeric>
#include <sstream>
#include <stdexcept>
#include <unordered_set>

#include "autograd/parallel.h"
#include "autograd/random.h"
#include "train/experiments/common.h"
#include "train/optimizer.h"

namespace echo {

using nlohmann::json;
using experiment::fit_line;
using experiment::mix_seed;

void AdamRegionsOptions::apply_quick() {
  quick = true;
  base_latent = 4;
  base_samples = 256;
  base_width = 32;
  base_depth = 2;
  latent_sweep = {2, 8};
  samples_sweep = {128, 256};
  width_sweep = {16, 32};
  depth_sweep = {1, 2};
  replicates = 1;
  steps = 400;
  long_steps = 800;
  test_samples = 512;
  update_rows = 100;
  curve_points = 40;
}

// ---- building blocks ------------------------------------------------------------

int64_t count_pattern_flips(const std::vector<uint8_t>& before, const std::vector<uint8_t>& after) {
  if (before.size() != after.size())
    throw std::runtime_error("count_pattern_flips: patterns differ in size (" + std::to_string(before.size()) +
                             " vs " + std::to_string(after.size()) + ")");
  int64_t flips = 0;
  for (size_t i = 0; i < before.size(); ++i) flips += (before[i] != 0) != (after[i] != 0);
  return flips;
}

namespace {
int8_t side_of(double v, double tau) { return v >= tau ? 1 : (v <= -tau ? -1 : 0); }
}  // namespace

MarginTracker::MarginTracker(const std::vector<double>& values, std::vector<double> tau)
    : tau_(std::move(tau)), side_(values.size()) {
  if (tau_.size() != values.size())
    throw std::runtime_error("MarginTracker: " + std::to_string(values.size()) + " values but " +
                             std::to_string(tau_.size()) + " thresholds");
  for (size_t i = 0; i < values.size(); ++i) side_[i] = side_of(values[i], tau_[i]);
}

int64_t MarginTracker::update(const std::vector<double>& values) {
  if (values.size() != side_.size())
    throw std::runtime_error("MarginTracker::update: expected " + std::to_string(side_.size()) + " values, got " +
                             std::to_string(values.size()));
  int64_t crossings = 0;
  for (size_t i = 0; i < values.size(); ++i) {
    int8_t s = side_of(values[i], tau_[i]);
    if (s == 0) continue;  // inside the band: the side is remembered, nothing counts
    if (side_[i] != 0 && s != side_[i]) ++crossings;
    side_[i] = s;
  }
  return crossings;
}

EffectiveDimension effective_dimension(const std::vector<double>& matrix, int rows, int cols) {
  if (rows <= 0 || cols <= 0 || matrix.size() != size_t(rows) * size_t(cols))
    throw std::runtime_error("effective_dimension: matrix of " + std::to_string(matrix.size()) +
                             " values is not " + std::to_string(rows) + "x" + std::to_string(cols));
  // Σσ² of M are the eigenvalues of the rows×rows Gram matrix M Mᵀ.
  std::vector<double> gram(size_t(rows) * rows, 0.0);
  cblas_dsyrk(CblasRowMajor, CblasUpper, CblasNoTrans, rows, cols, 1.0, matrix.data(), cols, 0.0, gram.data(), rows);
  std::vector<double> eig = experiment::symmetric_eigenvalues(std::move(gram), rows);
  EffectiveDimension out;
  for (double& e : eig) e = std::max(e, 0.0);  // rounding can leave tiny negatives
  std::sort(eig.begin(), eig.end(), std::greater<double>());
  double total = 0, total_sq = 0;
  for (double e : eig) total += e, total_sq += e * e;
  out.sigma_sq = eig;
  if (total <= 0) return out;
  double acc = 0;
  for (int i = 0; i < rows; ++i) {
    acc += eig[i];
    if (out.k90 == 0 && acc >= 0.90 * total) out.k90 = i + 1;
    if (out.k99 == 0 && acc >= 0.99 * total) out.k99 = i + 1;
  }
  out.participation_ratio = total * total / total_sq;
  return out;
}

// ---- data and model -------------------------------------------------------------

namespace {

struct Dataset {
  int n = 0, dim = 0;
  std::vector<double> x, y;  // x [n, dim] row-major, y [n]
};

// The teacher and the embedding U are drawn from (seed, k, replicate) only, and
// training inputs are drawn sequentially from one stream, so the n = 128 set is
// a prefix of the n = 4096 set: the n-sweep changes only the amount of data.
struct TeacherTask {
  int latent = 0, dim = 0, width = 0;
  std::vector<double> embed;          // U [dim, latent], orthonormal columns
  std::vector<double> w, b, a;        // teacher: [width, latent], [width], [width]
  double mean = 0, scale = 1;         // standardisation of the clean teacher output

  double teacher(const double* z) const {
    double s = 0;
    for (int j = 0; j < width; ++j) {
      double h = b[j];
      for (int i = 0; i < latent; ++i) h += w[size_t(j) * latent + i] * z[i];
      s += a[j] * std::max(h, 0.0);
    }
    return s / std::sqrt(double(width));
  }
  // One example: z ~ N(0, I_k), x = U z / sqrt(k), y = standardised teacher(z / sqrt(k)) + noise.
  // (The vector called z below already holds z / sqrt(k).)
  void draw(Rng& rng, double noise, double* x, double* y) const {
    std::vector<double> z(latent);
    for (auto& v : z) v = rng.normal() / std::sqrt(double(latent));
    for (int d = 0; d < dim; ++d) {
      double s = 0;
      for (int i = 0; i < latent; ++i) s += embed[size_t(d) * latent + i] * z[i];
      x[d] = s;
    }
    *y = (teacher(z.data()) - mean) / scale + noise * rng.normal();
  }
};

TeacherTask make_task(const AdamRegionsOptions& opt, int latent, int replicate) {
  if (latent < 1 || latent > opt.input_dim)
    throw std::runtime_error("adam-regions: latent dimension k=" + std::to_string(latent) + " must be in [1, D=" +
                             std::to_string(opt.input_dim) + "]");
  TeacherTask t;
  t.latent = latent;
  t.dim = opt.input_dim;
  t.width = opt.teacher_width;
  Rng rng(mix_seed(opt.seed, 0xA11CE, uint64_t(latent), uint64_t(replicate)));
  // U: Gram–Schmidt on a Gaussian D×k matrix (columns orthonormal).
  t.embed.assign(size_t(t.dim) * latent, 0.0);
  for (auto& v : t.embed) v = rng.normal();
  for (int c = 0; c < latent; ++c) {
    for (int p = 0; p < c; ++p) {
      double dot = 0;
      for (int d = 0; d < t.dim; ++d) dot += t.embed[size_t(d) * latent + c] * t.embed[size_t(d) * latent + p];
      for (int d = 0; d < t.dim; ++d) t.embed[size_t(d) * latent + c] -= dot * t.embed[size_t(d) * latent + p];
    }
    double nrm = 0;
    for (int d = 0; d < t.dim; ++d) nrm += t.embed[size_t(d) * latent + c] * t.embed[size_t(d) * latent + c];
    nrm = std::sqrt(nrm);
    for (int d = 0; d < t.dim; ++d) t.embed[size_t(d) * latent + c] /= nrm;
  }
  // Teacher weights act on z/sqrt(k), whose squared norm is ≈ 1, so N(0,1)
  // weights give O(1) pre-activations whatever k is.
  t.w.resize(size_t(t.width) * latent);
  for (auto& v : t.w) v = rng.normal();
  t.b.resize(t.width);
  for (auto& v : t.b) v = 0.5 * rng.normal();
  t.a.resize(t.width);
  for (auto& v : t.a) v = rng.normal();
  // Standardise the clean output on a fixed reference sample.
  Rng ref(mix_seed(opt.seed, 0x5CA1E, uint64_t(latent), uint64_t(replicate)));
  const int m = 8192;
  double s = 0, s2 = 0;
  std::vector<double> x(t.dim);
  double y;
  for (int i = 0; i < m; ++i) {
    t.draw(ref, 0.0, x.data(), &y);
    s += y;
    s2 += y * y;
  }
  t.mean = s / m;
  t.scale = std::sqrt(std::max(s2 / m - t.mean * t.mean, 1e-12));
  return t;
}

Dataset make_data(const TeacherTask& task, int n, double noise, uint64_t seed) {
  Dataset d;
  d.n = n;
  d.dim = task.dim;
  d.x.resize(size_t(n) * task.dim);
  d.y.resize(n);
  Rng rng(seed);
  for (int i = 0; i < n; ++i) task.draw(rng, noise, &d.x[size_t(i) * task.dim], &d.y[i]);
  return d;
}

// ReLU MLP with `depth` hidden layers of `width`, scalar output. All parameters
// live in one flat vector: for each hidden layer W_l [width, fan_in] then b_l,
// then the output row w_o [width] and b_o.
struct Mlp {
  int dim = 0, width = 0, depth = 0;
  std::vector<size_t> w_off, b_off;
  size_t wo_off = 0, bo_off = 0, num_params = 0;

  Mlp(int dim_, int width_, int depth_) : dim(dim_), width(width_), depth(depth_) {
    size_t off = 0;
    for (int l = 0; l < depth; ++l) {
      int fan_in = l == 0 ? dim : width;
      w_off.push_back(off);
      off += size_t(width) * fan_in;
      b_off.push_back(off);
      off += width;
    }
    wo_off = off;
    off += width;
    bo_off = off;
    num_params = off + 1;
  }
  int fan_in(int l) const { return l == 0 ? dim : width; }

  // He initialisation for the hidden layers, 1/sqrt(width) for the output row, zero biases.
  std::vector<double> init(Rng& rng) const {
    std::vector<double> p(num_params, 0.0);
    for (int l = 0; l < depth; ++l) {
      double std_ = std::sqrt(2.0 / fan_in(l));
      for (size_t i = 0; i < size_t(width) * fan_in(l); ++i) p[w_off[l] + i] = std_ * rng.normal();
    }
    for (int j = 0; j < width; ++j) p[wo_off + j] = rng.normal() / std::sqrt(double(width));
    return p;
  }

  // Pre-activations of all layers go to `pre` laid out as [layer][sample][unit]
  // (n·width per layer), activations to `act` (same layout), outputs to `out`.
  void forward(const std::vector<double>& p, const double* x, int n, std::vector<double>& pre,
               std::vector<double>& act, std::vector<double>& out) const {
    const size_t block = size_t(n) * width;
    pre.resize(block * depth);
    act.resize(block * depth);
    out.resize(n);
    for (int l = 0; l < depth; ++l) {
      const double* in = l == 0 ? x : &act[block * (l - 1)];
      double* z = &pre[block * l];
      for (int i = 0; i < n; ++i) std::copy(&p[b_off[l]], &p[b_off[l]] + width, z + size_t(i) * width);
      // Z = A_{l−1} W_lᵀ + b_l
      cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, width, fan_in(l), 1.0, in, fan_in(l), &p[w_off[l]],
                  fan_in(l), 1.0, z, width);
      double* a = &act[block * l];
      for (size_t e = 0; e < block; ++e) a[e] = z[e] > 0 ? z[e] : 0.0;
    }
    for (int i = 0; i < n; ++i) out[i] = p[bo_off];
    cblas_dgemv(CblasRowMajor, CblasNoTrans, n, width, 1.0, &act[block * (depth - 1)], width, &p[wo_off], 1, 1.0,
                out.data(), 1);
  }

  // Gradient of L = (1/n) Σ (out − y)² given the forward buffers. Writes (not adds) `grad`.
  void backward(const std::vector<double>& p, const double* x, const double* y, int n, const std::vector<double>& pre,
                const std::vector<double>& act, const std::vector<double>& out, std::vector<double>& grad,
                std::vector<double>& d_act, std::vector<double>& d_prev) const {
    const size_t block = size_t(n) * width;
    grad.assign(num_params, 0.0);
    std::vector<double> g_out(n);
    for (int i = 0; i < n; ++i) g_out[i] = 2.0 * (out[i] - y[i]) / n;
    const double* a_last = &act[block * (depth - 1)];
    // dw_o = g_outᵀ A_L, db_o = Σ g_out, dA_L = g_out w_o
    cblas_dgemv(CblasRowMajor, CblasTrans, n, width, 1.0, a_last, width, g_out.data(), 1, 0.0, &grad[wo_off], 1);
    grad[bo_off] = std::accumulate(g_out.begin(), g_out.end(), 0.0);
    d_act.assign(block, 0.0);
    cblas_dger(CblasRowMajor, n, width, 1.0, g_out.data(), 1, &p[wo_off], 1, d_act.data(), width);
    for (int l = depth - 1; l >= 0; --l) {
      const double* z = &pre[block * l];
      for (size_t e = 0; e < block; ++e)
        if (!(z[e] > 0)) d_act[e] = 0.0;  // d_act now holds dZ_l
      const double* in = l == 0 ? x : &act[block * (l - 1)];
      // dW_l = dZ_lᵀ A_{l−1}, db_l = Σ_i dZ_l[i]
      cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, width, fan_in(l), n, 1.0, d_act.data(), width, in,
                  fan_in(l), 0.0, &grad[w_off[l]], fan_in(l));
      for (int i = 0; i < n; ++i)
        for (int j = 0; j < width; ++j) grad[b_off[l] + j] += d_act[size_t(i) * width + j];
      if (l > 0) {
        // dA_{l−1} = dZ_l W_l
        d_prev.assign(block, 0.0);
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, width, width, 1.0, d_act.data(), width,
                    &p[w_off[l]], width, 0.0, d_prev.data(), width);
        std::swap(d_act, d_prev);
      }
    }
  }
};

double mse(const std::vector<double>& out, const std::vector<double>& y) {
  double s = 0;
  for (size_t i = 0; i < y.size(); ++i) s += (out[i] - y[i]) * (out[i] - y[i]);
  return s / double(y.size());
}

std::string run_id(const AdamRegionsRun& r) {
  std::ostringstream s;
  s << r.optimizer << "_n" << r.samples << "_H" << r.width << "_L" << r.depth << "_k" << r.latent << "_r"
    << r.replicate;
  if (r.steps > 0) s << "_T" << r.steps;
  if (r.schedule != "cosine") s << "_" << r.schedule;
  return s.str();
}

// Steps at which the curve is logged: t = 0, half of the budget log-spaced, half uniform.
std::vector<int64_t> log_steps(int64_t T, int points) {
  std::vector<int64_t> s{0, T};
  int half = std::max(2, points / 2);
  for (int i = 0; i < half; ++i) {
    s.push_back(int64_t(std::llround(std::pow(double(T), double(i) / (half - 1)))));
    s.push_back(int64_t(std::llround(double(T) * i / (half - 1))));
  }
  std::sort(s.begin(), s.end());
  s.erase(std::unique(s.begin(), s.end()), s.end());
  while (!s.empty() && s.back() > T) s.pop_back();
  return s;
}

}  // namespace

// ---- one run ------------------------------------------------------------------------

json run_adam_regions_single(const AdamRegionsOptions& opt, const AdamRegionsRun& run, std::ostream* curves_csv) {
  const int64_t T = run.steps > 0 ? run.steps : opt.steps;
  if (run.samples < 2 || run.width < 1 || run.depth < 1 || T < 1)
    throw std::runtime_error("adam-regions: bad run " + run_id(run));
  if (run.optimizer != "adam" && run.optimizer != "sgd")
    throw std::runtime_error("adam-regions: optimizer must be adam or sgd, got " + run.optimizer);
  if (run.schedule != "cosine" && run.schedule != "constant")
    throw std::runtime_error("adam-regions: schedule must be cosine or constant, got " + run.schedule);
  auto wall0 = std::chrono::steady_clock::now();
  const TeacherTask task = make_task(opt, run.latent, run.replicate);
  const Dataset train =
      make_data(task, run.samples, opt.label_noise, mix_seed(opt.seed, 0x7A1, run.latent, run.replicate));
  const Dataset test =
      make_data(task, opt.test_samples, opt.label_noise, mix_seed(opt.seed, 0x7E57, run.latent, run.replicate));
  const Mlp net(opt.input_dim, run.width, run.depth);
  // Adam and SGD runs of one replicate share data and initialisation (paired comparison).
  Rng init_rng(mix_seed(opt.seed, 0x1417, (uint64_t(run.width) << 8) + run.depth, (uint64_t(run.latent) << 16) + run.replicate));
  std::vector<double> theta = net.init(init_rng);
  const int n = run.samples;
  const size_t units = size_t(run.width) * run.depth;  // ΣH
  const size_t entries = size_t(n) * units;

  std::vector<double> pre, act, out, grad, d_act, d_prev, pre_test, act_test, out_test;
  net.forward(theta, train.x.data(), n, pre, act, out);

  // Margin thresholds: τ_l = tau_fraction · RMS of layer l's pre-activations at init.
  std::vector<double> tau(entries);
  const size_t block = size_t(n) * run.width;
  std::vector<double> tau_layer(run.depth);
  for (int l = 0; l < run.depth; ++l) {
    double s = 0;
    for (size_t e = 0; e < block; ++e) s += pre[block * l + e] * pre[block * l + e];
    tau_layer[l] = opt.tau_fraction * std::sqrt(s / double(block));
    std::fill(tau.begin() + block * l, tau.begin() + block * (l + 1), tau_layer[l]);
  }
  MarginTracker margins(pre, tau);

  // Activation patterns and their Zobrist hashes: a sample's hash is the XOR of
  // one random key per active unit, so a flip updates it in O(1); the pattern
  // of the whole training set hashes to Σ_i mix(hash_i, i).
  std::vector<uint8_t> pattern(entries);
  for (size_t e = 0; e < entries; ++e) pattern[e] = pre[e] > 0;
  Rng key_rng(mix_seed(opt.seed, 0x2087, 0, 0));
  std::vector<uint64_t> unit_key(units);
  for (auto& k : unit_key) k = key_rng.next_u64();
  auto unit_of = [&](size_t e) {  // entry (layer, sample, unit) -> (sample, global unit)
    size_t l = e / block, r = e % block;
    return std::pair<size_t, size_t>(r / run.width, l * run.width + r % run.width);
  };
  std::vector<uint64_t> sample_hash(n, 0);
  for (size_t e = 0; e < entries; ++e)
    if (pattern[e]) {
      auto [i, u] = unit_of(e);
      sample_hash[i] ^= unit_key[u];
    }
  auto sample_token = [](uint64_t h, size_t i) { return mix_seed(h, uint64_t(i), 0x5A, 0); };
  std::unordered_set<uint64_t> seen_global, seen_sample;
  uint64_t global_hash = 0;
  for (int i = 0; i < n; ++i) {
    uint64_t tok = sample_token(sample_hash[i], i);
    global_hash += tok;
    seen_sample.insert(tok);
  }
  seen_global.insert(global_hash);

  // Rows of the update matrix kept for d_eff: steps ⌊r·T/R⌋.
  const int rows = int(std::min<int64_t>(opt.update_rows, T));
  std::vector<double> updates;
  updates.reserve(size_t(rows) * net.num_params);
  int next_row = 0;
  auto row_step = [&](int r) { return int64_t(r) * T / rows; };

  std::vector<double> m(net.num_params, 0.0), v(net.num_params, 0.0);
  std::vector<int64_t> flips(T), crossings(T);
  std::vector<double> loss(T + 1), grad_norm(T), lr_at(T), cum_lr(T + 1, 0.0);
  loss[0] = mse(out, train.y);

  const std::vector<int64_t> logged = log_steps(T, opt.curve_points);
  size_t next_log = 0;
  int64_t flips_since = 0, crossings_since = 0, cum_crossings = 0;
  const std::string id = run_id(run);
  auto write_curve = [&](int64_t t, double lr, double gnorm) {
    net.forward(theta, test.x.data(), test.n, pre_test, act_test, out_test);
    if (curves_csv)
      *curves_csv << id << ',' << run.optimizer << ',' << run.sweep << ',' << run.latent << ',' << n << ','
                  << run.width << ',' << run.depth << ',' << run.replicate << ',' << t << ',' << lr << ','
                  << loss[t] << ',' << mse(out_test, test.y) << ',' << gnorm << ',' << flips_since << ','
                  << crossings_since << ',' << cum_crossings << ',' << seen_global.size() << '\n';
    flips_since = crossings_since = 0;
  };
  if (logged[0] == 0) {
    write_curve(0, 0.0, std::nan(""));
    next_log = 1;
  }

  std::vector<uint8_t> changed(n);
  for (int64_t t = 0; t < T; ++t) {
    net.backward(theta, train.x.data(), train.y.data(), n, pre, act, out, grad, d_act, d_prev);
    double gn = 0;
    for (double g : grad) gn += g * g;
    grad_norm[t] = std::sqrt(gn);
    const double peak = run.optimizer == "adam" ? opt.adam_lr : opt.sgd_lr;
    const double lr = run.schedule == "constant" ? peak : lr_schedule(t, 0, T, peak, 0.0);
    lr_at[t] = lr;
    cum_lr[t + 1] = cum_lr[t] + lr;
    const bool keep_row = next_row < rows && row_step(next_row) == t;
    if (keep_row) updates.resize(updates.size() + net.num_params);
    double* row = keep_row ? &updates[updates.size() - net.num_params] : nullptr;
    if (run.optimizer == "adam") {
      const double b1 = opt.adam_beta1, b2 = opt.adam_beta2;
      const double bias1 = 1 - std::pow(b1, double(t + 1)), bias2 = 1 - std::pow(b2, double(t + 1));
      for (size_t i = 0; i < net.num_params; ++i) {
        m[i] = b1 * m[i] + (1 - b1) * grad[i];
        v[i] = b2 * v[i] + (1 - b2) * grad[i] * grad[i];
        double step = -lr * (m[i] / bias1) / (std::sqrt(v[i] / bias2) + opt.adam_eps);
        theta[i] += step;
        if (row) row[i] = step;
      }
    } else {
      for (size_t i = 0; i < net.num_params; ++i) {
        double step = -lr * grad[i];
        theta[i] += step;
        if (row) row[i] = step;
      }
    }
    if (keep_row) ++next_row;

    net.forward(theta, train.x.data(), n, pre, act, out);
    loss[t + 1] = mse(out, train.y);
    crossings[t] = margins.update(pre);
    int64_t f = 0;
    std::fill(changed.begin(), changed.end(), 0);
    for (size_t e = 0; e < entries; ++e) {
      uint8_t s = pre[e] > 0;
      if (s != pattern[e]) {
        pattern[e] = s;
        ++f;
        auto [i, u] = unit_of(e);
        if (!changed[i]) {
          changed[i] = 1;
          global_hash -= sample_token(sample_hash[i], i);
        }
        sample_hash[i] ^= unit_key[u];
      }
    }
    for (int i = 0; i < n; ++i)
      if (changed[i]) {
        uint64_t tok = sample_token(sample_hash[i], i);
        global_hash += tok;
        seen_sample.insert(tok);
      }
    seen_global.insert(global_hash);
    flips[t] = f;
    flips_since += f;
    crossings_since += crossings[t];
    cum_crossings += crossings[t];
    while (next_log < logged.size() && logged[next_log] == t + 1) {
      write_curve(t + 1, lr, grad_norm[t]);
      ++next_log;
    }
    if (!std::isfinite(loss[t + 1])) throw std::runtime_error("adam-regions: loss diverged in run " + id);
  }

  // Freeze times: the step after which no margin crossing (raw flip) happens.
  int64_t freeze = 0, flip_freeze = 0, total_flips = 0, total_cross = 0;
  for (int64_t t = 0; t < T; ++t) {
    if (crossings[t] > 0) freeze = t + 1;
    if (flips[t] > 0) flip_freeze = t + 1;
    total_flips += flips[t];
    total_cross += crossings[t];
  }
  const EffectiveDimension deff = effective_dimension(updates, next_row, int(net.num_params));

  // Convergence phases. Before the freeze: power-law fit log L vs log t. After
  // it: a linear (geometric) phase means log L falls linearly in the effective
  // time τ = Σ lr; compare that fit with a power law on the same window.
  // `series` is the train loss (length T+1) or the gradient norm (length T).
  auto collect = [&](const std::vector<double>& series, int64_t a, int64_t b, bool log_x, bool eff_time) {
    std::vector<double> xs, ys;
    b = std::min<int64_t>(b, int64_t(series.size()) - 1);
    if (b - a < 8) return std::make_pair(xs, ys);
    int pts = 60;
    for (int i = 0; i < pts; ++i) {
      int64_t t = log_x ? int64_t(std::llround(a * std::pow(double(b) / a, double(i) / (pts - 1))))
                        : a + (b - a) * i / (pts - 1);
      if (!(series[t] > 0)) continue;
      xs.push_back(eff_time ? cum_lr[t] : (log_x ? std::log(double(t)) : double(t)));
      ys.push_back(std::log(series[t]));
    }
    return std::make_pair(xs, ys);
  };
  json phases;
  {
    const int64_t a = std::max<int64_t>(10, T / 100), f = std::max<int64_t>(1, freeze);
    for (const auto& [name, series] :
         {std::pair<std::string, const std::vector<double>*>{"", &loss}, {"grad_", &grad_norm}}) {
      auto [xs, ys] = collect(*series, a, std::max(a, freeze), true, false);
      auto fit = fit_line(xs, ys);
      phases["pre_freeze_" + name + "power_slope"] = fit.slope;
      phases["pre_freeze_" + name + "power_r2"] = fit.r2;
      auto [xe, ye] = collect(*series, f, T, false, true);
      auto fe = fit_line(xe, ye);
      phases["post_freeze_" + name + "rate_per_unit_lr"] = -fe.slope;
      phases["post_freeze_" + name + "exp_r2"] = fe.r2;
      auto [xp, yp] = collect(*series, f, T, true, false);
      auto fp = fit_line(xp, yp);
      phases["post_freeze_" + name + "power_slope"] = fp.slope;
      phases["post_freeze_" + name + "power_r2"] = fp.r2;
    }
    phases["loss_at_freeze"] = loss[freeze];
    phases["lr_at_freeze_over_peak"] = freeze < T ? lr_at[freeze] / (run.optimizer == "adam" ? opt.adam_lr : opt.sgd_lr)
                                                  : 0.0;
    phases["post_freeze_steps"] = T - freeze;
  }

  net.forward(theta, test.x.data(), test.n, pre_test, act_test, out_test);
  const double test_loss = mse(out_test, test.y);
  json r;
  r["id"] = id;
  r["optimizer"] = run.optimizer;
  r["sweep"] = run.sweep;
  r["schedule"] = run.schedule;
  r["latent"] = run.latent;
  r["samples"] = n;
  r["width"] = run.width;
  r["depth"] = run.depth;
  r["replicate"] = run.replicate;
  r["params"] = net.num_params;
  r["units"] = units;
  r["steps"] = T;
  r["train_loss_init"] = loss[0];
  r["train_loss"] = loss[T];
  r["test_loss"] = test_loss;
  r["gap"] = test_loss - loss[T];
  r["grad_norm_init"] = grad_norm[0];
  r["grad_norm_final"] = grad_norm[T - 1];
  r["total_flips"] = total_flips;
  r["total_crossings"] = total_cross;
  r["crossings_per_sample"] = double(total_cross) / n;
  r["distinct_patterns"] = seen_global.size();
  r["distinct_patterns_per_sample"] = double(seen_sample.size()) / n;
  r["freeze_step"] = freeze;
  r["flip_freeze_step"] = flip_freeze;
  r["tau"] = tau_layer;
  r["deff_k90"] = deff.k90;
  r["deff_k99"] = deff.k99;
  r["deff_pr"] = deff.participation_ratio;
  r["deff_rows"] = next_row;
  r["phases"] = phases;
  r["seconds"] = std::chrono::duration<double>(std::chrono::steady_clock::now() - wall0).count();
  return r;
}

// ---- the experiment ---------------------------------------------------------------

namespace {

std::vector<AdamRegionsRun> plan_runs(const AdamRegionsOptions& opt) {
  std::vector<AdamRegionsRun> runs;
  std::map<std::string, bool> seen;
  auto add = [&](const std::string& sweep, int k, int n, int h, int l, int replicates = -1, int64_t steps = 0,
                 const std::string& schedule = "cosine") {
    for (int r = 0; r < (replicates < 0 ? opt.replicates : replicates); ++r)
      for (const auto& o : opt.optimizers) {
        AdamRegionsRun run{o, k, n, h, l, r, sweep, steps, schedule};
        std::string id = run_id(run);
        if (seen.count(id)) continue;  // the base point belongs to every sweep; run it once
        seen[id] = true;
        runs.push_back(run);
      }
  };
  add("base", opt.base_latent, opt.base_samples, opt.base_width, opt.base_depth);
  for (int n : opt.samples_sweep) add("samples", opt.base_latent, n, opt.base_width, opt.base_depth);
  for (int h : opt.width_sweep) add("width", opt.base_latent, opt.base_samples, h, opt.base_depth);
  for (int k : opt.latent_sweep) add("latent", k, opt.base_samples, opt.base_width, opt.base_depth);
  for (int l : opt.depth_sweep) add("depth", opt.base_latent, opt.base_samples, opt.base_width, l);
  if (opt.long_steps > 0) {
    add("long", opt.base_latent, opt.base_samples, opt.base_width, opt.base_depth, 1, opt.long_steps);
    if (opt.long_constant)
      add("long-constant", opt.base_latent, opt.base_samples, opt.base_width, opt.base_depth, 1, opt.long_steps,
          "constant");
  }
  return runs;
}

double median(std::vector<double> v) {
  if (v.empty()) return std::nan("");
  std::sort(v.begin(), v.end());
  size_t m = v.size() / 2;
  return v.size() % 2 ? v[m] : 0.5 * (v[m - 1] + v[m]);
}

}  // namespace

json run_adam_regions_experiment(AdamRegionsOptions opt, const std::string& out_dir) {
  if (opt.quick) opt.apply_quick();
  if (opt.threads > 0) set_num_threads(opt.threads);
  std::filesystem::create_directories(out_dir);
  auto wall0 = std::chrono::steady_clock::now();
  const auto runs = plan_runs(opt);
  std::ofstream runs_jsonl(out_dir + "/runs.jsonl"), curves(out_dir + "/curves.csv");
  curves.precision(8);
  curves << "id,optimizer,sweep,latent,samples,width,depth,replicate,step,lr,train_loss,test_loss,grad_norm,"
            "flips,crossings,cum_crossings,distinct_patterns\n";
  std::vector<json> rows;
  for (const auto& run : runs) {
    json r = run_adam_regions_single(opt, run, &curves);
    runs_jsonl << r.dump() << '\n';
    runs_jsonl.flush();
    rows.push_back(r);
  }

  // Flat table, one row per run.
  const std::vector<std::string> cols{"id", "optimizer", "sweep", "latent", "samples", "width", "depth",
                                      "replicate", "params", "steps", "train_loss", "test_loss", "gap",
                                      "grad_norm_final", "total_flips", "total_crossings", "crossings_per_sample",
                                      "distinct_patterns", "distinct_patterns_per_sample", "freeze_step",
                                      "flip_freeze_step", "deff_k90", "deff_k99", "deff_pr",
                                      "phases.pre_freeze_power_slope", "phases.post_freeze_rate_per_unit_lr",
                                      "phases.post_freeze_exp_r2", "phases.post_freeze_power_r2",
                                      "phases.post_freeze_grad_rate_per_unit_lr", "phases.post_freeze_grad_exp_r2",
                                      "phases.lr_at_freeze_over_peak", "seconds"};
  {
    std::ofstream csv(out_dir + "/summary.csv");
    csv.precision(8);
    for (size_t c = 0; c < cols.size(); ++c) csv << cols[c] << (c + 1 < cols.size() ? ',' : '\n');
    for (const auto& r : rows)
      for (size_t c = 0; c < cols.size(); ++c) {
        const bool nested = cols[c].rfind("phases.", 0) == 0;
        const auto& v = nested ? r["phases"][cols[c].substr(7)] : r[cols[c]];
        if (v.is_string()) csv << v.get<std::string>();
        else csv << v.dump();
        csv << (c + 1 < cols.size() ? ',' : '\n');
      }
  }

  // Aggregates: per sweep and optimizer, the median over replicates at each
  // value of the swept variable, and log-log slopes against it.
  const std::map<std::string, std::string> sweep_var{
      {"samples", "samples"}, {"width", "width"}, {"latent", "latent"}, {"depth", "depth"}};
  const std::vector<std::string> metrics{"total_crossings", "crossings_per_sample", "total_flips",
                                         "distinct_patterns", "distinct_patterns_per_sample", "freeze_step",
                                         "deff_k90", "deff_k99", "deff_pr", "gap", "train_loss", "test_loss"};
  json slopes = json::object(), table = json::array();
  for (const auto& [sweep, var] : sweep_var)
    for (const auto& o : opt.optimizers) {
      std::map<int, std::vector<const json*>> by_value;
      for (const auto& r : rows) {
        if (r["optimizer"] != o || r["sweep"].get<std::string>().rfind("long", 0) == 0) continue;
        // Every run whose other variables sit at the base point belongs to this sweep.
        bool on_axis = (var == "samples" || r["samples"] == opt.base_samples) &&
                       (var == "width" || r["width"] == opt.base_width) &&
                       (var == "latent" || r["latent"] == opt.base_latent) &&
                       (var == "depth" || r["depth"] == opt.base_depth);
        if (on_axis) by_value[r[var].get<int>()].push_back(&r);
      }
      std::map<std::string, std::vector<double>> xs, ys;
      for (const auto& [value, rs] : by_value) {
        json row;
        row["sweep"] = sweep;
        row["optimizer"] = o;
        row["value"] = value;
        row["replicates"] = rs.size();
        for (const auto& mname : metrics) {
          std::vector<double> vals;
          for (const json* r : rs) vals.push_back((*r)[mname].get<double>());
          double med = median(vals);
          row[mname] = med;
          if (med > 0) {
            xs[mname].push_back(std::log(double(value)));
            ys[mname].push_back(std::log(med));
          }
        }
        table.push_back(row);
      }
      for (const auto& mname : metrics) {
        auto f = fit_line(xs[mname], ys[mname]);
        slopes[sweep + "/" + o + "/" + mname] = {{"slope", f.slope}, {"r2", f.r2}, {"points", f.n}};
      }
    }

  // Across all runs of one optimizer: crossings against d_eff, and the gap
  // against sqrt(d_eff / n).
  json vs_deff = json::object();
  for (const auto& o : opt.optimizers) {
    std::vector<double> lx99, lxpr, ly, gx, gy;
    for (const auto& r : rows) {
      if (r["optimizer"] != o || r["sweep"].get<std::string>().rfind("long", 0) == 0) continue;
      double c = r["total_crossings"].get<double>();
      if (c > 0 && r["deff_k99"].get<double>() > 0) {
        lx99.push_back(std::log(r["deff_k99"].get<double>()));
        lxpr.push_back(std::log(r["deff_pr"].get<double>()));
        ly.push_back(std::log(c));
      }
      gx.push_back(std::sqrt(r["deff_k99"].get<double>() / r["samples"].get<double>()));
      gy.push_back(r["gap"].get<double>());
    }
    auto a = fit_line(lx99, ly), b = fit_line(lxpr, ly), g = fit_line(gx, gy);
    vs_deff[o] = {{"log_crossings_vs_log_k99", {{"slope", a.slope}, {"r2", a.r2}, {"points", a.n}}},
                  {"log_crossings_vs_log_pr", {{"slope", b.slope}, {"r2", b.r2}, {"points", b.n}}},
                  {"gap_vs_sqrt_k99_over_n", {{"slope", g.slope}, {"intercept", g.intercept}, {"r2", g.r2},
                                              {"points", g.n}}}};
  }

  json summary;
  summary["experiment"] = "adam-regions";
  summary["paper"] = "arXiv 2505.15013";
  summary["quick"] = opt.quick;
  summary["seed"] = opt.seed;
  summary["options"] = {{"input_dim", opt.input_dim},     {"base_latent", opt.base_latent},
                        {"base_samples", opt.base_samples}, {"base_width", opt.base_width},
                        {"base_depth", opt.base_depth},    {"latent_sweep", opt.latent_sweep},
                        {"samples_sweep", opt.samples_sweep}, {"width_sweep", opt.width_sweep},
                        {"depth_sweep", opt.depth_sweep},  {"optimizers", opt.optimizers},
                        {"replicates", opt.replicates},    {"steps", opt.steps},
                        {"long_steps", opt.long_steps},   {"long_constant", opt.long_constant},
                        {"adam_lr", opt.adam_lr},          {"adam_betas", {opt.adam_beta1, opt.adam_beta2}},
                        {"adam_eps", opt.adam_eps},        {"sgd_lr", opt.sgd_lr},
                        {"teacher_width", opt.teacher_width}, {"label_noise", opt.label_noise},
                        {"test_samples", opt.test_samples}, {"tau_fraction", opt.tau_fraction},
                        {"update_rows", opt.update_rows}};
  summary["runs"] = rows.size();
  summary["table"] = table;
  summary["slopes"] = slopes;
  summary["vs_deff"] = vs_deff;
  summary["threads"] = num_threads();
  summary["seconds"] = std::chrono::duration<double>(std::chrono::steady_clock::now() - wall0).count();
  summary["files"] = {"runs.jsonl", "summary.csv", "curves.csv", "summary.json"};
  std::ofstream(out_dir + "/summary.json") << summary.dump(2) << '\n';
  return summary;
}

}  // namespace echo
