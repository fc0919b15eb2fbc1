// Helpers shared by the model tests: tiny configs and parameter perturbation.
#pragma once

#include <string>

#include "autograd/random.h"
#include "models/config.h"
#include "models/lm.h"
#include "test_util.h"

namespace echo::testing {

// d = 16, vocab 11, small chunk sizes (Mamba 4, SKA 5) so that short sequences
// cross several chunk boundaries; ngroups 2 so the head→group map is exercised.
inline ModelConfig tiny_config(const std::string& pattern, const std::string& mlp = "koopman") {
  ModelConfig c;
  c.vocab_size = 11;
  c.d_model = 16;
  c.n_layers = static_cast<int64_t>(pattern.size());
  c.layer_pattern = pattern;
  c.mlp = mlp;
  c.d_ff = 24;
  c.norm_eps = 1e-5;
  MambaConfig m;
  m.d_state = 4;
  m.expand = 2;
  m.headdim = 8;  // d_inner 32, 4 heads
  m.ngroups = 2;
  m.d_conv = 4;
  m.chunk_size = 4;
  c.mamba = m;
  SkaConfig s;
  s.heads = 2;
  s.rank = 4;
  s.head_dim_v = 6;
  s.chunk_size = 5;
  s.ridge = 1e-3;
  s.power_steps = 2;
  s.power_iters = 6;
  c.ska = s;
  AttnConfig a;
  a.heads = 2;
  a.head_dim = 8;
  c.attn = a;
  validate_config(c);
  return c;
}

// Moves every parameter away from its initial value (w_o starts at zero, which
// would hide every SKA gradient but its own). w_beta stays zero: a write gate
// that varies along the sequence can push the spectral scale σ̂ above 1, where
// the detached α makes finite differences and backward legitimately differ.
inline void perturb_parameters(LanguageModel& model, uint64_t seed, double stddev = 0.15) {
  Rng rng(seed);
  for (const auto& p : model.params().all()) {
    const std::string& n = p.name;
    if (n.size() >= 13 && n.compare(n.size() - 13, 13, "w_beta.weight") == 0) continue;
    double s = stddev;
    if (n.find("w_o.weight") != std::string::npos) s = 0.4;
    Tensor t = p.tensor;
    t.add_(randn(t.shape(), rng, t.dtype(), t.device(), s));
  }
}

inline Tensor random_tokens(int64_t b, int64_t T, int64_t vocab, Rng& rng) {
  std::vector<int64_t> v(static_cast<size_t>(b * T));
  for (auto& x : v) x = rng.randint(0, vocab);
  return Tensor::from_ints(v, {b, T}, DType::I32);
}

}  // namespace echo::testing
