// Spectral Koopman Attention mixer (spec §2.2).
#include <cmath>
#include <stdexcept>

#include "autograd/tape.h"
#include "models/init.h"
#include "models/layers.h"
#include "ops/binary.h"
#include "ops/koopman_fit.h"
#include "ops/l2norm.h"
#include "ops/matmul.h"
#include "ops/unary.h"

namespace echo {

Tensor mul_by_scalar_tensor(const Tensor& x, const Tensor& s) {
  // The binary ops broadcast a suffix shape, so view x as [n, 1] to scale it by s [1].
  return mul(x.reshape({x.numel(), 1}), s).reshape(x.shape());
}

SkaMixer::SkaMixer(const ModelConfig& c, Rng& rng) {
  if (!c.ska) throw std::runtime_error("SkaMixer: config has no ska section");
  cfg_ = *c.ska;
  d_ = c.d_model;
  H_ = cfg_.heads;
  r_ = cfg_.rank;
  P_ = cfg_.head_dim_v;
  options_.chunk_size = cfg_.chunk_size;
  options_.ridge = cfg_.ridge;
  options_.power_steps = static_cast<int>(cfg_.power_steps);
  options_.power_iters = static_cast<int>(cfg_.power_iters);

  w_k = init::orthogonal(H_ * r_, d_, rng);
  w_q = init::orthogonal(H_ * r_, d_, rng);
  w_v = init::xavier_uniform(H_ * P_, d_, rng);
  w_o = init::constant({d_, H_ * P_}, 0.0);  // SKA starts as the identity perturbation
  gamma_raw = init::constant({1}, std::log(0.2 / 0.8));  // logit(0.2): γ = 0.5 + 0.2 = 0.7
  eta = init::constant({1}, 1.5);
  if (cfg_.write_gate) {
    w_beta = init::constant({H_, d_}, 0.0);  // β = σ(0) = 1/2 everywhere at the start
    b_beta = init::constant({H_}, 0.0);
  }
  if (cfg_.filter == "poly")
    filter_coef = init::constant({H_, cfg_.power_steps + 1}, 1.0 / static_cast<double>(cfg_.power_steps + 1));
}

void SkaMixer::visit_params(const ParamVisitor& f) {
  f("w_k.weight", w_k);
  f("w_q.weight", w_q);
  f("w_v.weight", w_v);
  f("w_o.weight", w_o);
  f("gamma_raw", gamma_raw);
  f("eta", eta);
  if (cfg_.write_gate) {
    f("w_beta.weight", w_beta);
    f("w_beta.bias", b_beta);
  }
  if (cfg_.filter == "poly") f("filter_coef", filter_coef);
}

Tensor SkaMixer::gamma() const { return add_scalar(sigmoid(gamma_raw), 0.5); }

Tensor SkaMixer::forward(const Tensor& x, const Tensor& mask) {
  const int64_t b = x.size(0), T = x.size(1);
  Tensor k = l2norm(linear(x, w_k).reshape({b, T, H_, r_}));
  Tensor q = l2norm(linear(x, w_q).reshape({b, T, H_, r_}));
  Tensor v = linear(x, w_v).reshape({b, T, H_, P_});
  Tensor beta = cfg_.write_gate ? sigmoid(linear(x, w_beta, b_beta)) : Tensor();
  Tensor use_mask;
  if (cfg_.mode == "prefix") {
    if (!mask.defined())
      throw std::runtime_error("SKA mixer: ska.mode = prefix needs a context mask [b,T]");
    use_mask = mask;
  }
  Tensor y = koopman_fit(k, q, v, gamma(), beta, use_mask, filter_coef, options_);
  y = mul_by_scalar_tensor(y, eta);
  return linear(y.reshape({b, T, H_ * P_}), w_o);
}

namespace {
struct SkaState : MixerState {
  std::unique_ptr<KoopmanStream> stream;
  int64_t state_bytes() const override { return stream->state_bytes(); }
};
}  // namespace

std::unique_ptr<MixerState> SkaMixer::make_state(int64_t batch, DType dtype, Device device) const {
  if (cfg_.mode != "chunk")
    throw std::runtime_error(
        "SKA mixer: recurrent decoding needs ska.mode = chunk (prefix mode reads one operator built from "
        "the whole masked context, which is not causal)");
  auto s = std::make_unique<SkaState>();
  s->stream = std::make_unique<KoopmanStream>(batch, H_, r_, P_, dtype, device, options_);
  return s;
}

Tensor SkaMixer::step(const Tensor& x_t, MixerState& state) {
  NoGrad no_grad;
  auto& s = dynamic_cast<SkaState&>(state);
  const int64_t b = x_t.size(0);
  Tensor k = l2norm(linear(x_t, w_k).reshape({b, H_, r_}));
  Tensor q = l2norm(linear(x_t, w_q).reshape({b, H_, r_}));
  Tensor v = linear(x_t, w_v).reshape({b, H_, P_});
  Tensor beta = cfg_.write_gate ? sigmoid(linear(x_t, w_beta, b_beta)) : Tensor();
  Tensor y = s.stream->step(k, q, v, beta, gamma(), filter_coef);
  y = mul_by_scalar_tensor(y, eta);
  return linear(y.reshape({b, H_ * P_}), w_o);
}

}  // namespace echo
