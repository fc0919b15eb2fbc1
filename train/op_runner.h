// The op runner (spec §6.2): runs one op of the runner table (ops/runner.h) on
// named tensors, forward and, when output gradients are given, backward; and
// the file form behind `echo-lm op NAME --in IN.h5 --out OUT.h5`.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "autograd/gradcheck.h"
#include "ops/runner.h"

namespace echo {

struct OpRunResult {
  NamedTensors outputs;  // by output name
  NamedTensors grads;    // by input name (without the grad_ prefix); only after a backward
};

// Runs `op` on the given inputs (any device/dtype; floating inputs are converted
// to `dtype` on `device`, integer inputs of non-differentiable slots keep their
// integer type). With output_grads (keyed by output name; absent ones count as
// zero), also runs backward and returns a gradient for every differentiable
// input given (zeros where nothing flowed). Results stay on `device` in `dtype`.
// Checks names, not shapes (the op checks those): an unknown or missing input
// or gradient throws "NAME: ...".
OpRunResult run_op(const RunnerOp& op, const NamedTensors& inputs, const NamedTensors& output_grads,
                   const OpAttrs& attrs, Device device, DType dtype);

struct OpFileOptions {
  Device device = Device::CPU;
  // Compute dtype; unset: f32 on CUDA, else the widest float dtype of the inputs.
  std::optional<DType> dtype;
};

struct OpFileSummary {
  Device device = Device::CPU;
  DType compute_dtype = DType::F32;
  DType file_dtype = DType::F32;  // the inputs' float dtype, used for everything written
  bool backward = false;
  std::vector<std::string> written;  // dataset names in OUT.h5
};

// IN.h5 -> OUT.h5 as spec §6.2 describes: every root dataset must be an input
// of the op or grad_<output>; every root attribute must be an attribute of the
// op. OUT.h5 is written atomically and holds the outputs (and grad_<input>) in
// the inputs' float dtype, plus root attributes op, device and dtype.
OpFileSummary run_op_files(const RunnerOp& op, const std::string& in_path, const std::string& out_path,
                           const OpFileOptions& options = {});

// Finite-difference check of an op of the table on its own example inputs in
// float64, every differentiable input given. `attrs` receives the attributes the
// example chose. With device CUDA the op runs there (its float64 kernels): the
// inputs are copied to the device and the outputs back, both differentiably, so
// the CUDA backward is what gets compared with the central differences.
GradcheckResult gradcheck_op(const RunnerOp& op, uint64_t seed, const GradcheckOptions& options,
                             OpAttrs* attrs = nullptr, Device device = Device::CPU);

// Whether the op's CUDA kernels also run in float64 (so gradcheck_op can check
// its CUDA path). The others are float32 on the GPU; their CUDA path is checked
// against the float64 CPU reference instead (tests/cuda/test_cuda_ops.cpp).
bool has_cuda_float64(const std::string& op_name);

// The op's inputs (required, then optional) in spec order.
std::vector<std::string> all_inputs(const RunnerOp& op);
bool is_differentiable_input(const RunnerOp& op, const std::string& input);
// "x, z, w, [bias]" style list for messages and --help.
std::string describe_inputs(const RunnerOp& op);

}  // namespace echo
