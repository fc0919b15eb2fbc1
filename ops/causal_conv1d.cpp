// Depthwise causal convolution along time. x [b,T,C], w [C,W], optional bias [C]:
//   y[b,t,c] = bias[c] + Σ_{k<W} w[c,k] · x[b, t−(W−1)+k, c]      (x at negative time = 0)
// Backward (each output position t feeds from inputs t−(W−1)..t):
//   dx[b,s,c] = Σ_k w[c,k] · dy[b, s+(W−1)−k, c]                   (terms with s+(W−1)−k < T)
//   dw[c,k]   = Σ_{b,t} dy[b,t,c] · x[b, t−(W−1)+k, c]
//   dbias[c]  = Σ_{b,t} dy[b,t,c]
// dw and dbias are sums over all b·T rows in fixed row chunks (ops/reductions.h:
// deterministic, no atomics; the same split on the GPU).
#include "ops/causal_conv1d.h"

#include <vector>

#include "ops/common.h"
#include "ops/reductions.h"
#include "ops/runner.h"
#if ECHO_HAVE_CUDA
#include "cuda/causal_conv1d.cuh"
#endif

namespace echo {
namespace {

constexpr const char* kOp = "causal_conv1d";
constexpr const char* kStepOp = "causal_conv1d_step";

// The CPU loops run over channels innermost (contiguous in x, y and the
// transposed taps wt[k][c]), so they vectorise; each output still sums its terms
// in the order of the formulas above (bias, then k = 0..W−1), as a loop over k
// per element would.
template <typename T> std::vector<T> taps_by_k(const T* w, int64_t C, int64_t W) {
  std::vector<T> wt(static_cast<size_t>(W * C));
  for (int64_t c = 0; c < C; ++c)
    for (int64_t k = 0; k < W; ++k) wt[k * C + c] = w[c * W + k];
  return wt;
}

template <typename T>
void forward_cpu(const T* x, const T* w, const T* bias, T* y, int64_t batch, int64_t T_len, int64_t C, int64_t W) {
  const std::vector<T> wt = taps_by_k(w, C, W);
  parallel_for(batch * T_len, [&](int64_t row) {
    const int64_t b = row / T_len, t = row % T_len;
    T* yr = y + row * C;
    for (int64_t c = 0; c < C; ++c) yr[c] = bias ? bias[c] : T(0);
    for (int64_t k = 0; k < W; ++k) {
      const int64_t s = t - (W - 1) + k;
      if (s < 0) continue;
      const T* xs = x + (b * T_len + s) * C;
      const T* wk = wt.data() + k * C;
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) yr[c] += wk[c] * xs[c];
    }
  });
}

template <bool FreshDx, typename T>
void backward_cpu(const T* x, const T* w, const T* dy, T* dx, T* dw, T* dbias, int64_t batch, int64_t T_len,
                  int64_t C, int64_t W) {
  const int64_t rows = batch * T_len;
  const std::vector<T> wt = taps_by_k(w, C, W);
  if (dx) {
    parallel_for(rows, [&](int64_t row) {
      const int64_t b = row / T_len, s = row % T_len;
      thread_local std::vector<T> acc;
      acc.assign(static_cast<size_t>(C), T(0));
      for (int64_t k = 0; k < W; ++k) {
        const int64_t t = s + (W - 1) - k;
        if (t >= T_len) continue;
        const T* dyt = dy + (b * T_len + t) * C;
        const T* wk = wt.data() + k * C;
        T* a = acc.data();
#pragma omp simd
        for (int64_t c = 0; c < C; ++c) a[c] += wk[c] * dyt[c];
      }
      T* dxr = dx + row * C;
      for (int64_t c = 0; c < C; ++c) grad_put<FreshDx>(dxr[c], acc[c]);
    });
  }
  if (dw || dbias) {
    // partial[chunk][k][c] for k < W is the dw term, slot k = W the dbias term.
    const int64_t slots = W + 1;
    const std::vector<T> partial = chunk_partials<T>(rows, C * slots, [&](int64_t row, T* p) {
      const int64_t b = row / T_len, t = row % T_len;
      const T* g = dy + row * C;
      for (int64_t k = 0; k < W; ++k) {
        const int64_t s = t - (W - 1) + k;
        if (s < 0) continue;
        const T* xs = x + (b * T_len + s) * C;
        T* pk = p + k * C;
#pragma omp simd
        for (int64_t c = 0; c < C; ++c) pk[c] += g[c] * xs[c];
      }
      T* pb = p + W * C;
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) pb[c] += g[c];
    });
    parallel_for(C * slots, [&](int64_t i) {
      const T sum = sum_chunks(partial, C * slots, i);
      const int64_t k = i / C, c = i % C;
      if (k < W && dw) dw[c * W + k] += sum;
      if (k == W && dbias) dbias[c] += sum;
    });
  }
}

template <typename T>
void step_cpu(const T* x_t, T* state, const T* w, const T* bias, T* y, int64_t batch, int64_t C, int64_t W) {
  parallel_for(batch * C, [&](int64_t i) {
    const int64_t c = i % C;
    T* st = state + i * (W - 1);
    T acc = bias ? bias[c] : T(0);
    for (int64_t k = 0; k < W - 1; ++k) acc += w[c * W + k] * st[k];
    acc += w[c * W + W - 1] * x_t[i];
    y[i] = acc;
    for (int64_t k = 0; k + 1 < W - 1; ++k) st[k] = st[k + 1];
    if (W > 1) st[W - 2] = x_t[i];
  });
}

