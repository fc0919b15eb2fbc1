#include "train/optimizer.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>

#include "autograd/parallel.h"
#include "autograd/tape.h"
#if ECHO_HAVE_CUDA
#include "cuda/adamw.cuh"
#endif

namespace echo {

AdamW::AdamW(std::vector<ParamRef> params, AdamWConfig config) : params_(std::move(params)), cfg_(config) {
  for (const auto& p : params_) {
    if (!p.param.defined()) throw std::runtime_error("AdamW: parameter " + p.name + " is undefined");
    m_.push_back(Tensor::zeros(p.param.shape(), p.param.dtype(), p.param.device()));
    v_.push_back(Tensor::zeros(p.param.shape(), p.param.dtype(), p.param.device()));
  }
}

void AdamW::zero_grad() {
  for (auto& p : params_) p.param.zero_grad();
}

namespace {
// Blocks of consecutive elements per task, each an explicit SIMD loop: the
// divisions and square roots dominate, and their vector forms round exactly
// as the scalar ones, so the result is the same to the bit.
// With Scaled, the gradient is taken as g + a·g (a = scale − 1), the arithmetic
// of scale_grads, without writing it back.
template <bool Scaled, typename T>
void adamw_cpu(T* p, const T* g, T* m, T* v, int64_t n, T lr, T b1, T b2, T eps, T bias1, T bias2, T decay, T a) {
  parallel_blocks(n, [&](int64_t i0, int64_t i1) {
#pragma omp simd
    for (int64_t i = i0; i < i1; ++i) {
      T gi = g[i];
      if constexpr (Scaled) gi += a * gi;
      T mi = b1 * m[i] + (T(1) - b1) * gi;
      T vi = b2 * v[i] + (T(1) - b2) * gi * gi;
      m[i] = mi;
      v[i] = vi;
      p[i] = p[i] * decay - lr * (mi / bias1) / (std::sqrt(vi / bias2) + eps);
    }
  });
}
}  // namespace

void AdamW::step(double lr, double grad_scale) {
  NoGrad no_grad;
  const bool scaled = grad_scale != 1.0;
  ++steps_;
  const double bias1 = 1 - std::pow(cfg_.beta1, double(steps_));
  const double bias2 = 1 - std::pow(cfg_.beta2, double(steps_));
  for (size_t i = 0; i < params_.size(); ++i) {
    Tensor& p = params_[i].param;
    Tensor g = p.grad();
    if (!g.defined()) continue;
    const double decay = params_[i].decay ? 1 - lr * cfg_.weight_decay : 1.0;
    const int64_t n = p.numel();
    if (p.device() == Device::CUDA) {
#if ECHO_HAVE_CUDA
      if (scaled) scale_grads({params_[i]}, grad_scale);
      gpu::adamw_step(p.data<float>(), g.data<float>(), m_[i].data<float>(), v_[i].data<float>(), n,
                      (float)lr, (float)cfg_.beta1, (float)cfg_.beta2, (float)cfg_.eps, (float)bias1,
                      (float)bias2, (float)decay);
#endif
    } else {
      dispatch_floating(p.dtype(), "AdamW", [&](auto t) {
        using T = decltype(t);
        const T a = static_cast<T>(grad_scale - 1.0);
        if (scaled)
          adamw_cpu<true, T>(p.data<T>(), g.data<T>(), m_[i].data<T>(), v_[i].data<T>(), n, T(lr), T(cfg_.beta1),
                             T(cfg_.beta2), T(cfg_.eps), T(bias1), T(bias2), T(decay), a);
        else
          adamw_cpu<false, T>(p.data<T>(), g.data<T>(), m_[i].data<T>(), v_[i].data<T>(), n, T(lr), T(cfg_.beta1),
                              T(cfg_.beta2), T(cfg_.eps), T(bias1), T(bias2), T(decay), a);
      });
    }
    p.bump_version();
    m_[i].bump_version();
    v_[i].bump_version();
  }
}

namespace {
// Σ g² of one gradient in double and whether it is finite. CPU: fixed chunks
// summed in order (the same result for any thread count).
double sum_squares_cpu(const Tensor& g, bool* finite) {
  const int64_t n = g.numel();
  constexpr int64_t kChunk = 4096;
  const int64_t chunks = (n + kChunk - 1) / kChunk;
  std::vector<double> partial(chunks);
  std::vector<char> ok(chunks, 1);
  dispatch_floating(g.dtype(), "grad norm", [&](auto t) {
    using T = decltype(t);
    const T* p = g.data<T>();
    parallel_for(chunks, [&](int64_t c) {
      double s = 0;
      for (int64_t i = c * kChunk; i < std::min(n, (c + 1) * kChunk); ++i) {
        if (!std::isfinite(double(p[i]))) ok[c] = 0;
        s += double(p[i]) * double(p[i]);
      }
      partial[c] = s;
    });
  });
  double s = 0;
  for (double x : partial) s += x;
  *finite = true;
  for (char c : ok) *finite = *finite && c;
  return s;
}
}  // namespace

double GradStats::norm() const { return std::sqrt(sum_squares); }

GradStats grad_stats(const std::vector<ParamRef>& params) {
  GradStats st;
#if ECHO_HAVE_CUDA
  std::vector<gpu::GradSlice> slices;
#endif
  for (const auto& p : params) {
    const Tensor g = p.param.grad();
    if (!g.defined()) continue;
    if (g.device() == Device::CUDA) {
#if ECHO_HAVE_CUDA
      if (g.dtype() != DType::F32)
        throw std::runtime_error("grad norm: CUDA gradients are f32, got " + g.describe() + " for " + p.name);
      slices.push_back({g.data<float>(), g.numel(), 0, 0});
#endif
      continue;
    }
    bool finite = true;
    st.sum_squares += sum_squares_cpu(g, &finite);
    st.finite = st.finite && finite;
  }
#if ECHO_HAVE_CUDA
  if (!slices.empty()) {
    Tensor workspace = Tensor::empty({gpu::plan_sum_squares(slices)}, DType::F64, Device::CUDA);
    bool finite = true;
    st.sum_squares += gpu::sum_squares(slices, workspace.data<double>(), &finite);
    st.finite = st.finite && finite;
  }
#endif
  return st;
}

double global_grad_norm(const std::vector<ParamRef>& params) { return grad_stats(params).norm(); }
bool grads_finite(const std::vector<ParamRef>& params) { return grad_stats(params).finite; }

void scale_grads(const std::vector<ParamRef>& params, double factor) {
  NoGrad no_grad;
  for (const auto& p : params) {
    Tensor g = p.param.grad();
    if (!g.defined()) continue;
    if (g.device() != Device::CPU) {
      Tensor copy = g.clone();
      g.add_(copy, factor - 1.0);  // g ← g + (factor−1)·g = factor·g
      continue;
    }
    // The same arithmetic in place, element by element (no copy needed).
    dispatch_floating(g.dtype(), "scale_grads", [&](auto t) {
      using T = decltype(t);
      T* d = g.data<T>();
      const T a = static_cast<T>(factor - 1.0);
      const int64_t n = g.numel();
      parallel_blocks(n, [&](int64_t i0, int64_t i1) {
#pragma omp simd
        for (int64_t i = i0; i < i1; ++i) d[i] += a * d[i];
      });
    });
    g.bump_version();
  }
}

double lr_schedule(int64_t step, int64_t warmup, int64_t total, double lr_max, double lr_min) {
  if (warmup > 0 && step <= warmup) return lr_max * double(step) / double(warmup);
  if (total <= warmup) return lr_max;
  double progress = std::min(1.0, double(step - warmup) / double(total - warmup));
  return lr_min + 0.5 * (lr_max - lr_min) * (1 + std::cos(M_PI * progress));
}

}  // namespace echo
