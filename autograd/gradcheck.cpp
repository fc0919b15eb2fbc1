#include "autograd/gradcheck.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <sstream>

#include "autograd/random.h"
#include "autograd/tape.h"

namespace echo {

namespace {
struct PoisonScope {
  bool previous = poison_uninitialized();
  PoisonScope() { set_poison_uninitialized(true); }
  ~PoisonScope() { set_poison_uninitialized(previous); }
};

double project(const std::vector<Tensor>& outs, const std::vector<Tensor>& dirs) {
  double s = 0;
  for (size_t o = 0; o < outs.size(); ++o) {
    if (!outs[o].defined()) continue;
    auto a = outs[o].to_vector(), b = dirs[o].to_vector();
    for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  }
  return s;
}
}  // namespace

std::string GradcheckResult::report() const {
  std::ostringstream o;
  for (const auto& r : inputs)
    o << r.name << ": max_rel_error=" << r.max_error << " max_abs_error=" << r.max_abs_error
      << " checked=" << r.checked << (r.accumulates ? "" : " BACKWARD DOES NOT ACCUMULATE") << "\n";
  o << (ok ? "PASS" : "FAIL") << "\n";
  return o.str();
}

GradcheckResult gradcheck(const GradcheckFn& fn, const std::vector<Tensor>& inputs,
                          const std::vector<bool>& differentiable,
                          const std::vector<std::string>& names, const GradcheckOptions& opt) {
  PoisonScope poison;
  Rng rng(opt.seed);
  const size_t n_in = inputs.size();

  auto fresh_leaves = [&]() {
    std::vector<Tensor> xs(n_in);
    for (size_t i = 0; i < n_in; ++i) {
      if (!inputs[i].defined()) continue;
      xs[i] = inputs[i].detach().clone();
      if (differentiable[i]) xs[i].set_requires_grad(true);
    }
    return xs;
  };

  // Directions for the projection, fixed for the whole check.
  std::vector<Tensor> dirs;
  {
    NoGrad ng;
    auto outs = fn(fresh_leaves());
    for (auto& o : outs) dirs.push_back(o.defined() ? randn(o.shape(), rng, DType::F64) : Tensor());
  }

  auto analytic = [&](bool prefill, std::vector<Tensor>& g0) {
    auto xs = fresh_leaves();
    for (size_t i = 0; i < n_in; ++i)
      if (prefill && xs[i].defined() && differentiable[i]) {
        g0[i] = randn(xs[i].shape(), rng, DType::F64);
        xs[i].set_grad(g0[i].clone());
      }
    auto outs = fn(xs);
    std::vector<Tensor> roots, seeds;
    for (size_t o = 0; o < outs.size(); ++o)
      if (outs[o].defined() && outs[o].requires_grad()) {
        roots.push_back(outs[o]);
        seeds.push_back(dirs[o]);
      }
    if (!roots.empty()) run_backward(roots, seeds);
    std::vector<std::vector<double>> g(n_in);
    for (size_t i = 0; i < n_in; ++i) {
      if (!xs[i].defined() || !differentiable[i]) continue;
      g[i] = xs[i].grad().defined() ? xs[i].grad().to_vector()
                                    : std::vector<double>(xs[i].numel(), 0.0);
      if (prefill && xs[i].grad().defined() == false) g[i] = g0[i].to_vector();
    }
    return g;
  };

  std::vector<Tensor> g0(n_in);
  auto clean = analytic(false, g0);
  auto prefilled = analytic(true, g0);

  GradcheckResult result;
  for (size_t i = 0; i < n_in; ++i) {
    if (!inputs[i].defined() || !differentiable[i]) continue;
    GradcheckInputReport rep;
    rep.name = i < names.size() ? names[i] : ("input" + std::to_string(i));
    auto base = g0[i].to_vector();
    for (size_t j = 0; j < clean[i].size(); ++j) {
      double added = prefilled[i][j] - base[j];
      double scale = std::max({1.0, std::fabs(base[j]), std::fabs(clean[i][j])});
      if (!(std::fabs(added - clean[i][j]) <= 1e-9 * scale)) rep.accumulates = false;
    }

    // Central differences on (a subset of) the elements.
    const int64_t n = inputs[i].numel();
    std::vector<int64_t> idx(n);
    std::iota(idx.begin(), idx.end(), 0);
    if (opt.max_elements > 0 && n > opt.max_elements) {
      for (int64_t k = 0; k < opt.max_elements; ++k) std::swap(idx[k], idx[rng.randint(k, n)]);
      idx.resize(opt.max_elements);
    }
    std::vector<double> num(idx.size()), ana(idx.size());
    {
      NoGrad ng;
      std::vector<Tensor> xs(n_in);
      for (size_t k = 0; k < n_in; ++k)
        if (inputs[k].defined()) xs[k] = inputs[k].detach().clone();
      if (xs[i].dtype() != DType::F64) throw std::runtime_error("gradcheck needs float64 inputs");
      double* p = xs[i].data<double>();
      for (size_t k = 0; k < idx.size(); ++k) {
        const double orig = p[idx[k]];
        p[idx[k]] = orig + opt.eps;
        xs[i].bump_version();
        double lp = project(fn(xs), dirs);
        p[idx[k]] = orig - opt.eps;
        xs[i].bump_version();
        double lm = project(fn(xs), dirs);
        p[idx[k]] = orig;
        num[k] = (lp - lm) / (2 * opt.eps);
        ana[k] = clean[i][idx[k]];
      }
    }
    double scale = 1e-8;
    for (size_t k = 0; k < idx.size(); ++k) scale = std::max({scale, std::fabs(num[k]), std::fabs(ana[k])});
    for (size_t k = 0; k < idx.size(); ++k) {
      double e = std::fabs(num[k] - ana[k]);
      if (!(e <= rep.max_abs_error)) rep.max_abs_error = std::isnan(e) ? INFINITY : e;
    }
    rep.max_error = rep.max_abs_error / scale;
    rep.gradient_scale = scale;
    rep.checked = static_cast<int64_t>(idx.size());
    if (!(rep.max_error <= opt.tolerance) || !rep.accumulates) result.ok = false;
    result.inputs.push_back(rep);
  }
  return result;
}

}  // namespace echo
