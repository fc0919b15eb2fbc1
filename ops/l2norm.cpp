// l2norm over the last axis. Per row x ∈ R^d, with r = (Σ_j x_j² + ε)^(−1/2):
//   y_j  = x_j · r
//   dx_j = r·dy_j − x_j · r³ · Σ_k dy_k x_k        (∂r/∂x_j = −r³ x_j)
// ε keeps a zero row at zero output (and a finite gradient) instead of 0/0.
#include "autograd/random.h"
#include "ops/runner.h"
#include "ops/l2norm.h"

#include <cmath>

#include "ops/common.h"
#if ECHO_HAVE_CUDA
#include "cuda/l2norm.cuh"
#endif

namespace echo {
namespace {

constexpr const char* kOp = "l2norm";

template <typename T>
void forward_cpu(const T* x, T* y, T* rnorm, int64_t rows, int64_t d, double eps) {
  parallel_for(rows, [&](int64_t r) {
    const T* xr = x + r * d;
    T* yr = y + r * d;
    T sum_sq = 0;
    for (int64_t j = 0; j < d; ++j) sum_sq += xr[j] * xr[j];
    const T inv = T(1) / std::sqrt(sum_sq + T(eps));
    rnorm[r] = inv;
    for (int64_t j = 0; j < d; ++j) yr[j] = xr[j] * inv;
  });
}

template <typename T>
void backward_cpu(const T* x, const T* rnorm, const T* dy, T* dx, int64_t rows, int64_t d) {
  parallel_for(rows, [&](int64_t r) {
    const T *xr = x + r * d, *dyr = dy + r * d;
    T* dxr = dx + r * d;
    const T inv = rnorm[r];
    T dot = 0;  // Σ_k dy_k x_k
    for (int64_t j = 0; j < d; ++j) dot += dyr[j] * xr[j];
    const T coef = dot * inv * inv * inv;
    for (int64_t j = 0; j < d; ++j) dxr[j] += inv * dyr[j] - coef * xr[j];
  });
}

}  // namespace

Tensor l2norm(const Tensor& x, double eps) {
  check_floating_same(kOp, {&x});
  op_check(x.ndim() >= 1 && x.size(-1) > 0, kOp, "x must have a non-empty last axis, got " + x.describe());
  op_check(eps >= 0, kOp, "eps must be >= 0, got " + std::to_string(eps));
  const int64_t d = x.size(-1), rows = x.numel() / d;
  Shape rows_shape(x.shape().begin(), x.shape().end() - 1);
  Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
  Tensor rnorm = Tensor::empty(rows_shape, x.dtype(), x.device());  // (Σx² + ε)^(−1/2) per row
  if (on_cuda(x)) {
#if ECHO_HAVE_CUDA
    gpu::l2norm_forward(x.data<float>(), y.data<float>(), rnorm.data<float>(), rows, d, static_cast<float>(eps));
#else
    no_cuda_build(kOp);
#endif
  } else {
    dispatch_floating(x.dtype(), kOp, [&](auto t) {
      using T = decltype(t);
      forward_cpu<T>(x.data<T>(), y.data<T>(), rnorm.data<T>(), rows, d, eps);
    });
  }
  if (any_requires_grad({&x})) {
    record(kOp, {x}, {y}, {x, rnorm}, [](Node& node, const std::vector<Tensor>& gy, std::vector<Tensor>& g) {
      if (!g[0].defined()) return;
      const Tensor &x = node.saved(0), &rnorm = node.saved(1);
      const int64_t d = x.size(-1), rows = x.numel() / d;
      if (on_cuda(x)) {
#if ECHO_HAVE_CUDA
        gpu::l2norm_backward(x.data<float>(), rnorm.data<float>(), gy[0].data<float>(), g[0].data<float>(), rows, d);
#endif
      } else {
        dispatch_floating(x.dtype(), kOp, [&](auto t) {
          using T = decltype(t);
          backward_cpu<T>(x.data<T>(), rnorm.data<T>(), gy[0].data<T>(), g[0].data<T>(), rows, d);
        });
      }
    });
  }
  return y;
}

// Runner entry: `echo-lm op l2norm` (x [.., d]; eps).
std::vector<RunnerOp> runner_ops_l2norm() {
  return {make_runner_op(
      "l2norm", {"x"}, {{"eps", 1e-6}},
      [](const std::vector<Tensor>& in, const OpAttrs& a) { return l2norm(in[0], a.at("eps")); },
      [](Rng& rng, OpAttrs&, int v) {
        const Shape shapes[] = {{2, 5, 8}, {3, 41, 33}, {2, 7, 270}};
        if (v > 2) return NamedTensors{};
        return NamedTensors{{"x", randn(shapes[v], rng, DType::F64)}};
      })};
}

}  // namespace echo
