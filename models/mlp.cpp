// The two MLPs of spec §2.4.
#include "autograd/tape.h"
#include "models/init.h"
#include "models/layers.h"
#include "ops/binary.h"
#include "ops/koopman_rotate.h"
#include "ops/matmul.h"
#include "ops/unary.h"

namespace echo {

KoopmanMlp::KoopmanMlp(const ModelConfig& c, Rng& rng) {
  const int64_t d = c.d_model, dk = c.koopman_dk();
  lift = init::xavier_uniform(dk, d, rng);
  read = init::xavier_uniform(d, dk, rng);
  rot_gamma = init::constant({dk / 2}, 1.0);
  rot_omega = init::normal({dk / 2}, 0.1, rng);
}

void KoopmanMlp::visit_params(const ParamVisitor& f) {
  f("lift.weight", lift);
  f("read.weight", read);
  f("rot_gamma", rot_gamma);
  f("rot_omega", rot_omega);
}

// g = silu(x liftᵀ); z = rotate(g) pairwise by the contracted (γ, ω); out = z readᵀ.
Tensor KoopmanMlp::forward(const Tensor& x) {
  Tensor g = silu(linear(x, lift));
  return linear(koopman_rotate(g, rot_gamma, rot_omega), read);
}

SwiGluMlp::SwiGluMlp(const ModelConfig& c, Rng& rng) {
  const int64_t d = c.d_model, f = c.d_ff;
  gate = init::linear_default(f, d, rng);
  up = init::linear_default(f, d, rng);
  down = init::linear_default(d, f, rng);
}

void SwiGluMlp::visit_params(const ParamVisitor& f) {
  f("gate.weight", gate);
  f("up.weight", up);
  f("down.weight", down);
}

Tensor SwiGluMlp::forward(const Tensor& x) {
  return linear(mul(silu(linear(x, gate)), linear(x, up)), down);
}

}  // namespace echo
