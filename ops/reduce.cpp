// sum, mean and sum_last, deterministic on both backends.
//
//   sum:      y = Σ_i x_i                dx_i += dy
//   mean:     y = (1/n) Σ_i x_i          dx_i += dy / n
//   sum_last: y_r = Σ_j x_{r,j}          dx_{r,j} += dy_r
//
// CPU: sum/mean cut x into fixed chunks of kSumChunk elements, sum each chunk
// sequentially (in parallel over chunks), then add the chunk sums in order:
// the partition depends on n only, so the result is the same for any thread
// count, and the error grows like the chunk length rather than n. sum_last
// sums each row sequentially, in parallel over rows. CUDA (cuda/reduce.cu):
// a two-pass block reduction with a grid size that depends on n only.
#include "autograd/random.h"
#include "ops/runner.h"
#include "ops/reduce.h"

#include <vector>

#include "ops/common.h"
#if ECHO_HAVE_CUDA
#include "cuda/reduce.cuh"
#endif

namespace echo {
namespace {

constexpr int64_t kSumChunk = 4096;

template <typename T> T sum_cpu(const T* x, int64_t n) {
  const int64_t chunks = (n + kSumChunk - 1) / kSumChunk;
  std::vector<T> partial(static_cast<size_t>(chunks));
  parallel_for(chunks, [&](int64_t c) {
    const int64_t end = std::min(n, (c + 1) * kSumChunk);
    T acc = 0;
    for (int64_t i = c * kSumChunk; i < end; ++i) acc += x[i];
    partial[c] = acc;
  });
  T total = 0;
  for (int64_t c = 0; c < chunks; ++c) total += partial[c];
  return total;
}

// sum (scale 1) or mean (scale 1/n) of all elements -> [1].
Tensor sum_all(const char* op, const Tensor& x, bool average) {
  op_check(x.defined(), op, "input must be a defined tensor");
  check_floating_same(op, {&x});
  const int64_t n = x.numel();
  if (average) op_check(n > 0, op, "mean of an empty tensor " + x.describe());
  const double scale = average ? 1.0 / static_cast<double>(n) : 1.0;
  Tensor y = Tensor::empty({1}, x.dtype(), x.device());
  if (on_cuda(x)) {
#if ECHO_HAVE_CUDA
    Tensor partial = Tensor::empty({gpu::sum_all_partials(n)}, DType::F32, Device::CUDA);
    gpu::sum_all(x.data<float>(), y.data<float>(), partial.data<float>(), n, static_cast<float>(scale));
#else
    no_cuda_build(op);
#endif
  } else {
    dispatch_floating(x.dtype(), op, [&](auto t) {
      using T = decltype(t);
      y.data<T>()[0] = sum_cpu<T>(x.data<T>(), n) * static_cast<T>(scale);
    });
  }
  if (any_requires_grad({&x})) {
    record(op, {x}, {y}, {}, [op, n, scale](Node&, const std::vector<Tensor>& gy, std::vector<Tensor>& gx) {
      if (!gx[0].defined()) return;
      if (on_cuda(gy[0])) {
#if ECHO_HAVE_CUDA
        gpu::sum_all_backward(gy[0].data<float>(), gx[0].data<float>(), n, static_cast<float>(scale));
#endif
      } else {
        dispatch_floating(gy[0].dtype(), op, [&](auto t) {
          using T = decltype(t);
          const T g = gy[0].data<T>()[0] * static_cast<T>(scale);
          T* dx = gx[0].data<T>();
          parallel_for(n, [&](int64_t i) { dx[i] += g; });
        });
      }
    });
  }
  return y;
}

}  // namespace

Tensor sum(const Tensor& x) { return sum_all("sum", x, false); }
Tensor mean(const Tensor& x) { return sum_all("mean", x, true); }

Tensor sum_last(const Tensor& x) {
  const char* op = "sum_last";
  op_check(x.defined(), op, "input must be a defined tensor");
  check_floating_same(op, {&x});
  op_check(x.ndim() >= 1, op, "x must have rank >= 1, got " + x.describe());
  const int64_t cols = x.size(-1);
  const int64_t rows = cols ? x.numel() / cols : shape_numel(Shape(x.shape().begin(), x.shape().end() - 1));
  // [..., n] -> [...]; a vector [n] gives [1] (the engine has no rank-0 tensors).
  Shape out_shape(x.shape().begin(), x.shape().end() - 1);
  if (out_shape.empty()) out_shape = {1};
  Tensor y = Tensor::empty(out_shape, x.dtype(), x.device());
  if (on_cuda(x)) {
#if ECHO_HAVE_CUDA
    gpu::sum_last(x.data<float>(), y.data<float>(), rows, cols);
#else
    no_cuda_build(op);
#endif
  } else {
    dispatch_floating(x.dtype(), op, [&](auto t) {
      using T = decltype(t);
      const T* xp = x.data<T>();
      T* yp = y.data<T>();
      parallel_for(rows, [&](int64_t r) {
        T acc = 0;
        for (int64_t j = 0; j < cols; ++j) acc += xp[r * cols + j];
        yp[r] = acc;
      });
    });
  }
  if (any_requires_grad({&x})) {
    record(op, {x}, {y}, {}, [rows, cols](Node&, const std::vector<Tensor>& gy, std::vector<Tensor>& gx) {
      if (!gx[0].defined()) return;
      if (on_cuda(gy[0])) {
#if ECHO_HAVE_CUDA
        gpu::sum_last_backward(gy[0].data<float>(), gx[0].data<float>(), rows, cols);
#endif
      } else {
        dispatch_floating(gy[0].dtype(), "sum_last", [&](auto t) {
          using T = decltype(t);
          const T* dy = gy[0].data<T>();
          T* dx = gx[0].data<T>();
          parallel_for(rows, [&](int64_t r) {
            for (int64_t j = 0; j < cols; ++j) dx[r * cols + j] += dy[r];
          });
        });
      }
    });
  }
  return y;
}

// Runner entries: sum, mean (all elements -> [1]) and sum_last (over the last dimension).
std::vector<RunnerOp> runner_ops_reduce() {
  auto cases = [](Rng& rng, OpAttrs&, int v) {
    const Shape shapes[] = {{2, 3, 4}, {9, 1031}, {70001}};
    if (v > 2) return NamedTensors{};
    return NamedTensors{{"x", randn(shapes[v], rng, DType::F64)}};
  };
  return {make_runner_op(
              "sum", {"x"}, {}, [](const std::vector<Tensor>& in, const OpAttrs&) { return sum(in[0]); }, cases),
          make_runner_op(
              "mean", {"x"}, {}, [](const std::vector<Tensor>& in, const OpAttrs&) { return mean(in[0]); }, cases),
          make_runner_op(
              "sum_last", {"x"}, {}, [](const std::vector<Tensor>& in, const OpAttrs&) { return sum_last(in[0]); },
              cases)};
}

}  // namespace echo
