// The language model of spec §2.5: tied embedding, pre-norm residual blocks per
// layer_pattern, final norm; the recurrent decoding of spec §4.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "autograd/tensor.h"
#include "models/config.h"
#include "models/layers.h"
#include "models/params.h"

namespace echo {

// x ← x + mixer(rmsnorm(x; norm1)); then, unless mlp = none, x ← x + mlp(rmsnorm(x; norm2)).
struct Block {
  Tensor norm1, norm2;  // norm2 undefined when mlp = none
  std::unique_ptr<Mixer> mixer;
  std::unique_ptr<Mlp> mlp;
};

// The recurrent state of a whole model for `batch` sequences (spec §4). Its size
// is constant in the number of tokens for M and S layers; A layers grow a KV cache.
class DecodeState {
 public:
  int64_t batch() const { return batch_; }
  int64_t position() const { return position_; }  // tokens consumed so far
  std::vector<int64_t> layer_state_bytes() const;
  int64_t state_bytes() const;

 private:
  friend class LanguageModel;
  int64_t batch_ = 0, position_ = 0;
  std::vector<std::unique_ptr<MixerState>> layers_;
};

class LanguageModel {
 public:
  // Builds and initialises every parameter from one Rng seeded with `seed`
  // (float32 on the CPU). Validates the config.
  LanguageModel(const ModelConfig& config, uint64_t seed);

  const ModelConfig& config() const { return config_; }
  // Parameters under their spec names. The registry is rebuilt by to(): take
  // references to it (e.g. for an optimizer) after casting.
  const ParamRegistry& params() const { return params_; }
  int64_t num_params() const { return params_.total_numel(); }
  DType dtype() const { return dtype_; }
  Device device() const { return device_; }
  void to(DType dtype);    // e.g. F64 on the CPU for gradient checks
  void to(Device device);  // CUDA runs f32
  void zero_grad();
  // Replaces every parameter slot by the given tensors (registry order, same
  // shapes, the model's dtype and device) without copying: used by gradient
  // checks that feed fresh leaves. Rebuilds the registry.
  void set_parameters(const std::vector<Tensor>& tensors);

  // tokens [b,T] (i32/i64, any device), mask [b,T] or undefined -> logits [b,T,V].
  Tensor forward(const Tensor& tokens, const Tensor& mask = Tensor());
  // The residual stream after the final norm, [b,T,d]: forward() = hidden() · Eᵀ.
  Tensor hidden(const Tensor& tokens, const Tensor& mask = Tensor());
  // Mean next-token cross-entropy (targets −100 ignored), spec §1.7, computed by
  // linear_cross_entropy (the LM head and the loss in row chunks).
  Tensor loss(const Tensor& tokens, const Tensor& targets, const Tensor& mask = Tensor());

  // Recurrent decoding: a fresh state for `batch` sequences, then one token per
  // sequence per call: tokens_t [b] -> logits [b,V]. No autograd. Feeding the
  // tokens of a sequence one by one gives the logits of forward() to rounding.
  DecodeState make_decode_state(int64_t batch) const;
  Tensor step(const Tensor& tokens_t, DecodeState& state);
  // The same update of `state` without the final norm and LM head (returns
  // nothing): for prompt tokens whose logits nobody reads. The LM head is the
  // largest matrix of a decode step (vocab × d_model, 28% of echo-50m).
  void advance(const Tensor& tokens_t, DecodeState& state);

  const std::vector<Block>& blocks() const { return blocks_; }

 private:
  void visit_params(const ParamVisitor& f);
  void rebuild_registry();
  Tensor advance_hidden(const Tensor& tokens_t, DecodeState& state);

  ModelConfig config_;
  DType dtype_ = DType::F32;
  Device device_ = Device::CPU;
  Tensor embedding_, norm_f_;
  std::vector<Block> blocks_;
  ParamRegistry params_;
};

std::unique_ptr<LanguageModel> make_model(const ModelConfig& config, uint64_t seed);

// {"total": n, "groups": [{"name": "embedding", "params": n}, {"name": "layers.0",
//  "kind": "M", "mixer": n, "mlp": n, "norms": n, "params": n}, ...],
//  "tensors": [{"name", "shape", "numel", "weight_decay"}...]}
nlohmann::json parameter_report(const LanguageModel& model);
// The same as an aligned text table.
std::string parameter_report_text(const LanguageModel& model);

}  // namespace echo
