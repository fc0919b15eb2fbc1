#include "train/checkpoint.h"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <set>

#include "autograd/tape.h"
#include "models/config.h"
#include "train/h5io.h"

namespace echo {

namespace {

std::string moment_path(const char* which, const std::string& name) {
  // hdf5_param_path gives "/model/a/b"; moments live at "/optimizer/m/a/b".
  std::string p = hdf5_param_path(name);
  return std::string("/optimizer/") + which + p.substr(std::strlen("/model"));
}

void check_format(const h5::File& f) {
  if (!f.has_attr("/", "format"))
    throw std::runtime_error(f.path() + ": not an echo-lm checkpoint (root attribute 'format' missing)");
  std::string format = f.attr_string("/", "format");
  if (format != "echo-lm")
    throw std::runtime_error(f.path() + ": attribute 'format' is '" + format + "', expected 'echo-lm'");
  if (!f.has_attr("/", "format_version"))
    throw std::runtime_error(f.path() + ": root attribute 'format_version' missing");
  int64_t version = f.attr_int("/", "format_version");
  if (version != kCheckpointFormatVersion)
    throw std::runtime_error(f.path() + ": format_version " + std::to_string(version) +
                             " is not supported (this build reads version " +
                             std::to_string(kCheckpointFormatVersion) + ")");
  for (const char* key : {"config", "step"})
    if (!f.has_attr("/", key)) throw std::runtime_error(f.path() + ": root attribute '" + key + "' missing");
}

// Reads one dataset that must exist with the given shape, as a CPU f32 tensor.
Tensor read_checked(const h5::File& f, const std::string& key, const Shape& shape) {
  if (!f.has_dataset(key)) throw std::runtime_error(f.path() + ": dataset '" + key + "' missing");
  Shape s = f.dataset_shape(key);
  if (s != shape)
    throw std::runtime_error(f.path() + ": dataset '" + key + "' has shape " + shape_str(s) + ", expected " +
                             shape_str(shape));
  Tensor t = f.read(key);
  if (t.dtype() != DType::F32 && t.dtype() != DType::F64)
    throw std::runtime_error(f.path() + ": dataset '" + key + "' is " + dtype_name(t.dtype()) + ", expected float32");
  for (double v : t.to_vector())
    if (!std::isfinite(v)) throw std::runtime_error(f.path() + ": dataset '" + key + "' holds non-finite values");
  return t;
}

}  // namespace

void save_checkpoint(const std::string& path, const LanguageModel& model, const AdamW* opt,
                     const TrainState* state, const nlohmann::json* train_config) {
  h5::atomic_write(path, [&](const std::string& tmp) {
    h5::File f = h5::File::create(tmp);
    f.set_attr("/", "format", "echo-lm");
    f.set_attr("/", "format_version", kCheckpointFormatVersion);
    f.set_attr("/", "config", model.config().to_json().dump());
    if (train_config) f.set_attr("/", "train_config", train_config->dump());
    f.set_attr("/", "step", static_cast<int64_t>(state ? state->step : 0));
    for (const auto& p : model.params().all())
      f.write(hdf5_param_path(p.name), p.tensor.detach().to(Device::CPU).to(DType::F32));
    if (opt) {
      f.create_group("/optimizer");
      const auto& refs = opt->params();
      auto& m = const_cast<AdamW*>(opt)->exp_avg();
      auto& v = const_cast<AdamW*>(opt)->exp_avg_sq();
      for (size_t i = 0; i < refs.size(); ++i) {
        f.write(moment_path("m", refs[i].name), m[i].to(Device::CPU).to(DType::F32));
        f.write(moment_path("v", refs[i].name), v[i].to(Device::CPU).to(DType::F32));
      }
      const auto& c = opt->config();
      f.set_attr("/optimizer", "step", opt->steps());
      f.set_attr("/optimizer", "beta1", c.beta1);
      f.set_attr("/optimizer", "beta2", c.beta2);
      f.set_attr("/optimizer", "eps", c.eps);
      f.set_attr("/optimizer", "weight_decay", c.weight_decay);
    }
    if (state) {
      std::vector<int64_t> rng_bits(4);
      for (int i = 0; i < 4; ++i) std::memcpy(&rng_bits[i], &state->data_rng[i], 8);
      f.write("/state/data_rng", Tensor::from_ints(rng_bits, {4}, DType::I64));
      f.set_attr("/state", "step", state->step);
      f.set_attr("/state", "schedule_step", state->step);
      f.set_attr("/state", "loss_ema", state->loss_ema);
      f.set_attr("/state", "bad_steps", state->bad_steps);
      f.set_attr("/state", "loss_scale", state->loss_scale);
    }
    f.close();
  });
}

CheckpointContents read_checkpoint_header(const std::string& path) {
  h5::File f = h5::File::open(path);
  check_format(f);
  CheckpointContents c;
  try {
    c.config = nlohmann::json::parse(f.attr_string("/", "config"));
  } catch (const nlohmann::json::exception& e) {
    throw std::runtime_error(path + ": attribute 'config' is not valid JSON: " + e.what());
  }
  if (f.has_attr("/", "train_config")) {
    try {
      c.train_config = nlohmann::json::parse(f.attr_string("/", "train_config"));
    } catch (const nlohmann::json::exception& e) {
      throw std::runtime_error(path + ": attribute 'train_config' is not valid JSON: " + e.what());
    }
  }
  c.step = f.attr_int("/", "step");
  return c;
}

void load_parameters(const std::string& path, LanguageModel& model) {
  h5::File f = h5::File::open(path);
  check_format(f);
  std::set<std::string> expected;
  for (const auto& p : model.params().all()) expected.insert(hdf5_param_path(p.name).substr(std::strlen("/model/")));
  if (!f.has_group("/model")) throw std::runtime_error(path + ": group '/model' missing");
  for (const auto& name : f.list_datasets("/model", true))
    if (!expected.count(name))
      throw std::runtime_error(path + ": dataset '/model/" + name + "' is not a parameter of this model");
  NoGrad no_grad;
  // Read everything first, then copy: a failure half-way leaves the model untouched.
  std::vector<Tensor> values;
  for (const auto& p : model.params().all())
    values.push_back(read_checked(f, hdf5_param_path(p.name), p.tensor.shape()));
  const auto& all = model.params().all();
  for (size_t i = 0; i < all.size(); ++i) {
    Tensor dst = all[i].tensor;
    dst.copy_(values[i]);
  }
}

std::unique_ptr<LanguageModel> load_model(const std::string& path) {
  CheckpointContents header = read_checkpoint_header(path);
  ModelConfig config;
  try {
    config = parse_config(header.config);
  } catch (const std::exception& e) {
    throw std::runtime_error(path + ": stored config: " + e.what());
  }
  // Building the model allocates what the config says; a corrupt or hostile
  // config must not make that far more than the file holds. So first compare the
  // config's parameter count with the values stored under /model (shapes only;
  // h5::File::read checks that the data behind a shape is really there). Small
  // differences (a missing or misshapen parameter) pass, so that
  // load_parameters can name the dataset.
  {
    h5::File f = h5::File::open(path);
    if (!f.has_group("/model")) throw std::runtime_error(path + ": group '/model' missing");
    int64_t stored = 0;
    for (const auto& name : f.list_datasets("/model", true)) {
      const int64_t n = shape_numel(f.dataset_shape("/model/" + name));
      if (n > kMaxParameters - stored)
        throw std::runtime_error(path + ": /model holds more than 2^40 values");
      stored += n;
    }
    // Shapes are metadata too: count no more values than the file's bytes can
    // hold as float32.
    std::error_code ec;
    const auto bytes = std::filesystem::file_size(path, ec);
    if (!ec) stored = std::min<int64_t>(stored, static_cast<int64_t>(bytes / 4));
    const int64_t expected = parameter_count(config);
    if (expected > 2 * stored + (int64_t(1) << 20))
      throw std::runtime_error(path + ": the stored config describes " + std::to_string(expected) +
                               " parameters but /model holds " + std::to_string(stored) + " values");
  }
  auto model = make_model(config, 0);
  load_parameters(path, *model);
  return model;
}

void load_training_state(const std::string& path, AdamW& opt, TrainState& state) {
  h5::File f = h5::File::open(path);
  check_format(f);
  if (!f.has_group("/optimizer"))
    throw std::runtime_error(path + ": group '/optimizer' missing (a model-only checkpoint cannot resume training)");
  NoGrad no_grad;
  const auto& refs = opt.params();
  std::vector<Tensor> m, v;
  for (const auto& r : refs) {
    m.push_back(read_checked(f, moment_path("m", r.name), r.param.shape()));
    v.push_back(read_checked(f, moment_path("v", r.name), r.param.shape()));
  }
  if (!f.has_dataset("/state/data_rng")) throw std::runtime_error(path + ": dataset '/state/data_rng' missing");
  Tensor rng = f.read("/state/data_rng");
  if (rng.numel() != 4) throw std::runtime_error(path + ": dataset '/state/data_rng' must hold 4 values");
  auto bits = rng.to_int_vector();
  TrainState s;
  for (int i = 0; i < 4; ++i) std::memcpy(&s.data_rng[i], &bits[i], 8);
  for (const char* key : {"step", "loss_ema", "bad_steps", "loss_scale"})
    if (!f.has_attr("/state", key)) throw std::runtime_error(path + ": attribute '/state." + key + "' missing");
  s.step = f.attr_int("/state", "step");
  s.loss_ema = f.attr_double("/state", "loss_ema");
  s.bad_steps = f.attr_int("/state", "bad_steps");
  s.loss_scale = f.attr_double("/state", "loss_scale");
  int64_t opt_step = f.attr_int("/optimizer", "step");
  for (size_t i = 0; i < refs.size(); ++i) {
    opt.exp_avg()[i].copy_(m[i]);
    opt.exp_avg_sq()[i].copy_(v[i]);
  }
  opt.set_steps(opt_step);
  state = s;
}

}  // namespace echo
