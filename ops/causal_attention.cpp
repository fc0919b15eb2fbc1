// Causal softmax attention with rotary position embedding (baseline layer, spec §1.6).
//
// RoPE, rotate-half convention: for j < dh/2, with angle a = t · base^(−2j/dh),
//   x'_j = x_j cos a − x_{j+dh/2} sin a,   x'_{j+dh/2} = x_{j+dh/2} cos a + x_j sin a.
// Each pair is a plane rotation R(a), so its transpose R(−a) carries gradients back.
// Angles are computed in double (the same on the GPU), then cast.
//
// Attention per (b, h), on the rotated q', k' (scale = 1/√dh):
//   s_ij = scale · q'_i·k'_j (j ≤ i),  P_ij = exp(s_ij − L_i),  L_i = log Σ_{j≤i} exp(s_ij),
//   o_i = Σ_j P_ij v_j.
// The forward keeps L (one value per row) instead of P: no T×T matrix is ever
// stored; the backward recomputes P_ij from q', k', L. With D_i = dO_i·o_i and
// dS_ij = P_ij (dO_i·v_j − D_i):
//   dq'_i = scale Σ_{j≤i} dS_ij k'_j,  dk'_j = scale Σ_{i≥j} dS_ij q'_i,  dv_j = Σ_{i≥j} P_ij dO_i,
// then dq = R(−a) dq', dk = R(−a) dk'. Rows are independent in each pass (the
// query pass writes dq' and D, the key pass dk' and dv), so both parallelise
// without atomics; the CUDA kernels use the same two passes.
#include "ops/causal_attention.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "ops/common.h"
#include "ops/runner.h"
#if ECHO_HAVE_CUDA
#include "cuda/causal_attention.cuh"
#endif

