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

const std::vector<RunnerOp>& runner_ops() {
  static const std::vector<RunnerOp> ops = {
      runner_op_causal_conv1d(),
      runner_op_gated_rmsnorm(),
      runner_op_causal_attention(),
      runner_op_koopman_fit(),
      runner_op_ssd_scan(),
      // RUNNER-OPS (one line per op; keep this marker)
  };
  return ops;
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
