#include "autograd/random.h"
#include "ops/runner.h"
#include "ops/unary.h"

#include <cmath>
#include <type_traits>

#include "ops/common.h"
#include "ops/vector_math.h"
#if ECHO_HAVE_CUDA
#include "cuda/unary.cuh"
#endif

namespace echo {
namespace {

enum Kind { kSigmoid = 0, kSilu, kSoftplus, kExp, kRelu, kTanh };
const char* kNames[] = {"sigmoid", "silu", "softplus", "exp", "relu", "tanh"};

// The kind is a template parameter in the CPU loops (with_kind below), so the
// loop bodies are branch-free. In f32, sigmoid, silu and exp go through the
// vectorised exponential of ops/vector_math.h; f64 keeps std::exp.
template <int K, typename T> T unary_value(T x) {
  if constexpr (K == kSigmoid) return T(1) / (T(1) + std::exp(-x));
  else if constexpr (K == kSilu) return x / (T(1) + std::exp(-x));
  else if constexpr (K == kSoftplus) return x > T(20) ? x : std::log1p(std::exp(x));
  else if constexpr (K == kExp) return std::exp(x);
  else if constexpr (K == kRelu) return x > T(0) ? x : T(0);
  else return std::tanh(x);
}
// f'(x), given x and y = f(x).
template <int K, typename T> T unary_derivative(T x, T y) {
  if constexpr (K == kSigmoid) return y * (T(1) - y);
  else if constexpr (K == kSilu) {
    T s = T(1) / (T(1) + std::exp(-x));
    return s * (T(1) + x * (T(1) - s));
  } else if constexpr (K == kSoftplus) return x > T(20) ? T(1) : T(1) / (T(1) + std::exp(-x));
  else if constexpr (K == kExp) return y;
  else if constexpr (K == kRelu) return x > T(0) ? T(1) : T(0);
  else return T(1) - y * y;
}
template <typename F> void with_kind(int kind, F&& f) {
  switch (kind) {
    case kSigmoid: f(std::integral_constant<int, kSigmoid>()); break;
    case kSilu: f(std::integral_constant<int, kSilu>()); break;
    case kSoftplus: f(std::integral_constant<int, kSoftplus>()); break;
    case kExp: f(std::integral_constant<int, kExp>()); break;
    case kRelu: f(std::integral_constant<int, kRelu>()); break;
    default: f(std::integral_constant<int, kTanh>()); break;
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
      with_kind(kind, [&](auto k) {
        constexpr int K = decltype(k)::value;
        parallel_blocks(n, [&](int64_t i0, int64_t i1) {
          if constexpr (std::is_same_v<T, float> && (K == kSigmoid || K == kSilu || K == kExp)) {
            // f32: the vectorised exponential (ops/vector_math.h)
            if constexpr (K == kSigmoid) vmath::sigmoid(xp + i0, yp + i0, i1 - i0);
            else if constexpr (K == kSilu) vmath::silu(xp + i0, yp + i0, i1 - i0);
            else vmath::exp(xp + i0, yp + i0, i1 - i0);
          } else {
            for (int64_t i = i0; i < i1; ++i) yp[i] = unary_value<K>(xp[i]);
          }
        });
      });
    });
  }
  if (any_requires_grad({&x})) {
    record(op, {x}, {y}, {x, y.detach()}, [kind](Node& node, const std::vector<Tensor>& gy, std::vector<Tensor>& gx) {
      if (!gx[0].defined()) return;
      const bool fresh = node.grad_is_fresh(0);
      const Tensor& x = node.saved(0);
      const Tensor& y = node.saved(1);
      const int64_t n = x.numel();
      if (on_cuda(x)) {
#if ECHO_HAVE_CUDA
        zero_if_fresh(node, gx, 0);
        gpu::unary_backward(kind, x.data<float>(), y.data<float>(), gy[0].data<float>(), gx[0].data<float>(), n);
#endif
      } else {
        dispatch_floating(x.dtype(), kNames[kind], [&](auto t) {
          using T = decltype(t);
          const T *xp = x.data<T>(), *yp = y.data<T>(), *dy = gy[0].data<T>();
          T* dx = gx[0].data<T>();
          with_kind(kind, [&](auto k) {
            constexpr int K = decltype(k)::value;
            with_fresh(fresh, [&](auto f) {
              parallel_blocks(n, [&](int64_t i0, int64_t i1) {
                if constexpr (std::is_same_v<T, float> && K == kSilu) {
                  vmath::silu_backward(xp + i0, dy + i0, dx + i0, i1 - i0, !decltype(f)::value);
                } else {
                  for (int64_t i = i0; i < i1; ++i)
                    grad_put<decltype(f)::value>(dx[i], dy[i] * unary_derivative<K>(xp[i], yp[i]));
                }
              });
            });
          });
        });
      }
    }).writes_fresh_grads = true;
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
