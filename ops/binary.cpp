// Element-wise add/sub/mul/div with b broadcast over the leading dims of a, and
// the scalar affine maps scale/add_scalar.
//
// Layout: a holds n elements, b holds m (b's shape is a suffix of a's), so a is
// rows = n/m rows of m and element i of a pairs with b[j], j = i mod m.
//   y  = f(a_i, b_j)
//   da_i += dy_i · ∂f/∂a(a_i, b_j)
//   db_j += Σ_r dy_{r,j} · ∂f/∂b(a_{r,j}, b_j)
// The sum over rows is deterministic, in fixed row chunks (ops/reductions.h);
// cuda/binary.cu uses the very same partition.
#include "autograd/random.h"
#include "ops/runner.h"
#include "ops/binary.h"

#include <algorithm>
#include <type_traits>
#include <vector>

#include "ops/common.h"
#include "ops/reductions.h"
#if ECHO_HAVE_CUDA
#include "cuda/binary.cuh"
#endif

namespace echo {
namespace {

enum Kind { kAdd = 0, kSub, kMul, kDiv };
const char* kNames[] = {"add", "sub", "mul", "div"};

// The kind is a template parameter in the CPU loops (with_kind below), so that
// each loop body is branch-free and vectorises; the arithmetic is the same.
template <int K, typename T> T binary_value(T a, T b) {
  if constexpr (K == kAdd) return a + b;
  else if constexpr (K == kSub) return a - b;
  else if constexpr (K == kMul) return a * b;
  else return a / b;
}
// ∂f/∂a and ∂f/∂b at a = a_i, b = b_j. add/sub read neither operand (they are
// not saved for those kinds, the pointers may be null).
template <int K, typename T> T d_da(const T* a, const T* b, int64_t i, int64_t j) {
  if constexpr (K == kAdd || K == kSub) return T(1);
  else if constexpr (K == kMul) return b[j];
  else return T(1) / b[j];
}
template <int K, typename T> T d_db(const T* a, const T* b, int64_t i, int64_t j) {
  if constexpr (K == kAdd) return T(1);
  else if constexpr (K == kSub) return T(-1);
  else if constexpr (K == kMul) return a[i];
  else return -a[i] / (b[j] * b[j]);
}
template <typename F> void with_kind(int kind, F&& f) {
  switch (kind) {
    case kAdd: f(std::integral_constant<int, kAdd>()); break;
    case kSub: f(std::integral_constant<int, kSub>()); break;
    case kMul: f(std::integral_constant<int, kMul>()); break;
    default: f(std::integral_constant<int, kDiv>()); break;
  }
}

// Runs body(i0, len, j0) over blocks of consecutive elements of a, where element
// i0 + k pairs with b[j0 + k]: a's rows when b is broadcast, else slices of a
// flat range (so that equal shapes still split over the threads).
template <typename Body> void for_each_block(int64_t n, int64_t m, Body body) {
  const int64_t rows = m ? n / m : 0;
  if (rows == 1) {
    parallel_blocks(n, [&](int64_t i0, int64_t i1) { body(i0, i1 - i0, i0); });
  } else {
    parallel_for(rows, [&](int64_t r) { body(r * m, m, int64_t(0)); });
  }
}

template <int K, typename T>
void forward_cpu(const T* a, const T* b, T* y, int64_t n, int64_t m) {
  for_each_block(n, m, [&](int64_t i0, int64_t len, int64_t j0) {
    for (int64_t k = 0; k < len; ++k) y[i0 + k] = binary_value<K>(a[i0 + k], b[j0 + k]);
  });
}

template <int K, bool Fresh, typename T>
void backward_a_cpu(const T* a, const T* b, const T* dy, T* da, int64_t n, int64_t m) {
  for_each_block(n, m, [&](int64_t i0, int64_t len, int64_t j0) {
    for (int64_t k = 0; k < len; ++k) grad_put<Fresh>(da[i0 + k], dy[i0 + k] * d_da<K>(a, b, i0 + k, j0 + k));
  });
}

template <int K, bool Fresh, typename T>
void backward_b_cpu(const T* a, const T* b, const T* dy, T* db, int64_t n, int64_t m) {
  const int64_t rows = m ? n / m : 0;
  if (rows != 1 && Fresh) std::fill(db, db + m, T(0));
  if (rows == 0) return;
  if (rows == 1) {  // nothing to sum: the chunked sum below would add each term to a zero partial
    for_each_block(n, m, [&](int64_t i0, int64_t len, int64_t) {
      for (int64_t k = 0; k < len; ++k) grad_put<Fresh>(db[i0 + k], dy[i0 + k] * d_db<K>(a, b, i0 + k, i0 + k));
    });
    return;
  }
  add_column_sums<T>(
      rows, m,
      [&](int64_t r, int64_t j) {
        const int64_t i = r * m + j;
        return dy[i] * d_db<K>(a, b, i, j);
      },
      db);
}

void check_broadcast(const char* op, const Tensor& a, const Tensor& b) {
  op_check(a.defined() && b.defined(), op, "both inputs must be defined tensors");
  check_floating_same(op, {&a, &b});
  bool ok = b.ndim() >= 1 && b.ndim() <= a.ndim();
  for (int k = 1; ok && k <= b.ndim(); ++k) ok = a.size(-k) == b.size(-k);
  if (!ok)
    op_error(op, "b must have the shape of a or a suffix of it, got a " + a.describe() + " and b " +
                     b.describe());
}

Tensor binary(int kind, const Tensor& a, const Tensor& b) {
  const char* op = kNames[kind];
  check_broadcast(op, a, b);
  const int64_t n = a.numel(), m = b.numel();
  Tensor y = Tensor::empty(a.shape(), a.dtype(), a.device());
  if (on_cuda(a)) {
#if ECHO_HAVE_CUDA
    gpu::binary_forward(kind, a.data<float>(), b.data<float>(), y.data<float>(), n, m);
#else
    no_cuda_build(op);
#endif
  } else {
    dispatch_floating(a.dtype(), op, [&](auto t) {
      using T = decltype(t);
      with_kind(kind, [&](auto k) { forward_cpu<decltype(k)::value, T>(a.data<T>(), b.data<T>(), y.data<T>(), n, m); });
    });
  }
  if (any_requires_grad({&a, &b})) {
    // add/sub need no operand values; mul/div save both.
    std::vector<Tensor> saved;
    if (kind == kMul || kind == kDiv) saved = {a, b};
    record(op, {a, b}, {y}, saved, [kind, n, m](Node& node, const std::vector<Tensor>& gy, std::vector<Tensor>& gx) {
      const bool uses_values = kind == kMul || kind == kDiv;
      const Tensor a = uses_values ? node.saved(0) : Tensor();
      const Tensor b = uses_values ? node.saved(1) : Tensor();
      const Tensor& dy = gy[0];
      // da and db may be one buffer (mul(x, x)); the two passes run one after the other.
      if (on_cuda(dy)) {
#if ECHO_HAVE_CUDA
        zero_if_fresh(node, gx, 0);
        zero_if_fresh(node, gx, 1);
        if (gx[0].defined())
          gpu::binary_backward_a(kind, cptr<float>(a), cptr<float>(b), dy.data<float>(), gx[0].data<float>(), n, m);
        if (gx[1].defined()) {
          const int64_t rows = m ? n / m : 0;
          const int64_t chunks = row_chunks(rows);
          Tensor partial = chunks > 1 ? Tensor::empty({chunks, m}, DType::F32, Device::CUDA) : Tensor();
          gpu::binary_backward_b(kind, cptr<float>(a), cptr<float>(b), dy.data<float>(), gx[1].data<float>(),
                                 ptr<float>(partial), n, m);
        }
#endif
      } else {
        dispatch_floating(dy.dtype(), kNames[kind], [&](auto t) {
          using T = decltype(t);
          with_kind(kind, [&](auto k) {
            if (gx[0].defined())
              with_fresh(node.grad_is_fresh(0), [&](auto f) {
                backward_a_cpu<decltype(k)::value, decltype(f)::value, T>(cptr<T>(a), cptr<T>(b), dy.data<T>(),
                                                                           gx[0].data<T>(), n, m);
              });
            if (gx[1].defined())
              with_fresh(node.grad_is_fresh(1), [&](auto f) {
                backward_b_cpu<decltype(k)::value, decltype(f)::value, T>(cptr<T>(a), cptr<T>(b), dy.data<T>(),
                                                                           gx[1].data<T>(), n, m);
              });
          });
        });
      }
    }).writes_fresh_grads = true;
  }
  return y;
}

// y = alpha·x + beta; dx += alpha·dy.
Tensor affine(const char* op, const Tensor& x, double alpha, double beta) {
  op_check(x.defined(), op, "input must be a defined tensor");
  check_floating_same(op, {&x});
  const int64_t n = x.numel();
  Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
  if (on_cuda(x)) {
#if ECHO_HAVE_CUDA
    gpu::affine_forward(x.data<float>(), y.data<float>(), n, static_cast<float>(alpha), static_cast<float>(beta));
#else
    no_cuda_build(op);
#endif
  } else {
    dispatch_floating(x.dtype(), op, [&](auto t) {
      using T = decltype(t);
      const T* xp = x.data<T>();
      T* yp = y.data<T>();
      const T al = static_cast<T>(alpha), be = static_cast<T>(beta);
      parallel_for(n, [&](int64_t i) { yp[i] = al * xp[i] + be; });
    });
  }
  if (any_requires_grad({&x})) {
    record(op, {x}, {y}, {}, [op, alpha, n](Node& node, const std::vector<Tensor>& gy, std::vector<Tensor>& gx) {
      if (!gx[0].defined()) return;
      if (on_cuda(gy[0])) {
#if ECHO_HAVE_CUDA
        zero_if_fresh(node, gx, 0);
        gpu::affine_backward(gy[0].data<float>(), gx[0].data<float>(), n, static_cast<float>(alpha));
#endif
      } else {
        dispatch_floating(gy[0].dtype(), op, [&](auto t) {
          using T = decltype(t);
          const T* dy = gy[0].data<T>();
          T* dx = gx[0].data<T>();
          const T al = static_cast<T>(alpha);
          with_fresh(node.grad_is_fresh(0), [&](auto f) {
            parallel_for(n, [&](int64_t i) { grad_put<decltype(f)::value>(dx[i], al * dy[i]); });
          });
        });
      }
    }).writes_fresh_grads = true;
  }
  return y;
}

}  // namespace

Tensor add(const Tensor& a, const Tensor& b) { return binary(kAdd, a, b); }
Tensor sub(const Tensor& a, const Tensor& b) { return binary(kSub, a, b); }
Tensor mul(const Tensor& a, const Tensor& b) { return binary(kMul, a, b); }
Tensor div(const Tensor& a, const Tensor& b) { return binary(kDiv, a, b); }
Tensor scale(const Tensor& x, double alpha) { return affine("scale", x, alpha, 0.0); }
Tensor add_scalar(const Tensor& x, double value) { return affine("add_scalar", x, 1.0, value); }

// Runner entries: add, sub, mul, div (a, b with b's shape a suffix of a's) and
// scale (alpha·x), add_scalar (x + value).
std::vector<RunnerOp> runner_ops_binary() {
  std::vector<RunnerOp> ops;
  for (int kind = kAdd; kind <= kDiv; ++kind)
    ops.push_back(make_runner_op(
        kNames[kind], {"a", "b"}, {},
        [kind](const std::vector<Tensor>& in, const OpAttrs&) { return binary(kind, in[0], in[1]); },
        [kind](Rng& rng, OpAttrs&, int v) {
          if (v > 2) return NamedTensors{};
          const Shape a_shape = v == 0 ? Shape{2, 3, 4} : (v == 1 ? Shape{5, 37, 29} : Shape{1030});
          const Shape b_shape = v == 0 ? Shape{3, 4} : (v == 1 ? Shape{29} : Shape{1030});
          Tensor b = randn(b_shape, rng, DType::F64);
          if (kind == kDiv) b = rand_uniform(b_shape, rng, 0.5, 2.0, DType::F64);  // away from 0
          return NamedTensors{{"a", randn(a_shape, rng, DType::F64)}, {"b", b}};
        }));
  auto affine_cases = [](Rng& rng, OpAttrs&, int v) {
    const Shape shapes[] = {{2, 5}, {7, 301}, {1}};
    if (v > 2) return NamedTensors{};
    return NamedTensors{{"x", randn(shapes[v], rng, DType::F64)}};
  };
  ops.push_back(make_runner_op(
      "scale", {"x"}, {{"alpha", 0.75}},
      [](const std::vector<Tensor>& in, const OpAttrs& a) { return scale(in[0], a.at("alpha")); }, affine_cases));
  ops.push_back(make_runner_op(
      "add_scalar", {"x"}, {{"value", -1.5}},
      [](const std::vector<Tensor>& in, const OpAttrs& a) { return add_scalar(in[0], a.at("value")); },
      affine_cases));
  return ops;
}

}  // namespace echo