namespace echo {
namespace {

constexpr const char* kOp = "causal_attention";
constexpr const char* kRopeOp = "rope";

// inverse: apply R(−a) (the transpose); accumulate: y += instead of y =.
template <typename T>
void rope_cpu(const T* x, T* y, int64_t B, int64_t T_len, int64_t H, int64_t dh, double base, int64_t pos_offset,
              bool inverse, bool accumulate) {
  const int64_t half = dh / 2;
  parallel_for(B * T_len * H, [&](int64_t row) {
    const int64_t t = (row / H) % T_len + pos_offset;
    const T* xr = x + row * dh;
    T* yr = y + row * dh;
    for (int64_t j = 0; j < half; ++j) {
      const double angle = static_cast<double>(t) * std::pow(base, -2.0 * static_cast<double>(j) / static_cast<double>(dh));
      const T c = static_cast<T>(std::cos(angle));
      const T s = static_cast<T>(inverse ? -std::sin(angle) : std::sin(angle));
      const T a = xr[j], b = xr[j + half];
      const T ya = a * c - b * s, yb = b * c + a * s;
      if (accumulate) {
        yr[j] += ya;
        yr[j + half] += yb;
      } else {
        yr[j] = ya;
        yr[j + half] = yb;
      }
    }
  });
}

template <typename T> T dot(const T* a, const T* b, int64_t n) {
  T s = 0;
  for (int64_t d = 0; d < n; ++d) s += a[d] * b[d];
  return s;
}

// Row n = (b·H + h)·T + i of lse/D; element (b,t,h,·) of q/k/v/o at ((b·T + t)·H + h)·dh.
struct Layout {
  int64_t B, T, H, dh;
  int64_t at(int64_t n_bh, int64_t t) const { return ((n_bh / H * T + t) * H + n_bh % H) * dh; }
};

template <typename T>
void forward_cpu(const T* q, const T* k, const T* v, T* o, T* lse, const Layout& L) {
  const T scale = T(1) / std::sqrt(T(L.dh));
  parallel_for(L.B * L.H * L.T, [&](int64_t n) {
    const int64_t bh = n / L.T, i = n % L.T;
    const T* qi = q + L.at(bh, i);
    std::vector<T> p(i + 1);
    T m = -std::numeric_limits<T>::infinity();
    for (int64_t j = 0; j <= i; ++j) {
      p[j] = dot(qi, k + L.at(bh, j), L.dh) * scale;
      m = std::max(m, p[j]);
    }
    T l = 0;
    for (int64_t j = 0; j <= i; ++j) {
      p[j] = std::exp(p[j] - m);
      l += p[j];
    }
    T* oi = o + L.at(bh, i);
    for (int64_t d = 0; d < L.dh; ++d) oi[d] = 0;
    for (int64_t j = 0; j <= i; ++j) {
      const T* vj = v + L.at(bh, j);
      for (int64_t d = 0; d < L.dh; ++d) oi[d] += p[j] * vj[d];
    }
    for (int64_t d = 0; d < L.dh; ++d) oi[d] /= l;
    lse[n] = m + std::log(l);
  });
}

// q, k rotated; writes D (always), dq_rot and dk_rot (when non-null, overwritten),
// adds into dv (when non-null).
template <typename T>
void backward_cpu(const T* q, const T* k, const T* v, const T* o, const T* lse, const T* dout, T* D, T* dq_rot,
                  T* dk_rot, T* dv, const Layout& L) {
  const T scale = T(1) / std::sqrt(T(L.dh));
  const int64_t rows = L.B * L.H * L.T;
  parallel_for(rows, [&](int64_t n) {  // query rows
    const int64_t bh = n / L.T, i = n % L.T;
    const T *qi = q + L.at(bh, i), *doi = dout + L.at(bh, i);
    const T Di = dot(doi, o + L.at(bh, i), L.dh);
    D[n] = Di;
    if (!dq_rot) return;
    std::vector<T> acc(L.dh, T(0));
    for (int64_t j = 0; j <= i; ++j) {
      const T *kj = k + L.at(bh, j), *vj = v + L.at(bh, j);
      const T p = std::exp(dot(qi, kj, L.dh) * scale - lse[n]);
      const T ds = p * (dot(doi, vj, L.dh) - Di);
      for (int64_t d = 0; d < L.dh; ++d) acc[d] += ds * kj[d];
    }
    for (int64_t d = 0; d < L.dh; ++d) dq_rot[L.at(bh, i) + d] = acc[d] * scale;
  });
  if (!dk_rot && !dv) return;
  parallel_for(rows, [&](int64_t n) {  // key rows
    const int64_t bh = n / L.T, j = n % L.T;
    const T *kj = k + L.at(bh, j), *vj = v + L.at(bh, j);
    std::vector<T> dk_acc(L.dh, T(0)), dv_acc(L.dh, T(0));
    for (int64_t i = j; i < L.T; ++i) {
      const T *qi = q + L.at(bh, i), *doi = dout + L.at(bh, i);
      const T p = std::exp(dot(qi, kj, L.dh) * scale - lse[bh * L.T + i]);
      const T ds = p * (dot(doi, vj, L.dh) - D[bh * L.T + i]);
      for (int64_t d = 0; d < L.dh; ++d) {
        dv_acc[d] += p * doi[d];
        dk_acc[d] += ds * qi[d];
      }
    }
    for (int64_t d = 0; d < L.dh; ++d) {
      if (dv) dv[L.at(bh, j) + d] += dv_acc[d];
      if (dk_rot) dk_rot[L.at(bh, j) + d] = dk_acc[d] * scale;
    }
  });
}

void check_rope_input(const char* op, const char* name, const Tensor& x) {
  check_rank(op, name, x, 4);
  op_check(x.size(3) > 0 && x.size(3) % 2 == 0, op,
           std::string(name) + " must have an even, non-zero head_dim (RoPE pairs j, j+dh/2), got " + x.describe());
}

// RoPE without recording (used by the forward and by the public rope()).
Tensor rope_apply(const Tensor& x, double base, int64_t pos_offset, bool inverse) {
  const int64_t B = x.size(0), T_len = x.size(1), H = x.size(2), dh = x.size(3);
  Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
  if (on_cuda(x)) {
#if ECHO_HAVE_CUDA
    gpu::causal_attention_rope(x.data<float>(), y.data<float>(), B, T_len, H, dh, base, pos_offset, inverse, false);
#else
    no_cuda_build(kRopeOp);
#endif
  } else {
    dispatch_floating(x.dtype(), kRopeOp, [&](auto t) {
      using T = decltype(t);
      rope_cpu<T>(x.data<T>(), y.data<T>(), B, T_len, H, dh, base, pos_offset, inverse, false);
    });
  }
  return y;
}

}  // namespace

Tensor rope(const Tensor& x, double rope_base, int64_t pos_offset) {
  check_floating_same(kRopeOp, {&x});
  check_rope_input(kRopeOp, "x", x);
  op_check(rope_base > 0, kRopeOp, "rope_base must be > 0, got " + std::to_string(rope_base));
  op_check(pos_offset >= 0, kRopeOp, "pos_offset must be >= 0, got " + std::to_string(pos_offset));
  op_check(!any_requires_grad({&x}), kRopeOp,
           "has no backward (decode path); call it under NoGrad or on a tensor that does not require grad");
  return rope_apply(x, rope_base, pos_offset, false);
}

Tensor causal_attention(const Tensor& q, const Tensor& k, const Tensor& v, double rope_base) {
  check_floating_same(kOp, {&q, &k, &v});
  check_rope_input(kOp, "q", q);
  check_shape(kOp, "k", k, q.shape());
  check_shape(kOp, "v", v, q.shape());
  op_check(rope_base > 0, kOp, "rope_base must be > 0, got " + std::to_string(rope_base));
  const Layout L{q.size(0), q.size(1), q.size(2), q.size(3)};
  Tensor q_rot = rope_apply(q, rope_base, 0, false), k_rot = rope_apply(k, rope_base, 0, false);
  Tensor y = Tensor::empty(q.shape(), q.dtype(), q.device());
  Tensor lse = Tensor::empty({L.B, L.H, L.T}, q.dtype(), q.device());
  if (on_cuda(q)) {
#if ECHO_HAVE_CUDA
    op_check(L.dh <= gpu::kAttentionMaxHeadDim, kOp,
             "the CUDA kernel supports head_dim <= " + std::to_string(gpu::kAttentionMaxHeadDim) + ", got " +
                 q.describe());
    gpu::causal_attention_forward(q_rot.data<float>(), k_rot.data<float>(), v.data<float>(), y.data<float>(),
                                  lse.data<float>(), L.B, L.T, L.H, L.dh);
#else
    no_cuda_build(kOp);
#endif
  } else {
    dispatch_floating(q.dtype(), kOp, [&](auto t) {
      using T = decltype(t);
      forward_cpu<T>(q_rot.data<T>(), k_rot.data<T>(), v.data<T>(), y.data<T>(), lse.data<T>(), L);
    });
  }
  if (any_requires_grad({&q, &k, &v})) {
    record(kOp, {q, k, v}, {y}, {q_rot, k_rot, v, y.detach(), lse},
           [rope_base](Node& node, const std::vector<Tensor>& gy, std::vector<Tensor>& g) {
             const Tensor &q_rot = node.saved(0), &k_rot = node.saved(1), &v = node.saved(2), &y = node.saved(3),
                          &lse = node.saved(4);
             const Layout L{q_rot.size(0), q_rot.size(1), q_rot.size(2), q_rot.size(3)};
             const Device dev = q_rot.device();
             const DType dt = q_rot.dtype();
             Tensor D = Tensor::empty({L.B, L.H, L.T}, dt, dev);
             Tensor dq_rot = g[0].defined() ? Tensor::empty(q_rot.shape(), dt, dev) : Tensor();
             Tensor dk_rot = g[1].defined() ? Tensor::empty(q_rot.shape(), dt, dev) : Tensor();
             if (dev == Device::CUDA) {
#if ECHO_HAVE_CUDA
               gpu::causal_attention_backward(q_rot.data<float>(), k_rot.data<float>(), v.data<float>(),
                                              y.data<float>(), lse.data<float>(), gy[0].data<float>(),
                                              D.data<float>(), ptr<float>(dq_rot), ptr<float>(dk_rot),
                                              ptr<float>(g[2]), L.B, L.T, L.H, L.dh);
               if (g[0].defined())
                 gpu::causal_attention_rope(dq_rot.data<float>(), g[0].data<float>(), L.B, L.T, L.H, L.dh,
                                            rope_base, 0, true, true);
               if (g[1].defined())
                 gpu::causal_attention_rope(dk_rot.data<float>(), g[1].data<float>(), L.B, L.T, L.H, L.dh,
                                            rope_base, 0, true, true);
#endif
             } else {
               dispatch_floating(dt, kOp, [&](auto t) {
                 using T = decltype(t);
                 backward_cpu<T>(q_rot.data<T>(), k_rot.data<T>(), v.data<T>(), y.data<T>(), lse.data<T>(),
                                 gy[0].data<T>(), D.data<T>(), ptr<T>(dq_rot), ptr<T>(dk_rot), ptr<T>(g[2]), L);
                 if (g[0].defined())
                   rope_cpu<T>(dq_rot.data<T>(), g[0].data<T>(), L.B, L.T, L.H, L.dh, rope_base, 0, true, true);
                 if (g[1].defined())
                   rope_cpu<T>(dk_rot.data<T>(), g[1].data<T>(), L.B, L.T, L.H, L.dh, rope_base, 0, true, true);
               });
             }
           });
  }
  return y;
}

RunnerOp runner_op_causal_attention() {
  RunnerOp op;
  op.name = kOp;
  op.inputs = {"q", "k", "v"};
  op.outputs = {"y"};
  op.attr_defaults = {{"rope_base", 10000.0}};
  op.forward = [](const NamedTensors& in, const OpAttrs& attrs) {
    for (const char* name : {"q", "k", "v"})
      op_check(in.count(name) && in.at(name).defined(), kOp, std::string("missing input ") + name);
    auto it = attrs.find("rope_base");
    const double base = it != attrs.end() ? it->second : 10000.0;
    return NamedTensors{{"y", causal_attention(in.at("q"), in.at("k"), in.at("v"), base)}};
  };
  op.example = [](Rng& rng, OpAttrs& attrs) {
    attrs["rope_base"] = 10000.0;
    return NamedTensors{{"q", randn({2, 7, 2, 8}, rng, DType::F64)},
                        {"k", randn({2, 7, 2, 8}, rng, DType::F64)},
                        {"v", randn({2, 7, 2, 8}, rng, DType::F64)}};
  };
  return op;
}

}  // namespace echo
