#include "train/model_runner.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <numeric>

#include "autograd/tape.h"
#include "models/params.h"
#include "ops/cross_entropy.h"
#include "train/checkpoint.h"
#include "train/h5io.h"

namespace echo {

namespace {
Tensor read_ids(const h5::File& f, const std::string& key, const Shape* expect) {
  Tensor t = f.read(key);
  if (t.dtype() != DType::I32 && t.dtype() != DType::I64)
    throw std::runtime_error(f.path() + ": dataset '" + key + "' must hold integers, got " + dtype_name(t.dtype()));
  if (t.ndim() != 2) throw std::runtime_error(f.path() + ": dataset '" + key + "' must be [b,T], got " + shape_str(t.shape()));
  if (expect && t.shape() != *expect)
    throw std::runtime_error(f.path() + ": dataset '" + key + "' has shape " + shape_str(t.shape()) +
                             ", tokens have " + shape_str(*expect));
  return t.to(DType::I32);
}
}  // namespace

std::vector<std::string> run_forward_files(const std::string& checkpoint, const std::string& tokens_path,
                                           const std::string& out_path, const ForwardFileOptions& opt) {
  auto model = load_model(checkpoint);
  if (opt.device == Device::CUDA && opt.dtype != DType::F32)
    throw std::runtime_error("forward: the CUDA backend runs f32");
  model->to(opt.dtype);
  model->to(opt.device);

  h5::File in = h5::File::open(tokens_path);
  for (const auto& name : in.list_datasets("/"))
    if (name != "tokens" && name != "targets" && name != "mask")
      throw std::runtime_error(tokens_path + ": unexpected dataset '" + name + "' (expected tokens, targets, mask)");
  if (!in.has_dataset("tokens")) throw std::runtime_error(tokens_path + ": dataset 'tokens' not found");
  Tensor tokens = read_ids(in, "tokens", nullptr);
  Shape shape = tokens.shape();
  for (int64_t id : tokens.to_int_vector())
    if (id < 0 || id >= model->config().vocab_size)
      throw std::runtime_error(tokens_path + ": token id " + std::to_string(id) + " is outside [0, vocab_size=" +
                               std::to_string(model->config().vocab_size) + ")");
  Tensor targets = in.has_dataset("targets") ? read_ids(in, "targets", &shape) : Tensor();
  Tensor mask = in.has_dataset("mask") ? read_ids(in, "mask", &shape) : Tensor();

  std::vector<std::string> written;
  h5::atomic_write(out_path, [&](const std::string& tmp) {
    h5::File out = h5::File::create(tmp);
    Tensor dev_tokens = tokens.to(opt.device);
    Tensor dev_mask = mask.defined() ? mask.to(opt.device) : Tensor();
    if (!targets.defined()) {
      NoGrad no_grad;
      out.write("logits", model->forward(dev_tokens, dev_mask).to(Device::CPU));
      written = {"logits"};
    } else {
      model->zero_grad();
      Tensor logits = model->forward(dev_tokens, dev_mask);
      Tensor loss = cross_entropy(logits, targets.to(opt.device));  // as LanguageModel::loss
      loss.backward();
      out.write("logits", logits.detach().to(Device::CPU));
      out.write("loss", loss.detach().to(Device::CPU));
      written = {"logits", "loss"};
      for (const auto& p : model->params().all()) {
        std::string path = "grad" + hdf5_param_path(p.name).substr(std::string("/model").size());
        Tensor g = p.tensor.grad().defined() ? p.tensor.grad() : Tensor::zeros(p.tensor.shape(), p.tensor.dtype());
        out.write(path, g.to(Device::CPU));
        written.push_back(path);
      }
    }
    out.set_attr("/", "device", device_name(opt.device));
    out.set_attr("/", "dtype", dtype_name(opt.dtype));
    out.close();
  });
  return written;
}

int64_t sample_token(const std::vector<double>& logits, double temperature, int64_t top_k, Rng& rng, double top_p) {
  const int64_t V = static_cast<int64_t>(logits.size());
  if (temperature <= 0) return std::max_element(logits.begin(), logits.end()) - logits.begin();
  std::vector<int64_t> idx(V);
  std::iota(idx.begin(), idx.end(), 0);
  std::stable_sort(idx.begin(), idx.end(), [&](int64_t a, int64_t b) { return logits[a] > logits[b]; });
  const int64_t k = top_k > 0 ? std::min(top_k, V) : V;
  std::vector<double> p(k);
  for (int64_t i = 0; i < k; ++i) p[i] = std::exp((logits[idx[i]] - logits[idx[0]]) / temperature);
  double total = std::accumulate(p.begin(), p.end(), 0.0);
  if (top_p < 1.0) {
    // Keep the first m (most likely) with Σ_{i<m} p_i ≥ top_p · total; at least one.
    double mass = 0;
    int64_t m = 0;
    while (m < k && (m == 0 || mass < top_p * total)) mass += p[m++];
    p.resize(m);
    total = mass;
  }
  const int64_t kept = static_cast<int64_t>(p.size());
  double u = rng.uniform() * total;
  for (int64_t i = 0; i < kept; ++i) {
    if (u < p[i]) return idx[i];
    u -= p[i];
  }
  return idx[kept - 1];
}

GenerateResult generate(LanguageModel& model, const std::vector<int64_t>& prompt, const GenerateOptions& o) {
  if (prompt.empty()) throw std::runtime_error("generate: the prompt is empty");
  if (!(o.top_p > 0 && o.top_p <= 1)) throw std::runtime_error("generate: --top-p must be in (0, 1]");
  if (o.temperature < 0) throw std::runtime_error("generate: --temperature must be >= 0");
  for (int64_t id : prompt)
    if (id < 0 || id >= model.config().vocab_size)
      throw std::runtime_error("generate: prompt token " + std::to_string(id) + " is outside [0, vocab_size=" +
                               std::to_string(model.config().vocab_size) + ")");
  NoGrad no_grad;
  Rng rng(o.seed);
  GenerateResult r;
  r.tokens = prompt;
  r.prompt_length = static_cast<int64_t>(prompt.size());
  DecodeState state = model.make_decode_state(1);
  auto feed = [&](int64_t token) {
    Tensor t = Tensor::from_ints({token}, {1}, DType::I32, model.device());
    return model.step(t, state).to(Device::CPU).to(DType::F64).to_vector();
  };
  auto t0 = std::chrono::steady_clock::now();
  std::vector<double> logits;
  // Only the last prompt token's logits are read: the others skip the LM head.
  for (size_t i = 0; i + 1 < prompt.size(); ++i)
    model.advance(Tensor::from_ints({prompt[i]}, {1}, DType::I32, model.device()), state);
  logits = feed(prompt.back());
  auto t1 = std::chrono::steady_clock::now();
  for (int64_t i = 0; i < o.max_new_tokens; ++i) {
    int64_t next = sample_token(logits, o.temperature, o.top_k, rng, o.top_p);
    r.tokens.push_back(next);
    if (o.on_token) o.on_token(next);
    if (i + 1 < o.max_new_tokens) logits = feed(next);
  }
  auto t2 = std::chrono::steady_clock::now();
  double dp = std::chrono::duration<double>(t1 - t0).count(), dn = std::chrono::duration<double>(t2 - t1).count();
  r.prompt_tokens_per_s = dp > 0 ? prompt.size() / dp : 0;
  r.new_tokens_per_s = dn > 0 && o.max_new_tokens > 0 ? o.max_new_tokens / dn : 0;
  r.layer_state_bytes = state.layer_state_bytes();
  r.state_bytes = state.state_bytes();
  return r;
}

}  // namespace echo
