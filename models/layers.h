// The layers of spec §2: the three mixers (Mamba-2 `M`, SKA `S`, attention `A`),
// the two MLPs, each with its parameters under spec names, its initialisation,
// the parallel (training) forward and, for mixers, the one-token decode step of §4.
// docs/models.md gives the math.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "autograd/random.h"
#include "autograd/tensor.h"
#include "models/config.h"
#include "ops/koopman_fit.h"

namespace echo {

// Visits (local name, parameter slot) in registry order; the slot may be
// replaced (dtype/device casts).
using ParamVisitor = std::function<void(const std::string& name, Tensor& param)>;

class Module {
 public:
  virtual ~Module() = default;
  virtual void visit_params(const ParamVisitor& f) = 0;
};

// A mixer's recurrent decoding state for one layer.
class MixerState {
 public:
  virtual ~MixerState() = default;
  virtual int64_t state_bytes() const = 0;
};

class Mixer : public Module {
 public:
  virtual char letter() const = 0;
  // x [b,T,d] -> [b,T,d]; mask [b,T] (prefix mode of SKA) or undefined.
  virtual Tensor forward(const Tensor& x, const Tensor& mask) = 0;
  virtual std::unique_ptr<MixerState> make_state(int64_t batch, DType dtype, Device device) const = 0;
  // x_t [b,d] -> [b,d]; no autograd; advances the state by one token.
  virtual Tensor step(const Tensor& x_t, MixerState& state) = 0;
};

class Mlp : public Module {
 public:
  virtual Tensor forward(const Tensor& x) = 0;  // [..., d] -> [..., d]
};

// ---- Mamba-2 (spec §2.1) -------------------------------------------------------
class MambaMixer : public Mixer {
 public:
  MambaMixer(const ModelConfig& c, Rng& rng);
  char letter() const override { return 'M'; }
  void visit_params(const ParamVisitor& f) override;
  Tensor forward(const Tensor& x, const Tensor& mask) override;
  std::unique_ptr<MixerState> make_state(int64_t batch, DType dtype, Device device) const override;
  Tensor step(const Tensor& x_t, MixerState& state) override;

  Tensor in_proj, conv_w, conv_b, dt_bias, A_log, D, norm_w, out_proj;

 private:
  int64_t d_, d_inner_, H_, P_, G_, N_, W_, conv_dim_, chunk_;
  double eps_;
};

// ---- Spectral Koopman Attention (spec §2.2) ------------------------------------
class SkaMixer : public Mixer {
 public:
  SkaMixer(const ModelConfig& c, Rng& rng);
  char letter() const override { return 'S'; }
  void visit_params(const ParamVisitor& f) override;
  Tensor forward(const Tensor& x, const Tensor& mask) override;
  std::unique_ptr<MixerState> make_state(int64_t batch, DType dtype, Device device) const override;
  Tensor step(const Tensor& x_t, MixerState& state) override;

  Tensor w_k, w_q, w_v, w_o, gamma_raw, eta, w_beta, b_beta, filter_coef;

 private:
  Tensor gamma() const;  // 0.5 + σ(gamma_raw)
  int64_t d_, H_, r_, P_;
  SkaConfig cfg_;
  KoopmanOptions options_;
};

// ---- causal softmax attention with RoPE (spec §2.3, baseline) -----------------
class AttentionMixer : public Mixer {
 public:
  AttentionMixer(const ModelConfig& c, Rng& rng);
  char letter() const override { return 'A'; }
  void visit_params(const ParamVisitor& f) override;
  Tensor forward(const Tensor& x, const Tensor& mask) override;
  std::unique_ptr<MixerState> make_state(int64_t batch, DType dtype, Device device) const override;
  Tensor step(const Tensor& x_t, MixerState& state) override;

  Tensor qkv, out_proj;

 private:
  int64_t d_, H_, dh_;
  double rope_base_;
};

// ---- MLPs (spec §2.4) ------------------------------------------------------------
class KoopmanMlp : public Mlp {
 public:
  KoopmanMlp(const ModelConfig& c, Rng& rng);
  void visit_params(const ParamVisitor& f) override;
  Tensor forward(const Tensor& x) override;
  Tensor lift, read, rot_gamma, rot_omega;
};

class SwiGluMlp : public Mlp {
 public:
  SwiGluMlp(const ModelConfig& c, Rng& rng);
  void visit_params(const ParamVisitor& f) override;
  Tensor forward(const Tensor& x) override;
  Tensor gate, up, down;
};

// x·s for a one-element tensor s (differentiable in both).
Tensor mul_by_scalar_tensor(const Tensor& x, const Tensor& s);

}  // namespace echo