void check_weights(const char* op, const Tensor& w, const Tensor& bias, int64_t C) {
  check_rank(op, "w", w, 2);
  op_check(w.size(0) == C && w.size(1) >= 1, op,
           "w must have shape [" + std::to_string(C) + ",W] with W >= 1, got " + w.describe());
  if (bias.defined()) check_shape(op, "bias", bias, {C});
}

}  // namespace

Tensor causal_conv1d(const Tensor& x, const Tensor& w, const Tensor& bias) {
  check_floating_same(kOp, {&x, &w, &bias});
  check_rank(kOp, "x", x, 3);
  const int64_t batch = x.size(0), T_len = x.size(1), C = x.size(2);
  check_weights(kOp, w, bias, C);
  const int64_t W = w.size(1);
  Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
  if (on_cuda(x)) {
#if ECHO_HAVE_CUDA
    gpu::causal_conv1d_forward(x.data<float>(), w.data<float>(), cptr<float>(bias), y.data<float>(), batch, T_len, C,
                               W);
#else
    no_cuda_build(kOp);
#endif
  } else {
    dispatch_floating(x.dtype(), kOp, [&](auto t) {
      using T = decltype(t);
      forward_cpu<T>(x.data<T>(), w.data<T>(), cptr<T>(bias), y.data<T>(), batch, T_len, C, W);
    });
  }
  if (any_requires_grad({&x, &w, &bias})) {
    record(kOp, {x, w, bias}, {y}, {x, w}, [](Node& node, const std::vector<Tensor>& gy, std::vector<Tensor>& g) {
      const Tensor &x = node.saved(0), &w = node.saved(1);
      const int64_t batch = x.size(0), T_len = x.size(1), C = x.size(2), W = w.size(1);
      zero_if_fresh(node, g, 1);  // dw, dbias: column sums, added
      zero_if_fresh(node, g, 2);
      if (on_cuda(x)) {
#if ECHO_HAVE_CUDA
        zero_if_fresh(node, g, 0);
        Tensor work;
        if (g[1].defined() || g[2].defined())
          work = Tensor::empty({gpu::causal_conv1d_workspace_floats(batch, T_len, C, W)}, DType::F32, Device::CUDA);
        gpu::causal_conv1d_backward(x.data<float>(), w.data<float>(), gy[0].data<float>(), ptr<float>(g[0]),
                                    ptr<float>(g[1]), ptr<float>(g[2]), ptr<float>(work), batch, T_len, C, W);
#endif
      } else {
        dispatch_floating(x.dtype(), kOp, [&](auto t) {
          using T = decltype(t);
          with_fresh(node.grad_is_fresh(0), [&](auto f) {
            backward_cpu<decltype(f)::value, T>(x.data<T>(), w.data<T>(), gy[0].data<T>(), ptr<T>(g[0]),
                                                ptr<T>(g[1]), ptr<T>(g[2]), batch, T_len, C, W);
          });
        });
      }
    }).writes_fresh_grads = true;
  }
  return y;
}

Tensor causal_conv1d_step(const Tensor& x_t, Tensor& conv_state, const Tensor& w, const Tensor& bias) {
  check_floating_same(kStepOp, {&x_t, &conv_state, &w, &bias});
  check_rank(kStepOp, "x_t", x_t, 2);
  const int64_t batch = x_t.size(0), C = x_t.size(1);
  check_weights(kStepOp, w, bias, C);
  const int64_t W = w.size(1);
  check_shape(kStepOp, "conv_state", conv_state, {batch, C, W - 1});
  Tensor y = Tensor::empty({batch, C}, x_t.dtype(), x_t.device());
  if (on_cuda(x_t)) {
#if ECHO_HAVE_CUDA
    gpu::causal_conv1d_step(x_t.data<float>(), conv_state.data<float>(), w.data<float>(), cptr<float>(bias),
                            y.data<float>(), batch, C, W);
#else
    no_cuda_build(kStepOp);
#endif
  } else {
    dispatch_floating(x_t.dtype(), kStepOp, [&](auto t) {
      using T = decltype(t);
      step_cpu<T>(x_t.data<T>(), conv_state.data<T>(), w.data<T>(), cptr<T>(bias), y.data<T>(), batch, C, W);
    });
  }
  conv_state.bump_version();
  return y;
}

RunnerOp runner_op_causal_conv1d() {
  RunnerOp op;
  op.name = kOp;
  op.inputs = {"x", "w"};
  op.optional_inputs = {"bias"};
  op.outputs = {"y"};
  op.forward = [](const NamedTensors& in, const OpAttrs&) {
    for (const char* name : {"x", "w"})
      op_check(in.count(name) && in.at(name).defined(), kOp, std::string("missing input ") + name);
    Tensor bias = in.count("bias") ? in.at("bias") : Tensor();
    return NamedTensors{{"y", causal_conv1d(in.at("x"), in.at("w"), bias)}};
  };
  op.cases = [](Rng& rng, OpAttrs&, int variant) {
    // variant 1, 2: channels past one block of 256 threads, rows past one chunk.
    const int64_t b[] = {2, 3, 1}, T[] = {9, 70, 300}, C[] = {6, 37, 260}, W[] = {4, 4, 3};
    if (variant > 2) return NamedTensors{};
    const int v = variant;
    return NamedTensors{{"x", randn({b[v], T[v], C[v]}, rng, DType::F64)},
                        {"w", randn({C[v], W[v]}, rng, DType::F64, Device::CPU, 0.5)},
                        {"bias", randn({C[v]}, rng, DType::F64)}};
  };
  op.example = [cases = op.cases](Rng& rng, OpAttrs& attrs) { return cases(rng, attrs, 0); };
  return op;
}

}  // namespace echo
