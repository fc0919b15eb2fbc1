#include "ops/runner.h"

#include <stdexcept>

namespace echo {

// Each op file defines its RunnerOp through a function declared here; the list
// below is the one place that enumerates them (static registration would be
// dropped by the linker from a static library).
RunnerOp runner_op_causal_conv1d();
RunnerOp runner_op_gated_rmsnorm();
RunnerOp runner_op_ssd_scan();
RunnerOp runner_op_koopman_fit();
RunnerOp runner_op_causal_attention();
std::vector<RunnerOp> runner_ops_rmsnorm();
std::vector<RunnerOp> runner_ops_l2norm();
std::vector<RunnerOp> runner_ops_embedding();
std::vector<RunnerOp> runner_ops_cross_entropy();
std::vector<RunnerOp> runner_ops_matmul();
std::vector<RunnerOp> runner_ops_unary();
std::vector<RunnerOp> runner_ops_binary();
std::vector<RunnerOp> runner_ops_reduce();
std::vector<RunnerOp> runner_ops_shape();
std::vector<RunnerOp> runner_ops_koopman_rotate();

const std::vector<RunnerOp>& runner_ops() {
  static const std::vector<RunnerOp> ops = [] {
    // The ops of the specification's runner table first, then every other op
    // the models use (so that each has a command-line entry and a row in the
    // CUDA-against-CPU table).
    std::vector<RunnerOp> all = {
        runner_op_causal_conv1d(),
        runner_op_gated_rmsnorm(),
        runner_op_causal_attention(),
        runner_op_koopman_fit(),
        runner_op_ssd_scan(),
        // RUNNER-OPS (one line per op; keep this marker)
    };
    for (auto group : {runner_ops_rmsnorm, runner_ops_l2norm, runner_ops_embedding, runner_ops_cross_entropy,
                       runner_ops_matmul, runner_ops_unary, runner_ops_binary, runner_ops_reduce, runner_ops_shape,
                       runner_ops_koopman_rotate})
      for (RunnerOp& op : group()) all.push_back(std::move(op));
    return all;
  }();
  return ops;
}

RunnerOp make_runner_op(const std::string& name, std::vector<std::string> inputs, OpAttrs defaults,
                        std::function<Tensor(const std::vector<Tensor>& in, const OpAttrs& attrs)> forward,
                        std::function<NamedTensors(Rng& rng, OpAttrs& attrs, int variant)> cases,
                        std::string output, std::vector<std::string> not_differentiable) {
  RunnerOp op;
  op.name = name;
  op.inputs = inputs;
  op.outputs = {output};
  op.not_differentiable = std::move(not_differentiable);
  op.attr_defaults = defaults;
  op.forward = [name, inputs, defaults, forward, output](const NamedTensors& in, const OpAttrs& attrs) {
    std::vector<Tensor> xs;
    for (const auto& n : inputs) {
      auto it = in.find(n);
      if (it == in.end() || !it->second.defined()) throw std::runtime_error(name + ": missing input " + n);
      xs.push_back(it->second);
    }
    OpAttrs full = defaults;
    for (const auto& [k, v] : attrs) full[k] = v;
    return NamedTensors{{output, forward(xs, full)}};
  };
  op.cases = cases;
  op.example = [cases](Rng& rng, OpAttrs& attrs) { return cases(rng, attrs, 0); };
  return op;
}

const RunnerOp* find_runner_op(const std::string& name) {
  for (const auto& op : runner_ops())
    if (op.name == name) return &op;
  return nullptr;
}

double attr(const OpAttrs& attrs, const RunnerOp& op, const std::string& key) {
  auto it = attrs.find(key);
  if (it != attrs.end()) return it->second;
  auto d = op.attr_defaults.find(key);
  if (d != op.attr_defaults.end()) return d->second;
  throw std::runtime_error(op.name + ": unknown attribute " + key);
}

}  // namespace echo
