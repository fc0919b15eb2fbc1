// Gated rmsnorm (Mamba-2 RMSNormGated, norm_before_gate=False, one group):
// per row, u = x ⊙ silu(z), r = (Σ_j u_j²/d + ε)^(−1/2), y_j = u_j · r · w_j.
// Backward, with σ = sigmoid(z) and silu'(z) = σ(1 + z(1−σ)):
//   du_j = r·w_j·dy_j − u_j · r³/d · Σ_k dy_k w_k u_k
//   dx_j = du_j · silu(z_j),   dz_j = du_j · x_j · silu'(z_j),   dw_j = Σ_rows dy_j u_j r
// u is recomputed in the backward (cheaper than saving a second [rows,d] tensor);
// dw is a deterministic sum over rows (ops/reductions.h).
#include "ops/gated_rmsnorm.h"

#include <cmath>
#include <type_traits>
#include <vector>

#include "ops/common.h"
#include "ops/vector_math.h"
#include "ops/reductions.h"
#include "ops/runner.h"
#if ECHO_HAVE_CUDA
#include "cuda/gated_rmsnorm.cuh"
#endif

namespace echo {
namespace {

constexpr const char* kOp = "gated_rmsnorm";

template <typename T> T sigmoid_of(T z) { return T(1) / (T(1) + std::exp(-z)); }
// s[j] = σ(z[j]) over a row: in f32 the vectorised exponential (ops/vector_math.h).
template <typename T> void sigmoid_row(const T* z, T* s, int64_t d) {
  if constexpr (std::is_same_v<T, float>) vmath::sigmoid(z, s, d);
  else for (int64_t j = 0; j < d; ++j) s[j] = sigmoid_of(z[j]);
}

// Each element's sigmoid is computed once per pass and kept in a row (forward)
// or in a [rows, d] scratch (backward, for dw): exp dominates these loops. The
// products are formed in the order of the formulas above.
template <typename T>
void forward_cpu(const T* x, const T* z, const T* w, T* y, T* rstd, int64_t rows, int64_t d, double eps) {
  parallel_for(rows, [&](int64_t r) {
    const T *xr = x + r * d, *zr = z + r * d;
    T* yr = y + r * d;  // holds u until the row's scale is known
    sigmoid_row(zr, yr, d);
    T sum_sq = 0;
    for (int64_t j = 0; j < d; ++j) {
      const T u = xr[j] * zr[j] * yr[j];
      yr[j] = u;
      sum_sq += u * u;
    }
    const T inv = T(1) / std::sqrt(sum_sq / T(d) + T(eps));
    rstd[r] = inv;
    for (int64_t j = 0; j < d; ++j) yr[j] = yr[j] * inv * w[j];
  });
}

template <bool FreshX, bool FreshZ, typename T>
void backward_cpu(const T* x, const T* z, const T* w, const T* rstd, const T* dy, T* dx, T* dz, T* dw,
                  int64_t rows, int64_t d) {
  // u = x·silu(z), for dw's column sums after the row pass.
  std::vector<T> u_all(dw ? static_cast<size_t>(rows * d) : 0);
  parallel_for(rows, [&](int64_t r) {
    const T *xr = x + r * d, *zr = z + r * d, *dyr = dy + r * d;
    thread_local std::vector<T> sig;
    sig.resize(static_cast<size_t>(d));
    T* u = dw ? u_all.data() + r * d : nullptr;
    const T inv = rstd[r];
    sigmoid_row(zr, sig.data(), d);
    T dot = 0;  // Σ_k dy_k w_k u_k
    for (int64_t j = 0; j < d; ++j) {
      const T uj = xr[j] * zr[j] * sig[j];
      if (u) u[j] = uj;
      dot += dyr[j] * w[j] * uj;
    }
    if (!dx && !dz) return;
    const T coef = dot * inv * inv * inv / T(d);
    for (int64_t j = 0; j < d; ++j) {
      const T s = sig[j];
      const T silu_z = zr[j] * s;
      const T du = inv * w[j] * dyr[j] - coef * (xr[j] * silu_z);
      if (dx) grad_put<FreshX>(dx[r * d + j], du * silu_z);
      if (dz) grad_put<FreshZ>(dz[r * d + j], du * xr[j] * (s * (T(1) + zr[j] * (T(1) - s))));
    }
  });
  if (dw) {
    add_column_sums<T>(
        rows, d, [&](int64_t r, int64_t j) { return dy[r * d + j] * u_all[r * d + j] * rstd[r]; }, dw);
  }
}

}  // namespace

Tensor gated_rmsnorm(const Tensor& x, const Tensor& z, const Tensor& w, double eps) {
  check_floating_same(kOp, {&x, &z, &w});
  op_check(x.ndim() >= 1 && x.size(-1) > 0, kOp, "x must have a non-empty last axis, got " + x.describe());
  check_shape(kOp, "z", z, x.shape());
  check_shape(kOp, "w", w, {x.size(-1)});
  op_check(eps >= 0, kOp, "eps must be >= 0, got " + std::to_string(eps));
  const int64_t d = x.size(-1), rows = x.numel() / d;
  Shape rows_shape(x.shape().begin(), x.shape().end() - 1);
  Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
  Tensor rstd = Tensor::empty(rows_shape, x.dtype(), x.device());
  if (on_cuda(x)) {
#if ECHO_HAVE_CUDA
    gpu::gated_rmsnorm_forward(x.data<float>(), z.data<float>(), w.data<float>(), y.data<float>(),
                               rstd.data<float>(), rows, d, static_cast<float>(eps));
#else
    no_cuda_build(kOp);
#endif
  } else {
    dispatch_floating(x.dtype(), kOp, [&](auto t) {
      using T = decltype(t);
      forward_cpu<T>(x.data<T>(), z.data<T>(), w.data<T>(), y.data<T>(), rstd.data<T>(), rows, d, eps);
    });
  }
  if (any_requires_grad({&x, &z, &w})) {
    record(kOp, {x, z, w}, {y}, {x, z, w, rstd},
           [](Node& node, const std::vector<Tensor>& gy, std::vector<Tensor>& g) {
             const Tensor &x = node.saved(0), &z = node.saved(1), &w = node.saved(2), &rstd = node.saved(3);
             const int64_t d = x.size(-1), rows = x.numel() / d;
             zero_if_fresh(node, g, 2);  // dw: a column sum, added
             if (on_cuda(x)) {
#if ECHO_HAVE_CUDA
               zero_if_fresh(node, g, 0);
               zero_if_fresh(node, g, 1);
               Tensor work;
               if (g[2].defined())
                 work = Tensor::empty({gpu::gated_rmsnorm_workspace_floats(rows, d)}, DType::F32, Device::CUDA);
               gpu::gated_rmsnorm_backward(x.data<float>(), z.data<float>(), w.data<float>(), rstd.data<float>(),
                                           gy[0].data<float>(), ptr<float>(g[0]), ptr<float>(g[1]),
                                           ptr<float>(g[2]), ptr<float>(work), rows, d);
#endif
             } else {
               dispatch_floating(x.dtype(), kOp, [&](auto t) {
                 using T = decltype(t);
                 with_fresh(node.grad_is_fresh(0), [&](auto fx) {
                   with_fresh(node.grad_is_fresh(1), [&](auto fz) {
                     backward_cpu<decltype(fx)::value, decltype(fz)::value, T>(
                         x.data<T>(), z.data<T>(), w.data<T>(), rstd.data<T>(), gy[0].data<T>(), ptr<T>(g[0]),
                         ptr<T>(g[1]), ptr<T>(g[2]), rows, d);
                   });
                 });
               });
             }
           }).writes_fresh_grads = true;
  }
  return y;
}

RunnerOp runner_op_gated_rmsnorm() {
  RunnerOp op;
  op.name = kOp;
  op.inputs = {"x", "z", "w"};
  op.outputs = {"y"};
  op.attr_defaults = {{"eps", 1e-5}};
  op.forward = [](const NamedTensors& in, const OpAttrs& attrs) {
    for (const char* name : {"x", "z", "w"})
      op_check(in.count(name) && in.at(name).defined(), kOp, std::string("missing input ") + name);
    auto it = attrs.find("eps");
    const double eps = it != attrs.end() ? it->second : 1e-5;
    return NamedTensors{{"y", gated_rmsnorm(in.at("x"), in.at("z"), in.at("w"), eps)}};
  };
  op.cases = [](Rng& rng, OpAttrs& attrs, int variant) {
    const Shape shapes[] = {{2, 5, 16}, {3, 37, 100}, {1, 9, 300}};
    if (variant > 2) return NamedTensors{};
    const Shape& s = shapes[variant];
    attrs["eps"] = 1e-5;
    return NamedTensors{{"x", randn(s, rng, DType::F64)},
                        {"z", randn(s, rng, DType::F64, Device::CPU, 2.0)},
                        {"w", randn({s.back()}, rng, DType::F64)}};
  };
  op.example = [cases = op.cases](Rng& rng, OpAttrs& attrs) { return cases(rng, attrs, 0); };
  return op;
}

}  // namespace echo
