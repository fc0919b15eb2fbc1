// Mamba-2 mixer (spec §2.1), with mamba_ssm's initialisation.
#include <cmath>
#include <stdexcept>

#include "autograd/tape.h"
#include "models/init.h"
#include "models/layers.h"
#include "ops/binary.h"
#include "ops/causal_conv1d.h"
#include "ops/gated_rmsnorm.h"
#include "ops/matmul.h"
#include "ops/shape_ops.h"
#include "ops/ssd_scan.h"
#include "ops/unary.h"

namespace echo {

MambaMixer::MambaMixer(const ModelConfig& c, Rng& rng) {
  if (!c.mamba) throw std::runtime_error("MambaMixer: config has no mamba section");
  const MambaConfig& m = *c.mamba;
  d_ = c.d_model;
  d_inner_ = m.d_inner(d_);
  H_ = m.nheads(d_);
  P_ = m.headdim;
  G_ = m.ngroups;
  N_ = m.d_state;
  W_ = m.d_conv;
  conv_dim_ = m.conv_dim(d_);
  chunk_ = m.chunk_size;
  eps_ = c.norm_eps;

  in_proj = init::linear_default(m.in_proj_dim(d_), d_, rng);
  // nn.Conv1d(groups=conv_dim) default: fan_in = W, weight and bias U(±1/√W).
  const double conv_bound = 1.0 / std::sqrt(static_cast<double>(W_));
  conv_w = init::uniform({conv_dim_, W_}, conv_bound, rng);
  conv_b = init::uniform({conv_dim_}, conv_bound, rng);
  // dt = exp(U(ln 1e-3, ln 1e-1)) ≥ 1e-4; dt_bias = softplus⁻¹(dt) = dt + log(−expm1(−dt)).
  std::vector<double> dtb(static_cast<size_t>(H_)), alog(static_cast<size_t>(H_));
  for (auto& v : dtb) {
    double dt = std::exp(rng.uniform(std::log(1e-3), std::log(1e-1)));
    dt = std::max(dt, 1e-4);
    v = dt + std::log(-std::expm1(-dt));
  }
  dt_bias = init::leaf(dtb, {H_});
  for (auto& v : alog) v = std::log(rng.uniform(1.0, 16.0));
  A_log = init::leaf(alog, {H_});
  D = init::constant({H_}, 1.0);
  norm_w = init::constant({d_inner_}, 1.0);
  // Residual-branch output scaled by 1/√n_layers (mamba_ssm's prenorm rescale).
  out_proj = init::linear_default(d_, d_inner_, rng, 1.0 / std::sqrt(static_cast<double>(c.n_layers)));
}

void MambaMixer::visit_params(const ParamVisitor& f) {
  f("in_proj.weight", in_proj);
  f("conv1d.weight", conv_w);
  f("conv1d.bias", conv_b);
  f("dt_bias", dt_bias);
  f("A_log", A_log);
  f("D", D);
  f("norm.weight", norm_w);
  f("out_proj.weight", out_proj);
}

Tensor MambaMixer::forward(const Tensor& x, const Tensor& /*mask*/) {
  const int64_t b = x.size(0), T = x.size(1);
  Tensor zxbcdt = linear(x, in_proj);  // [b,T, d_inner | conv_dim | H]
  const std::vector<Tensor> parts = split(zxbcdt, 2, {d_inner_, conv_dim_, H_});
  const Tensor &z = parts[0], &dt_raw = parts[2];
  const Tensor xBC = silu(causal_conv1d(parts[1], conv_w, conv_b));
  const std::vector<Tensor> xbc = split(xBC, 2, {d_inner_, G_ * N_, G_ * N_});
  Tensor xs = xbc[0].reshape({b, T, H_, P_});
  Tensor B = xbc[1].reshape({b, T, G_, N_});
  Tensor C = xbc[2].reshape({b, T, G_, N_});
  Tensor dt = softplus(add(dt_raw, dt_bias));
  Tensor A = scale(exp(A_log), -1.0);
  Tensor y = ssd_scan(xs, dt, A, B, C, D, Tensor(), chunk_).y;
  y = gated_rmsnorm(y.reshape({b, T, d_inner_}), z, norm_w, eps_);
  return linear(y, out_proj);
}

namespace {
struct MambaState : MixerState {
  Tensor conv;  // [b, conv_dim, W−1]: the last W−1 inputs of the conv, oldest first
  Tensor ssm;   // [b, H, P, N]
  int64_t state_bytes() const override { return static_cast<int64_t>(conv.nbytes() + ssm.nbytes()); }
};
}  // namespace

std::unique_ptr<MixerState> MambaMixer::make_state(int64_t batch, DType dtype, Device device) const {
  auto s = std::make_unique<MambaState>();
  s->conv = Tensor::zeros({batch, conv_dim_, W_ - 1}, dtype, device);
  s->ssm = Tensor::zeros({batch, H_, P_, N_}, dtype, device);
  return s;
}

Tensor MambaMixer::step(const Tensor& x_t, MixerState& state) {
  NoGrad no_grad;
  auto& s = dynamic_cast<MambaState&>(state);
  const int64_t b = x_t.size(0);
  Tensor zxbcdt = linear(x_t, in_proj);  // [b, d_inner | conv_dim | H]
  Tensor z = slice(zxbcdt, 1, 0, d_inner_);
  Tensor xBC = slice(zxbcdt, 1, d_inner_, d_inner_ + conv_dim_);
  Tensor dt_raw = slice(zxbcdt, 1, d_inner_ + conv_dim_, d_inner_ + conv_dim_ + H_);
  xBC = silu(causal_conv1d_step(xBC, s.conv, conv_w, conv_b));
  Tensor xs = slice(xBC, 1, 0, d_inner_).reshape({b, H_, P_});
  Tensor B = slice(xBC, 1, d_inner_, d_inner_ + G_ * N_).reshape({b, G_, N_});
  Tensor C = slice(xBC, 1, d_inner_ + G_ * N_, conv_dim_).reshape({b, G_, N_});
  Tensor dt = softplus(add(dt_raw, dt_bias));
  Tensor A = scale(exp(A_log), -1.0);
  Tensor y = ssd_step(xs, dt, A, B, C, D, s.ssm);
  y = gated_rmsnorm(y.reshape({b, d_inner_}), z, norm_w, eps_);
  return linear(y, out_proj);
}

}  // namespace echo
