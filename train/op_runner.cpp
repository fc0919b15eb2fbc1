#include "train/op_runner.h"

#include <algorithm>
#include <set>
#include <stdexcept>

#include "autograd/device.h"
#include "autograd/tape.h"
#include "train/h5io.h"

namespace echo {

namespace {

bool contains(const std::vector<std::string>& v, const std::string& s) {
  return std::find(v.begin(), v.end(), s) != v.end();
}

// "'a', 'b'"
std::string quoted_list(const std::vector<std::string>& names) {
  std::string s;
  for (size_t i = 0; i < names.size(); ++i) s += (i ? ", '" : "'") + names[i] + "'";
  return s;
}

std::string plain_list(const std::vector<std::string>& names, const std::string& prefix = "") {
  std::string s;
  for (size_t i = 0; i < names.size(); ++i) s += (i ? ", " : "") + prefix + names[i];
  return s;
}

std::string attr_list(const RunnerOp& op) {
  std::string s;
  for (const auto& [name, value] : op.attr_defaults) s += (s.empty() ? "" : ", ") + name;
  return s;
}

void check_device(Device device, DType dtype, const std::string& who) {
  if (dtype != DType::F32 && dtype != DType::F64)
    throw std::runtime_error(who + ": compute dtype must be f32 or f64, got " + dtype_name(dtype));
  if (device == Device::CUDA) {
    if (!cuda_available()) throw std::runtime_error(who + ": --device cuda: " + cuda_unavailable_reason());
    if (dtype != DType::F32 && !has_cuda_float64(who))
      throw std::runtime_error(who + ": the CUDA backend runs f32 only for this op (got --dtype f64; "
                               "has_cuda_float64 lists the ops with float64 CUDA kernels)");
  }
}

}  // namespace

std::vector<std::string> all_inputs(const RunnerOp& op) {
  std::vector<std::string> v = op.inputs;
  v.insert(v.end(), op.optional_inputs.begin(), op.optional_inputs.end());
  return v;
}

bool is_differentiable_input(const RunnerOp& op, const std::string& input) {
  return !contains(op.not_differentiable, input);
}

std::string describe_inputs(const RunnerOp& op) {
  std::string s = plain_list(op.inputs);
  for (const auto& o : op.optional_inputs) s += (s.empty() ? "[" : ", [") + o + "]";
  return s;
}

OpRunResult run_op(const RunnerOp& op, const NamedTensors& inputs, const NamedTensors& output_grads,
                   const OpAttrs& attrs, Device device, DType dtype) {
  const std::string& who = op.name;
  check_device(device, dtype, who);
  const std::vector<std::string> known = all_inputs(op);
  for (const auto& [name, t] : inputs)
    if (!contains(known, name))
      throw std::runtime_error(who + ": unknown input '" + name + "' (inputs: " + describe_inputs(op) + ")");
  for (const auto& name : op.inputs)
    if (!inputs.count(name) || !inputs.at(name).defined())
      throw std::runtime_error(who + ": missing input '" + name + "'");
  for (const auto& [name, g] : output_grads)
    if (!contains(op.outputs, name))
      throw std::runtime_error(who + ": gradient given for unknown output '" + name + "' (outputs: " +
                               plain_list(op.outputs) + ")");
  for (const auto& [name, value] : attrs)
    if (!op.attr_defaults.count(name))
      throw std::runtime_error(who + ": unknown attribute '" + name + "'" +
                               (op.attr_defaults.empty() ? " (the op has no attributes)"
                                                         : " (attributes: " + attr_list(op) + ")"));

  const bool backward = !output_grads.empty();
  // Leaves on the target device/dtype. detach() first so that marking a leaf as
  // requiring grad never touches the caller's tensor (to() returns the same
  // tensor when nothing changes).
  NamedTensors args;
  std::vector<std::string> leaves;
  for (const auto& [name, t] : inputs) {
    if (!t.defined()) continue;
    Tensor x = t.detach();
    const bool diff = is_differentiable_input(op, name);
    if (is_floating(x.dtype())) {
      x = x.to(dtype);
    } else if (diff) {
      throw std::runtime_error(who + ": input '" + name + "' must be floating point, got " + x.describe());
    }
    x = x.to(device).detach();
    if (backward && diff) {
      x.set_requires_grad(true);
      leaves.push_back(name);
    }
    args[name] = x;
  }

  OpRunResult result;
  NamedTensors outs;
  if (backward) {
    outs = op.forward(args, attrs);
  } else {
    NoGrad no_grad;
    outs = op.forward(args, attrs);
  }
  for (const auto& name : op.outputs) {
    auto it = outs.find(name);
    if (it == outs.end() || !it->second.defined())
      throw std::runtime_error(who + ": the op produced no output '" + name + "'");
    result.outputs[name] = it->second;
  }
  if (!backward) return result;

  std::vector<Tensor> roots, seeds;
  for (const auto& [name, g] : output_grads) {
    const Tensor& y = result.outputs.at(name);
    if (g.shape() != y.shape())
      throw std::runtime_error(who + ": grad_" + name + " must have the shape of output " + name + " " +
                               shape_str(y.shape()) + ", got " + g.describe());
    if (!y.requires_grad()) continue;  // no differentiable input reaches this output
    roots.push_back(y);
    seeds.push_back(g.detach().to(y.dtype()).to(y.device()));
  }
  if (!roots.empty()) run_backward(roots, seeds);
  for (const auto& name : leaves) {
    const Tensor& x = args.at(name);
    result.grads[name] = x.grad().defined() ? x.grad() : Tensor::zeros(x.shape(), x.dtype(), x.device());
  }
  for (auto& [name, y] : result.outputs) y = y.detach();
  return result;
}

OpFileSummary run_op_files(const RunnerOp& op, const std::string& in_path, const std::string& out_path,
                           const OpFileOptions& options) {
  h5::File in = h5::File::open(in_path);
  const std::string where = in_path + ": op " + op.name;

  // Sort the file's datasets into inputs, output gradients and strangers.
  const std::vector<std::string> known = all_inputs(op);
  NamedTensors inputs, grads;
  std::vector<std::string> unknown;
  for (const auto& name : in.list_datasets("/")) {
    if (contains(known, name)) {
      inputs[name] = in.read(name);
    } else if (name.rfind("grad_", 0) == 0 && contains(op.outputs, name.substr(5))) {
      grads[name.substr(5)] = in.read(name);
    } else {
      unknown.push_back(name);
    }
  }
  for (const auto& g : in.list_groups("/")) unknown.push_back(g + "/");
  if (!unknown.empty())
    throw std::runtime_error(where + ": unknown dataset(s) " + quoted_list(unknown) + " (inputs: " +
                             describe_inputs(op) + "; output gradients: " + plain_list(op.outputs, "grad_") + ")");
  std::vector<std::string> missing;
  for (const auto& name : op.inputs)
    if (!inputs.count(name)) missing.push_back(name);
  if (!missing.empty()) throw std::runtime_error(where + ": missing input dataset(s) " + quoted_list(missing));

  OpAttrs attrs;
  std::vector<std::string> unknown_attrs;
  for (const auto& name : in.attr_names("/")) {
    if (!op.attr_defaults.count(name)) {
      unknown_attrs.push_back(name);
      continue;
    }
    h5::AttrKind kind = in.attr_kind("/", name);
    if (kind != h5::AttrKind::Int && kind != h5::AttrKind::Float)
      throw std::runtime_error(where + ": attribute '" + name + "' must be a number");
    attrs[name] = in.attr_double("/", name);
  }
  if (!unknown_attrs.empty())
    throw std::runtime_error(where + ": unknown attribute(s) " + quoted_list(unknown_attrs) +
                             (op.attr_defaults.empty() ? " (the op has no attributes)"
                                                       : " (attributes: " + attr_list(op) + ")"));
  in.close();

  // The files' float type: the widest floating input.
  OpFileSummary summary;
  summary.device = options.device;
  summary.file_dtype = DType::F32;
  for (const auto& [name, t] : inputs)
    if (t.dtype() == DType::F64) summary.file_dtype = DType::F64;
  summary.compute_dtype = options.dtype ? *options.dtype
                                        : (options.device == Device::CUDA ? DType::F32 : summary.file_dtype);
  summary.backward = !grads.empty();

  OpRunResult r;
  try {
    r = run_op(op, inputs, grads, attrs, summary.device, summary.compute_dtype);
  } catch (const std::exception& e) {
    throw std::runtime_error(in_path + ": " + e.what());
  }

  auto host = [&](const Tensor& t) {
    Tensor h = t.detach().to(Device::CPU);
    return is_floating(h.dtype()) ? h.to(summary.file_dtype) : h;
  };
  h5::atomic_write(out_path, [&](const std::string& tmp) {
    h5::File out = h5::File::create(tmp);
    for (const auto& [name, y] : r.outputs) {
      out.write(name, host(y));
      summary.written.push_back(name);
    }
    for (const auto& [name, g] : r.grads) {
      out.write("grad_" + name, host(g));
      summary.written.push_back("grad_" + name);
    }
    out.set_attr("/", "op", op.name);
    out.set_attr("/", "device", std::string(device_name(summary.device)));
    out.set_attr("/", "dtype", std::string(dtype_name(summary.compute_dtype)));
    out.close();
  });
  return summary;
}

bool has_cuda_float64(const std::string& op_name) { return op_name == "ssd_scan" || op_name == "koopman_fit"; }

GradcheckResult gradcheck_op(const RunnerOp& op, uint64_t seed, const GradcheckOptions& options,
                             OpAttrs* attrs_out, Device device) {
  if (!op.example) throw std::runtime_error(op.name + ": the op has no example inputs for gradcheck");
  Rng rng(seed);
  OpAttrs attrs;
  NamedTensors example = op.example(rng, attrs);
  if (attrs_out) *attrs_out = attrs;

  std::vector<std::string> names;
  std::vector<Tensor> xs;
  std::vector<bool> diff;
  for (const auto& name : all_inputs(op)) {
    auto it = example.find(name);
    if (it == example.end() || !it->second.defined()) continue;
    names.push_back(name);
    xs.push_back(it->second);
    diff.push_back(is_differentiable_input(op, name) && is_floating(it->second.dtype()));
  }
  for (const auto& [name, t] : example)
    if (!contains(names, name)) throw std::runtime_error(op.name + ": example gives unknown input '" + name + "'");

  GradcheckFn fn = [&](const std::vector<Tensor>& in) {
    NamedTensors m;
    for (size_t i = 0; i < in.size(); ++i) m[names[i]] = in[i].defined() ? in[i].to(device) : in[i];
    NamedTensors out = op.forward(m, attrs);
    std::vector<Tensor> ys;
    for (const auto& o : op.outputs) ys.push_back(out.count(o) ? out.at(o).to(Device::CPU) : Tensor());
    return ys;
  };
  GradcheckOptions opt = options;
  // The projection directions come from their own stream. Drawn from the same
  // seed as the example, the direction for an output shaped like an input would
  // repeat that input's values: for l2norm (y = x/|x|, whose Jacobian maps any
  // radial direction to zero) the projected gradient was then exactly zero and
  // the check compared rounding noise with rounding noise.
  opt.seed = seed * 0x9E3779B97F4A7C15ull + 0x6A09E667F3BCC909ull;
  std::vector<std::string> labels;
  for (const auto& n : names) labels.push_back(op.name + "." + n);
  return gradcheck(fn, xs, diff, labels, opt);
}

}  // namespace echo
