// rmsnorm over the last axis. Per row x ∈ R^d, with r = (Σ_j x_j²/d + ε)^(−1/2):
//   y_j  = x_j · r · w_j
//   dx_j = r·w_j·dy_j − x_j · r³/d · Σ_k dy_k w_k x_k     (∂r/∂x_j = −r³ x_j / d)
//   dw_j = Σ_rows dy_j · x_j · r
// The forward saves r per row so the backward needs no second reduction over x.
// dw is a deterministic sum over rows (ops/reductions.h).
#include "autograd/random.h"
#include "ops/runner.h"
#include "ops/rmsnorm.h"

#include <cmath>
#include <vector>

#include "ops/common.h"
#include "ops/reductions.h"
#if ECHO_HAVE_CUDA
#include "cuda/rmsnorm.cuh"
#endif

namespace echo {
namespace {

constexpr const char* kOp = "rmsnorm";

template <typename T>
void forward_cpu(const T* x, const T* w, T* y, T* rstd, int64_t rows, int64_t d, double eps) {
  parallel_for(rows, [&](int64_t r) {
    const T* xr = x + r * d;
    T* yr = y + r * d;
    T sum_sq = 0;
    for (int64_t j = 0; j < d; ++j) sum_sq += xr[j] * xr[j];
    const T inv = T(1) / std::sqrt(sum_sq / T(d) + T(eps));
    rstd[r] = inv;
    for (int64_t j = 0; j < d; ++j) yr[j] = xr[j] * inv * w[j];
  });
}

template <bool Fresh, typename T>
void backward_cpu(const T* x, const T* w, const T* rstd, const T* dy, T* dx, T* dw, int64_t rows,
                  int64_t d) {
  if (dx) {
    parallel_for(rows, [&](int64_t r) {
      const T *xr = x + r * d, *dyr = dy + r * d;
      T* dxr = dx + r * d;
      const T inv = rstd[r];
      T dot = 0;  // Σ_k dy_k w_k x_k
      for (int64_t j = 0; j < d; ++j) dot += dyr[j] * w[j] * xr[j];
      const T coef = dot * inv * inv * inv / T(d);
      for (int64_t j = 0; j < d; ++j) grad_put<Fresh>(dxr[j], inv * w[j] * dyr[j] - coef * xr[j]);
    });
  }
  if (dw) {
    add_column_sums<T>(rows, d, [&](int64_t r, int64_t j) { return dy[r * d + j] * x[r * d + j] * rstd[r]; },
                       dw);
  }
}

}  // namespace

Tensor rmsnorm(const Tensor& x, const Tensor& w, double eps) {
  check_floating_same(kOp, {&x, &w});
  op_check(x.ndim() >= 1 && x.size(-1) > 0, kOp, "x must have a non-empty last axis, got " + x.describe());
  check_shape(kOp, "w", w, {x.size(-1)});
  op_check(eps >= 0, kOp, "eps must be >= 0, got " + std::to_string(eps));
  const int64_t d = x.size(-1), rows = x.numel() / d;
  Shape rows_shape(x.shape().begin(), x.shape().end() - 1);
  Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
  Tensor rstd = Tensor::empty(rows_shape, x.dtype(), x.device());
  if (on_cuda(x)) {
#if ECHO_HAVE_CUDA
    gpu::rmsnorm_forward(x.data<float>(), w.data<float>(), y.data<float>(), rstd.data<float>(), rows, d,
                         static_cast<float>(eps));
#else
    no_cuda_build(kOp);
#endif
  } else {
    dispatch_floating(x.dtype(), kOp, [&](auto t) {
      using T = decltype(t);
      forward_cpu<T>(x.data<T>(), w.data<T>(), y.data<T>(), rstd.data<T>(), rows, d, eps);
    });
  }
  if (any_requires_grad({&x, &w})) {
    record(kOp, {x, w}, {y}, {x, w, rstd}, [](Node& node, const std::vector<Tensor>& gy, std::vector<Tensor>& g) {
      const Tensor &x = node.saved(0), &w = node.saved(1), &rstd = node.saved(2);
      const int64_t d = x.size(-1), rows = x.numel() / d;
      zero_if_fresh(node, g, 1);  // dw: a column sum, added
      if (on_cuda(x)) {
#if ECHO_HAVE_CUDA
        zero_if_fresh(node, g, 0);
        Tensor work;
        if (g[1].defined())
          work = Tensor::empty({gpu::rmsnorm_workspace_floats(rows, d)}, DType::F32, Device::CUDA);
        gpu::rmsnorm_backward(x.data<float>(), w.data<float>(), rstd.data<float>(), gy[0].data<float>(),
                              ptr<float>(g[0]), ptr<float>(g[1]), ptr<float>(work), rows, d);
#endif
      } else {
        dispatch_floating(x.dtype(), kOp, [&](auto t) {
          using T = decltype(t);
          with_fresh(node.grad_is_fresh(0), [&](auto f) {
            backward_cpu<decltype(f)::value, T>(x.data<T>(), w.data<T>(), rstd.data<T>(), gy[0].data<T>(),
                                                ptr<T>(g[0]), ptr<T>(g[1]), rows, d);
          });
        });
      }
    }).writes_fresh_grads = true;
  }
  return y;
}

// Runner entry: `echo-lm op rmsnorm` (x [.., d], w [d]; eps).
std::vector<RunnerOp> runner_ops_rmsnorm() {
  return {make_runner_op(
      "rmsnorm", {"x", "w"}, {{"eps", 1e-5}},
      [](const std::vector<Tensor>& in, const OpAttrs& a) { return rmsnorm(in[0], in[1], a.at("eps")); },
      [](Rng& rng, OpAttrs&, int v) {
        const Shape shapes[] = {{2, 5, 16}, {3, 37, 100}, {1, 9, 300}};
        if (v > 2) return NamedTensors{};
        const Shape& s = shapes[v];
        return NamedTensors{{"x", randn(s, rng, DType::F64)}, {"w", randn({s.back()}, rng, DType::F64)}};
      })};
}

}  // namespace echo
