// `echo-lm op` (the op runner, spec §6.2) and `echo-lm gradcheck`.
#include <cstdio>
#include <iostream>
#include <memory>

#include "ops/runner.h"
#include "train/cli.h"
#include "train/op_runner.h"

namespace echo::cli {

namespace {

std::string runner_op_names() {
  std::string s;
  for (const auto& op : runner_ops()) s += (s.empty() ? "" : ", ") + op.name;
  return s;
}

const RunnerOp& lookup_op(const std::string& name) {
  if (const RunnerOp* op = find_runner_op(name)) return *op;
  throw std::runtime_error("unknown op '" + name + "' (" +
                           (runner_ops().empty() ? std::string("this build has no runner ops yet")
                                                 : "runner ops: " + runner_op_names()) +
                           ")");
}

// The table of runner ops for `echo-lm op --help`.
std::string op_table() {
  if (runner_ops().empty()) return "Runner ops: none in this build yet.";
  std::string s = "Runner ops (inputs, [optional]; attributes = default; outputs):";
  for (const auto& op : runner_ops()) {
    s += "\n  " + op.name + ": " + describe_inputs(op) + ";";
    for (const auto& [name, value] : op.attr_defaults) {
      char buf[64];
      std::snprintf(buf, sizeof buf, " %s = %g", name.c_str(), value);
      s += buf;
    }
    s += op.attr_defaults.empty() ? " ->" : "; ->";
    for (const auto& o : op.outputs) s += " " + o;
  }
  return s;
}

struct OpArgs {
  std::string name, in, out, device = "cpu", dtype;
};

void run_op_command(const OpArgs& a) {
  const RunnerOp& op = lookup_op(a.name);
  OpFileOptions options;
  options.device = parse_device(a.device);
  if (!a.dtype.empty()) options.dtype = parse_float_dtype(a.dtype);
  OpFileSummary s = run_op_files(op, a.in, a.out, options);
  std::cout << "op " << op.name << " (" << device_name(s.device) << ", " << dtype_name(s.compute_dtype)
            << (s.backward ? ", forward+backward" : ", forward") << "): wrote";
  for (const auto& name : s.written) std::cout << " " << name;
  std::cout << " to " << a.out << " as " << dtype_name(s.file_dtype) << "\n";
}

struct GradcheckArgs {
  std::string op, device = "cpu";
  uint64_t seed = 1;
  GradcheckOptions options;
};

// Returns true when every op passed.
bool run_gradcheck_command(const GradcheckArgs& a) {
  const Device device = parse_device(a.device);
  std::vector<const RunnerOp*> ops;
  if (a.op == "all") {
    for (const auto& op : runner_ops())
      if (device == Device::CPU || has_cuda_float64(op.name)) ops.push_back(&op);
    if (ops.empty()) throw std::runtime_error("gradcheck --op all: this build has no runner ops yet");
  } else {
    ops.push_back(&lookup_op(a.op));
  }
  bool all_ok = true;
  for (const RunnerOp* op : ops) {
    OpAttrs attrs;
    GradcheckResult r = gradcheck_op(*op, a.seed, a.options, &attrs, device);
    std::printf("gradcheck %s (%s, float64, seed %llu, step %g, tolerance %g", op->name.c_str(),
                device_name(device), static_cast<unsigned long long>(a.seed), a.options.eps,
                a.options.tolerance);
    const char* sep = "; attributes: ";
    for (const auto& [k, v] : attrs) {
      std::printf("%s%s = %g", sep, k.c_str(), v);
      sep = ", ";
    }
    std::printf(")\n");
    for (const auto& in : r.inputs)
      std::printf("  %-28s max_rel_error %.3e  max_abs_error %.3e  (%lld elements)%s\n", in.name.c_str(),
                  in.max_error, in.max_abs_error, static_cast<long long>(in.checked),
                  in.accumulates ? "" : "  BACKWARD OVERWRITES INSTEAD OF ADDING");
    std::printf("%s %s\n", r.ok ? "PASS" : "FAIL", op->name.c_str());
    all_ok = all_ok && r.ok;
  }
  std::fflush(stdout);
  return all_ok;
}

}  // namespace

void add_op_commands(CLI::App& app) {
  auto op_args = std::make_shared<OpArgs>();
  CLI::App* op = app.add_subcommand(
      "op", "Run one op on tensors from an HDF5 file (spec §6.2): IN.h5 holds one dataset per input and the "
            "op's attributes as root attributes; datasets grad_<output> make it also run backward and write "
            "grad_<input> for every differentiable input given. OUT.h5 gets the outputs by name, in the inputs' "
            "float dtype.");
  op->add_option("name", op_args->name, "the op (see the list below)")->required();
  op->add_option("--in", op_args->in, "input file IN.h5")->required();
  op->add_option("--out", op_args->out, "output file OUT.h5 (written atomically)")->required();
  add_device_flag(*op, op_args->device);
  op->add_option("--dtype", op_args->dtype,
                 "compute dtype f32 or f64 (default: f32 on cuda, else the inputs' float dtype)")
      ->check(CLI::IsMember({"f32", "f64"}));
  op->footer(op_table());
  op->callback([op_args] { run_op_command(*op_args); });

  auto gc_args = std::make_shared<GradcheckArgs>();
  CLI::App* gc = app.add_subcommand(
      "gradcheck", "Finite-difference gradient check in float64 of a runner op on its own example inputs; "
                   "prints the max relative error per input and PASS or FAIL (exit status 1 on FAIL). With "
                   "--device cuda the op runs on the GPU in float64 (for the ops with float64 CUDA kernels; "
                   "--op all checks those).");
  gc->add_option("--op", gc_args->op, "the op, or 'all' for every runner op")->required();
  gc->add_option("--seed", gc_args->seed, "seed of the example inputs and directions")->capture_default_str();
  gc->add_option("--eps", gc_args->options.eps, "finite-difference step")->capture_default_str();
  gc->add_option("--tolerance", gc_args->options.tolerance, "largest accepted relative error")
      ->capture_default_str();
  gc->add_option("--max-elements", gc_args->options.max_elements,
                 "elements checked per input (a random subset beyond this)")
      ->capture_default_str();
  add_device_flag(*gc, gc_args->device);
  gc->callback([gc_args] {
    if (!run_gradcheck_command(*gc_args)) throw CLI::RuntimeError(1);
  });
}

}  // namespace echo::cli
