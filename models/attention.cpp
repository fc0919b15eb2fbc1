// Causal softmax attention with RoPE (spec §2.3), the baseline mixer. Its decode
// state is a KV cache that grows with every token (the contrast of spec §4).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>

#include "autograd/parallel.h"
#include "autograd/tape.h"
#include "models/init.h"
#include "models/layers.h"
#include "ops/causal_attention.h"
#include "ops/matmul.h"
#include "ops/shape_ops.h"

namespace echo {

AttentionMixer::AttentionMixer(const ModelConfig& c, Rng& rng) {
  if (!c.attn) throw std::runtime_error("AttentionMixer: config has no attn section");
  d_ = c.d_model;
  H_ = c.attn->heads;
  dh_ = c.attn->head_dim;
  rope_base_ = c.attn->rope_base;
  qkv = init::linear_default(3 * H_ * dh_, d_, rng);
  out_proj = init::linear_default(d_, H_ * dh_, rng);
}

void AttentionMixer::visit_params(const ParamVisitor& f) {
  f("qkv.weight", qkv);
  f("out_proj.weight", out_proj);
}

Tensor AttentionMixer::forward(const Tensor& x, const Tensor& /*mask*/) {
  const int64_t b = x.size(0), T = x.size(1), w = H_ * dh_;
  Tensor y = linear(x, qkv);  // [b,T, q | k | v]
  const std::vector<Tensor> parts = split(y, 2, {w, w, w});
  Tensor q = parts[0].reshape({b, T, H_, dh_});
  Tensor k = parts[1].reshape({b, T, H_, dh_});
  Tensor v = parts[2].reshape({b, T, H_, dh_});
  Tensor o = causal_attention(q, k, v, rope_base_);
  return linear(o.reshape({b, T, w}), out_proj);
}

namespace {
// The KV cache lives in host memory whatever the model's device (decoding the
// baseline is a CPU affair; the step moves one token's q, k, v across). Keys are
// stored after RoPE. Capacity doubles when full; state_bytes counts what is used.
struct AttentionState : MixerState {
  int64_t batch = 0, heads = 0, head_dim = 0, length = 0, capacity = 0;
  DType dtype = DType::F32;
  Tensor k, v;  // [b, capacity, H, dh] on the CPU
  int64_t state_bytes() const override {
    return 2 * batch * length * heads * head_dim * static_cast<int64_t>(dtype_size(dtype));
  }
  void reserve(int64_t needed) {
    if (needed <= capacity) return;
    const int64_t new_cap = std::max<int64_t>(needed, std::max<int64_t>(16, 2 * capacity));
    Tensor nk = Tensor::zeros({batch, new_cap, heads, head_dim}, dtype, Device::CPU);
    Tensor nv = Tensor::zeros({batch, new_cap, heads, head_dim}, dtype, Device::CPU);
    const size_t row = static_cast<size_t>(heads * head_dim) * dtype_size(dtype);
    for (int64_t bi = 0; bi < batch && length > 0; ++bi) {
      std::memcpy(static_cast<char*>(nk.raw()) + bi * new_cap * row,
                  static_cast<const char*>(k.raw()) + bi * capacity * row, length * row);
      std::memcpy(static_cast<char*>(nv.raw()) + bi * new_cap * row,
                  static_cast<const char*>(v.raw()) + bi * capacity * row, length * row);
    }
    k = nk;
    v = nv;
    capacity = new_cap;
  }
};

// o[b,h] = Σ_{j≤t} softmax_j(q·k_j/√dh) v_j over the cache (max-subtracted).
template <typename T>
void attend_cache(const AttentionState& s, const T* q, T* out) {
  const int64_t H = s.heads, dh = s.head_dim, len = s.length, cap = s.capacity;
  const T* K = s.k.data<T>();
  const T* V = s.v.data<T>();
  const T inv_sqrt = T(1) / std::sqrt(static_cast<T>(dh));
  parallel_for(s.batch * H, [&](int64_t bh) {
    const int64_t bi = bh / H, h = bh % H;
    const T* qv = q + (bi * H + h) * dh;
    std::vector<T> score(static_cast<size_t>(len));
    T mx = -INFINITY;
    for (int64_t j = 0; j < len; ++j) {
      const T* kj = K + ((bi * cap + j) * H + h) * dh;
      T dot = 0;
      for (int64_t e = 0; e < dh; ++e) dot += qv[e] * kj[e];
      score[j] = dot * inv_sqrt;
      mx = std::max(mx, score[j]);
    }
    T denom = 0;
    for (int64_t j = 0; j < len; ++j) denom += (score[j] = std::exp(score[j] - mx));
    T* o = out + (bi * H + h) * dh;
    for (int64_t e = 0; e < dh; ++e) o[e] = 0;
    for (int64_t j = 0; j < len; ++j) {
      const T* vj = V + ((bi * cap + j) * H + h) * dh;
      const T p = score[j] / denom;
      for (int64_t e = 0; e < dh; ++e) o[e] += p * vj[e];
    }
  });
}
}  // namespace

std::unique_ptr<MixerState> AttentionMixer::make_state(int64_t batch, DType dtype, Device device) const {
  auto s = std::make_unique<AttentionState>();
  s->batch = batch;
  s->heads = H_;
  s->head_dim = dh_;
  s->dtype = dtype;
  return s;
}

Tensor AttentionMixer::step(const Tensor& x_t, MixerState& state) {
  NoGrad no_grad;
  auto& s = dynamic_cast<AttentionState&>(state);
  const int64_t b = x_t.size(0), w = H_ * dh_;
  if (b != s.batch) throw std::runtime_error("attention step: batch " + std::to_string(b) + " != state batch " +
                                             std::to_string(s.batch));
  Tensor y = linear(x_t, qkv);  // [b, q | k | v]
  const int64_t t = s.length;
  Tensor q = rope(slice(y, 1, 0, w).reshape({b, 1, H_, dh_}), rope_base_, t).to(Device::CPU);
  Tensor k = rope(slice(y, 1, w, 2 * w).reshape({b, 1, H_, dh_}), rope_base_, t).to(Device::CPU);
  Tensor v = slice(y, 1, 2 * w, 3 * w).to(Device::CPU);
  s.reserve(t + 1);
  const size_t row = static_cast<size_t>(w) * dtype_size(s.dtype);
  for (int64_t bi = 0; bi < b; ++bi) {
    std::memcpy(static_cast<char*>(s.k.raw()) + (bi * s.capacity + t) * row,
                static_cast<const char*>(k.raw()) + bi * row, row);
    std::memcpy(static_cast<char*>(s.v.raw()) + (bi * s.capacity + t) * row,
                static_cast<const char*>(v.raw()) + bi * row, row);
  }
  s.length = t + 1;
  Tensor o = Tensor::empty({b, w}, s.dtype, Device::CPU);
  dispatch_floating(s.dtype, "attention step", [&](auto tag) {
    using T = decltype(tag);
    attend_cache<T>(s, q.data<T>(), o.data<T>());
  });
  return linear(o.to(x_t.device()), out_proj);
}

}  // namespace echo
