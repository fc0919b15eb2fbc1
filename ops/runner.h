// The op runner's view of an op (spec §6.2): named tensors in, named tensors
// out, numeric attributes with defaults. train/ reads and writes the HDF5 files;
// this table only knows tensors, so tests and `echo-lm gradcheck` use it too.
#pragma once

#include <functional>
#include <map>
#include <string>
#include <vector>

#include "autograd/random.h"
#include "autograd/tensor.h"

namespace echo {

using NamedTensors = std::map<std::string, Tensor>;
using OpAttrs = std::map<std::string, double>;

struct RunnerOp {
  std::string name;
  std::vector<std::string> inputs;           // required, in spec order
  std::vector<std::string> optional_inputs;  // may be absent
  std::vector<std::string> outputs;
  std::vector<std::string> not_differentiable;  // e.g. "mask"
  OpAttrs attr_defaults;
  // Runs the op on the given tensors (already on the target device/dtype;
  // integer inputs stay integer). Must check shapes and throw with a message
  // that names the input.
  std::function<NamedTensors(const NamedTensors& inputs, const OpAttrs& attrs)> forward;
  // Valid random inputs in float64 for `echo-lm gradcheck --op` (and attributes to use).
  std::function<NamedTensors(Rng& rng, OpAttrs& attrs)> example;
};

const std::vector<RunnerOp>& runner_ops();
const RunnerOp* find_runner_op(const std::string& name);
double attr(const OpAttrs& attrs, const RunnerOp& op, const std::string& key);

}  // namespace echo
