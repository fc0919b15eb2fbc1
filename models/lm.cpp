#include "models/lm.h"

#include <cstdio>
#include <sstream>
#include <stdexcept>

#include "autograd/random.h"
#include "autograd/tape.h"
#include "models/init.h"
#include "ops/binary.h"
#include "ops/cross_entropy.h"
#include "ops/linear_cross_entropy.h"
#include "ops/embedding.h"
#include "ops/matmul.h"
#include "ops/rmsnorm.h"

namespace echo {

// ---- DecodeState ------------------------------------------------------------------

std::vector<int64_t> DecodeState::layer_state_bytes() const {
  std::vector<int64_t> out;
  for (const auto& l : layers_) out.push_back(l->state_bytes());
  return out;
}

int64_t DecodeState::state_bytes() const {
  int64_t n = 0;
  for (const auto& l : layers_) n += l->state_bytes();
  return n;
}

// ---- LanguageModel ----------------------------------------------------------------

LanguageModel::LanguageModel(const ModelConfig& config, uint64_t seed) : config_(config) {
  validate_config(config_);
  Rng rng(seed);
  // Initialisation draws happen in registry order: embedding, layers, norm_f.
  embedding_ = init::normal({config_.vocab_size, config_.d_model}, 0.02, rng);
  for (int64_t i = 0; i < config_.n_layers; ++i) {
    Block blk;
    blk.norm1 = init::constant({config_.d_model}, 1.0);
    switch (config_.layer_pattern[static_cast<size_t>(i)]) {
      case 'M': blk.mixer = std::make_unique<MambaMixer>(config_, rng); break;
      case 'S': blk.mixer = std::make_unique<SkaMixer>(config_, rng); break;
      case 'A': blk.mixer = std::make_unique<AttentionMixer>(config_, rng); break;
      default: throw std::runtime_error("model: bad layer letter");  // validate_config rejects it first
    }
    if (config_.mlp != "none") {
      blk.norm2 = init::constant({config_.d_model}, 1.0);
      if (config_.mlp == "koopman") blk.mlp = std::make_unique<KoopmanMlp>(config_, rng);
      else blk.mlp = std::make_unique<SwiGluMlp>(config_, rng);
    }
    blocks_.push_back(std::move(blk));
  }
  norm_f_ = init::constant({config_.d_model}, 1.0);
  rebuild_registry();
}

void LanguageModel::visit_params(const ParamVisitor& f) {
  f("embedding.weight", embedding_);
  for (size_t i = 0; i < blocks_.size(); ++i) {
    const std::string pre = "layers." + std::to_string(i) + ".";
    Block& blk = blocks_[i];
    f(pre + "norm1.weight", blk.norm1);
    blk.mixer->visit_params([&](const std::string& n, Tensor& t) { f(pre + "mixer." + n, t); });
    if (blk.mlp) {
      f(pre + "norm2.weight", blk.norm2);
      blk.mlp->visit_params([&](const std::string& n, Tensor& t) { f(pre + "mlp." + n, t); });
    }
  }
  f("norm_f.weight", norm_f_);
}

void LanguageModel::rebuild_registry() {
  params_ = ParamRegistry();
  visit_params([&](const std::string& n, Tensor& t) { params_.add(n, t); });
}

void LanguageModel::to(DType dtype) {
  if (dtype != DType::F32 && dtype != DType::F64)
    throw std::runtime_error(std::string("model.to: parameters are f32 or f64, not ") + dtype_name(dtype));
  if (dtype != DType::F32 && device_ == Device::CUDA)
    throw std::runtime_error("model.to: the CUDA backend runs f32");
  NoGrad no_grad;
  visit_params([&](const std::string&, Tensor& t) {
    t = t.detach().to(dtype).detach();
    t.set_requires_grad(true);
  });
  dtype_ = dtype;
  rebuild_registry();
}

void LanguageModel::to(Device device) {
  if (device == Device::CUDA && dtype_ != DType::F32)
    throw std::runtime_error("model.to: the CUDA backend runs f32; cast the model to F32 first");
  NoGrad no_grad;
  visit_params([&](const std::string&, Tensor& t) {
    t = t.detach().to(device).detach();
    t.set_requires_grad(true);
  });
  device_ = device;
  rebuild_registry();
}

void LanguageModel::set_parameters(const std::vector<Tensor>& tensors) {
  if (tensors.size() != params_.size())
    throw std::runtime_error("model.set_parameters: got " + std::to_string(tensors.size()) + " tensors for " +
                             std::to_string(params_.size()) + " parameters");
  size_t i = 0;
  visit_params([&](const std::string& name, Tensor& slot) {
    const Tensor& t = tensors[i++];
    if (!t.defined() || t.shape() != slot.shape() || t.dtype() != dtype_ || t.device() != device_)
      throw std::runtime_error("model.set_parameters: " + name + " must be " + slot.describe() + ", got " +
                               t.describe());
    slot = t;
  });
  rebuild_registry();
}

void LanguageModel::zero_grad() {
  for (const auto& p : params_.all()) {
    Tensor t = p.tensor;
    t.zero_grad();
  }
}

namespace {
bool is_integer(DType t) { return t == DType::I32 || t == DType::I64; }
}  // namespace

Tensor LanguageModel::forward(const Tensor& tokens, const Tensor& mask) {
  return linear(hidden(tokens, mask), embedding_);  // tied output projection: logits = x Eᵀ
}

Tensor LanguageModel::hidden(const Tensor& tokens_in, const Tensor& mask_in) {
  if (!tokens_in.defined() || tokens_in.ndim() != 2 || !is_integer(tokens_in.dtype()))
    throw std::runtime_error("model.forward: tokens must be an integer tensor [b,T], got " + tokens_in.describe());
  if (mask_in.defined() && mask_in.shape() != tokens_in.shape())
    throw std::runtime_error("model.forward: mask must have shape " + shape_str(tokens_in.shape()) + ", got " +
                             mask_in.describe());
  // Token ids given on the host stay there: the embedding uploads them itself and
  // checks them and builds its backward index from the host copy, so a training
  // step copies nothing back from the device for them.
  Tensor tokens = tokens_in.device() == Device::CPU ? tokens_in : tokens_in.to(device_);
  Tensor mask = mask_in.defined() ? mask_in.to(device_) : Tensor();
  const double eps = config_.norm_eps;
  Tensor x = embedding(embedding_, tokens);  // [b,T,d]
  for (auto& blk : blocks_) {
    x = add(x, blk.mixer->forward(rmsnorm(x, blk.norm1, eps), mask));
    if (blk.mlp) x = add(x, blk.mlp->forward(rmsnorm(x, blk.norm2, eps)));
  }
  return rmsnorm(x, norm_f_, eps);
}

Tensor LanguageModel::loss(const Tensor& tokens, const Tensor& targets, const Tensor& mask) {
  if (!targets.defined() || targets.shape() != tokens.shape() || !is_integer(targets.dtype()))
    throw std::runtime_error("model.loss: targets must be an integer tensor of shape " +
                             shape_str(tokens.shape()) + ", got " + targets.describe());
  // The LM head and the loss in row chunks: the [b·T, V] logits are never whole.
  // Targets given on the host stay there (checked and counted on the host, then
  // uploaded by the loss), like the token ids.
  return linear_cross_entropy(hidden(tokens, mask), embedding_,
                              targets.device() == Device::CPU ? targets : targets.to(device_));
}

DecodeState LanguageModel::make_decode_state(int64_t batch) const {
  if (batch < 1) throw std::runtime_error("decode: batch must be >= 1");
  DecodeState s;
  s.batch_ = batch;
  for (const auto& blk : blocks_) s.layers_.push_back(blk.mixer->make_state(batch, dtype_, device_));
  return s;
}

Tensor LanguageModel::step(const Tensor& tokens_t, DecodeState& state) {
  NoGrad no_grad;
  return linear(rmsnorm(advance_hidden(tokens_t, state), norm_f_, config_.norm_eps), embedding_);
}

void LanguageModel::advance(const Tensor& tokens_t, DecodeState& state) { advance_hidden(tokens_t, state); }

// The residual stream after the last block for one token per sequence,
// updating every layer's recurrent state.
Tensor LanguageModel::advance_hidden(const Tensor& tokens_t, DecodeState& state) {
  if (!tokens_t.defined() || tokens_t.ndim() != 1 || !is_integer(tokens_t.dtype()) ||
      tokens_t.size(0) != state.batch_)
    throw std::runtime_error("decode step: tokens must be an integer tensor [" + std::to_string(state.batch_) +
                             "], got " + tokens_t.describe());
  if (state.layers_.size() != blocks_.size())
    throw std::runtime_error("decode step: the state was made for another model");
  NoGrad no_grad;
  const double eps = config_.norm_eps;
  Tensor x = embedding(embedding_, tokens_t.to(device_));  // [b,d]
  for (size_t i = 0; i < blocks_.size(); ++i) {
    Block& blk = blocks_[i];
    x = add(x, blk.mixer->step(rmsnorm(x, blk.norm1, eps), *state.layers_[i]));
    if (blk.mlp) x = add(x, blk.mlp->forward(rmsnorm(x, blk.norm2, eps)));
  }
  ++state.position_;
  return x;
}

std::unique_ptr<LanguageModel> make_model(const ModelConfig& config, uint64_t seed) {
  return std::make_unique<LanguageModel>(config, seed);
}

// ---- reports ------------------------------------------------------------------------

nlohmann::json parameter_report(const LanguageModel& model) {
  nlohmann::json groups = nlohmann::json::array();
  nlohmann::json tensors = nlohmann::json::array();
  const ModelConfig& c = model.config();
  for (const auto& [name, count] : model.params().group_counts()) {
    nlohmann::json g = {{"name", name}, {"params", count}};
    if (name.rfind("layers.", 0) == 0) {
      const size_t i = std::stoul(name.substr(7));
      g["kind"] = std::string(1, c.layer_pattern[i]);
      int64_t mixer = 0, mlp = 0, norms = 0;
      for (const auto& p : model.params().all()) {
        if (p.name.rfind(name + ".", 0) != 0) continue;
        const std::string rest = p.name.substr(name.size() + 1);
        if (rest.rfind("mixer.", 0) == 0) mixer += p.tensor.numel();
        else if (rest.rfind("mlp.", 0) == 0) mlp += p.tensor.numel();
        else norms += p.tensor.numel();
      }
      g["mixer"] = mixer;
      g["mlp"] = mlp;
      g["norms"] = norms;
    }
    groups.push_back(g);
  }
  for (const auto& p : model.params().all())
    tensors.push_back({{"name", p.name},
                       {"shape", p.tensor.shape()},
                       {"numel", p.tensor.numel()},
                       {"weight_decay", !no_weight_decay(p.name)}});
  return {{"total", model.num_params()}, {"groups", groups}, {"tensors", tensors}};
}

std::string parameter_report_text(const LanguageModel& model) {
  nlohmann::json r = parameter_report(model);
  std::ostringstream o;
  char line[160];
  std::snprintf(line, sizeof line, "%-12s %-4s %12s %12s %10s %12s\n", "group", "kind", "mixer", "mlp", "norms",
                "params");
  o << line;
  for (const auto& g : r["groups"]) {
    if (g.contains("kind"))
      std::snprintf(line, sizeof line, "%-12s %-4s %12lld %12lld %10lld %12lld\n",
                    g["name"].get<std::string>().c_str(), g["kind"].get<std::string>().c_str(),
                    (long long)g["mixer"].get<int64_t>(), (long long)g["mlp"].get<int64_t>(),
                    (long long)g["norms"].get<int64_t>(), (long long)g["params"].get<int64_t>());
    else
      std::snprintf(line, sizeof line, "%-12s %-4s %12s %12s %10s %12lld\n", g["name"].get<std::string>().c_str(),
                    "", "", "", "", (long long)g["params"].get<int64_t>());
    o << line;
  }
  std::snprintf(line, sizeof line, "%-12s %-4s %12s %12s %10s %12lld (%.2fM)\n", "total", "", "", "", "",
                (long long)r["total"].get<int64_t>(), r["total"].get<int64_t>() / 1e6);
  o << line;
  return o.str();
}

}  // namespace echo
