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
  // More inputs for the CUDA-against-CPU table (tests/cuda/test_cuda_ops.cpp):
  // variant 0 is the example, variants 1, 2, ... larger shapes whose sizes are
  // not multiples of the kernels' block and tile sizes; an empty map ends the list.
  std::function<NamedTensors(Rng& rng, OpAttrs& attrs, int variant)> cases;
};

// The entry of an op with required inputs `inputs` (in order) and one output:
// forward(inputs, attributes with the defaults filled in). `not_differentiable`
// names integer inputs (ids, targets). example = cases(…, 0).
RunnerOp make_runner_op(const std::string& name, std::vector<std::string> inputs, OpAttrs defaults,
                        std::function<Tensor(const std::vector<Tensor>& in, const OpAttrs& attrs)> forward,
                        std::function<NamedTensors(Rng& rng, OpAttrs& attrs, int variant)> cases,
                        std::string output = "y", std::vector<std::string> not_differentiable = {});

const std::vector<RunnerOp>& runner_ops();
const RunnerOp* find_runner_op(const std::string& name);
double attr(const OpAttrs& attrs, const RunnerOp& op, const std::string& key);

}  // namespace echo
