#include "autograd/random.h"
#include "ops/runner.h"
#include "ops/unary.h"

#include <cmath>

#include "ops/common.h"
#if ECHO_HAVE_CUDA
#include "cuda/unary.cuh"
#endif

namespace echo {
namespace {

enum Kind { kSigmoid = 0, kSilu, kSoftplus, kExp, kRelu, kTanh };
const char* kNames[] = {"sigmoid", "silu", "softplus", "exp", "relu", "tanh"};

template <typename T> T unary_value(int kind, T x) {
  switch (kind) {
    case kSigmoid: return T(1) / (T(1) + std::exp(-x));
    case kSilu: return x / (T(1) + std::exp(-x));
    case kSoftplus: return x > T(20) ? x : std::log1p(std::exp(x));
    case kExp: return std::exp(x);
    case kRelu: return x > T(0) ? x : T(0);
    default: return std::tanh(x);
  }
}
// f'(x), given x and y = f(x).
template <typename T> T unary_derivative(int kind, T x, T y) {
  switch (kind) {
    case kSigmoid: return y * (T(1) - y);
    case kSilu: { T s = T(1) / (T(1) + std::exp(-x)); return s * (T(1) + x * (T(1) - s)); }
    case kSoftplus: return x > T(20) ? T(1) : T(1) / (T(1) + std::exp(-x));
    case kExp: return y;
    case kRelu: return x > T(0) ? T(1) : T(0);
    default: return T(1) - y * y;
  }
}

Tensor unary(int kind, const Tensor& x) {
  const char* op = kNames[kind];
  check_floating_same(op, {&x});
  Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
  const int64_t n = x.numel();
  if (on_cuda(x)) {
#if ECHO_HAVE_CUDA
    gpu::unary_forward(kind, x.data<float>(), y.data<float>(), n);
#else
    no_cuda_build(op);
#endif
  } else {
    dispatch_floating(x.dtype(), op, [&](auto t) {
      using T = decltype(t);
      const T* xp = x.data<T>();
      T* yp = y.data<T>();
      parallel_for(n, [&](int64_t i) { yp[i] = unary_value<T>(kind, xp[i]); });
    });
  }
  if (any_requires_grad({&x})) {
    record(op, {x}, {y}, {x, y.detach()}, [kind](Node& node, const std::vector<Tensor>& gy, std::vector<Tensor>& gx) {
      if (!gx[0].defined()) return;
      const Tensor& x = node.saved(0);
      const Tensor& y = node.saved(1);
      const int64_t n = x.numel();
      if (on_cuda(x)) {
#if ECHO_HAVE_CUDA
        gpu::unary_backward(kind, x.data<float>(), y.data<float>(), gy[0].data<float>(), gx[0].data<float>(), n);
#endif
      } else {
        dispatch_floating(x.dtype(), kNames[kind], [&](auto t) {
          using T = decltype(t);
          const T *xp = x.data<T>(), *yp = y.data<T>(), *dy = gy[0].data<T>();
          T* dx = gx[0].data<T>();
          parallel_for(n, [&](int64_t i) { dx[i] += dy[i] * unary_derivative<T>(kind, xp[i], yp[i]); });
        });
      }
    });
  }
  return y;
}

}  // namespace

Tensor sigmoid(const Tensor& x) { return unary(kSigmoid, x); }
Tensor silu(const Tensor& x) { return unary(kSilu, x); }
Tensor softplus(const Tensor& x) { return unary(kSoftplus, x); }
Tensor exp(const Tensor& x) { return unary(kExp, x); }
Tensor relu(const Tensor& x) { return unary(kRelu, x); }
Tensor tanh(const Tensor& x) { return unary(kTanh, x); }

// Runner entries, one per function: sigmoid, silu, softplus, exp, relu, tanh (x -> y).
std::vector<RunnerOp> runner_ops_unary() {
  std::vector<RunnerOp> ops;
  for (int kind = kSigmoid; kind <= kTanh; ++kind)
    ops.push_back(make_runner_op(
        kNames[kind], {"x"}, {}, [kind](const std::vector<Tensor>& in, const OpAttrs&) { return unary(kind, in[0]); },
        [kind](Rng& rng, OpAttrs&, int v) {
          const Shape shapes[] = {{2, 3, 5}, {3, 333}, {1, 1031}};
          if (v > 2) return NamedTensors{};
          // Away from relu's kink at 0, where the finite differences are not its derivative.
          Tensor x = randn(shapes[v], rng, DType::F64, Device::CPU, kind == kSoftplus ? 8.0 : 2.0);
          if (kind == kRelu) {
            std::vector<double> xs = x.to_vector();
            for (double& e : xs) e += e >= 0 ? 0.05 : -0.05;
            x = Tensor::from_vector(xs, shapes[v], DType::F64);
          }
          return NamedTensors{{"x", x}};
        }));
  return ops;
}

}  // namespace echo
