// The op runner (train/op_runner.h): in memory and through files, with a small
// op defined here (the runner's rules do not depend on which op runs), and
// through the real runner table for the ops that are in it.
#include "train/op_runner.h"

#include <cmath>
#include <filesystem>
#include <set>

#include "ops/common.h"
#include "ops/unary.h"
#include "test_util.h"
#include "train/h5io.h"
#include "train_util.h"

using namespace echo;
using namespace echo::testing;
using echo::h5::File;

namespace {

// y = scale · x · s · mask (s optional, default 1; mask optional integer 0/1),
// z = exp(x). Two outputs, an optional differentiable input, an integer
// non-differentiable input and an attribute: every case the runner handles.
Tensor scaled_product(const Tensor& x, const Tensor& s, const Tensor& mask, double scale, bool wrong_backward) {
  const char* op = "scaled_product";
  check_floating_same(op, {&x, &s});
  op_check(x.device() == Device::CPU, op, "CPU only");
  if (s.defined()) check_shape(op, "s", s, x.shape());
  std::vector<int64_t> m(x.numel(), 1);
  if (mask.defined()) {
    check_shape(op, "mask", mask, x.shape());
    op_check(!is_floating(mask.dtype()), op, "mask must be an integer tensor, got " + mask.describe());
    m = mask.to_int_vector();
  }
  Tensor ones = Tensor::full(x.shape(), 1.0, x.dtype());
  const Tensor& sv = s.defined() ? s : ones;
  Tensor y = Tensor::empty(x.shape(), x.dtype());
  dispatch_floating(x.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    for (int64_t i = 0; i < x.numel(); ++i)
      y.data<T>()[i] = static_cast<T>(scale * x.data<T>()[i] * sv.data<T>()[i] * m[i]);
  });
  if (any_requires_grad({&x, &s})) {
    record(op, {x, s}, {y}, {x, sv}, [m, scale, wrong_backward](Node& node, const std::vector<Tensor>& gy,
                                                               std::vector<Tensor>& gx) {
      const Tensor& xs = node.saved(0);
      const Tensor& ss = node.saved(1);
      dispatch_floating(xs.dtype(), "scaled_product backward", [&](auto tag) {
        using T = decltype(tag);
        const T* g = gy[0].data<T>();
        for (int64_t i = 0; i < xs.numel(); ++i) {
          const double f = wrong_backward ? 1.1 * scale : scale;
          if (gx[0].defined()) gx[0].data<T>()[i] += static_cast<T>(g[i] * f * ss.data<T>()[i] * m[i]);
          if (gx[1].defined()) gx[1].data<T>()[i] += static_cast<T>(g[i] * f * xs.data<T>()[i] * m[i]);
        }
      });
    });
  }
  return y;
}

RunnerOp test_op(bool wrong_backward = false) {
  RunnerOp op;
  op.name = "scaled_product";
  op.inputs = {"x"};
  op.optional_inputs = {"s", "mask"};
  op.outputs = {"y", "z"};
  op.not_differentiable = {"mask"};
  op.attr_defaults = {{"scale", 2.0}};
  op.forward = [op, wrong_backward](const NamedTensors& in, const OpAttrs& attrs) {
    auto get = [&](const char* k) { return in.count(k) ? in.at(k) : Tensor(); };
    return NamedTensors{{"y", scaled_product(get("x"), get("s"), get("mask"), attr(attrs, op, "scale"), wrong_backward)},
                        {"z", echo::exp(get("x"))}};
  };
  op.example = [](Rng& rng, OpAttrs& attrs) {
    attrs["scale"] = 0.5;
    std::vector<int64_t> m(12);
    for (auto& e : m) e = rng.randint(0, 2);
    return NamedTensors{{"x", randn({3, 4}, rng, DType::F64)},
                        {"s", randn({3, 4}, rng, DType::F64)},
                        {"mask", Tensor::from_ints(m, {3, 4}, DType::I32)}};
  };
  return op;
}

struct Case {
  std::vector<double> x, s, gy, gz;
  std::vector<int64_t> mask;
  Shape shape{2, 3};
  double scale = 3.0;
};

Case make_case(uint64_t seed) {
  Rng rng(seed);
  Case c;
  for (int i = 0; i < 6; ++i) {
    c.x.push_back(rng.normal());
    c.s.push_back(rng.normal());
    c.gy.push_back(rng.normal());
    c.gz.push_back(rng.normal());
    c.mask.push_back(i % 3 == 1 ? 0 : 1);
  }
  return c;
}

template <typename F>
void expect_error(F&& fn, const std::vector<std::string>& fragments) {
  try {
    fn();
    ADD_FAILURE() << "no exception; expected one containing '" << fragments.at(0) << "'";
  } catch (const std::runtime_error& e) {
    const std::string msg = e.what();
    for (const auto& f : fragments) EXPECT_NE(msg.find(f), std::string::npos) << "message: " << msg << "\nmissing: " << f;
  }
}

void expect_near(const Tensor& t, const std::vector<double>& ref, double tol, const std::string& what) {
  EXPECT_LT(max_rel_diff(t.to_vector(), ref), tol) << what;
}

}  // namespace

// ---- in memory ----------------------------------------------------------------

TEST(OpRunner, ForwardOnlyMatchesTheFormula) {
  const RunnerOp op = test_op();
  Case c = make_case(1);
  NamedTensors in = {{"x", Tensor::from_vector(c.x, c.shape, DType::F64)},
                     {"s", Tensor::from_vector(c.s, c.shape, DType::F64)},
                     {"mask", Tensor::from_ints(c.mask, c.shape, DType::I64)}};
  OpRunResult r = run_op(op, in, {}, {{"scale", c.scale}}, Device::CPU, DType::F64);
  std::vector<double> y(6), z(6);
  for (int i = 0; i < 6; ++i) {
    y[i] = c.scale * c.x[i] * c.s[i] * c.mask[i];
    z[i] = std::exp(c.x[i]);
  }
  expect_near(r.outputs.at("y"), y, 1e-15, "y");
  expect_near(r.outputs.at("z"), z, 1e-15, "z");
  EXPECT_TRUE(r.grads.empty());
  EXPECT_FALSE(r.outputs.at("y").requires_grad());
  // Defaults: scale 2, no s, no mask.
  r = run_op(op, {{"x", in.at("x")}}, {}, {}, Device::CPU, DType::F64);
  for (int i = 0; i < 6; ++i) y[i] = 2.0 * c.x[i];
  expect_near(r.outputs.at("y"), y, 1e-15, "y with defaults");
}

TEST(OpRunner, BackwardWithAllAndWithMissingOutputGradients) {
  const RunnerOp op = test_op();
  Case c = make_case(2);
  NamedTensors in = {{"x", Tensor::from_vector(c.x, c.shape, DType::F64)},
                     {"s", Tensor::from_vector(c.s, c.shape, DType::F64)},
                     {"mask", Tensor::from_ints(c.mask, c.shape, DType::I32)}};
  const Tensor gy = Tensor::from_vector(c.gy, c.shape, DType::F64);
  const Tensor gz = Tensor::from_vector(c.gz, c.shape, DType::F64);
  std::vector<double> gx(6), gs(6), gx_y_only(6);
  for (int i = 0; i < 6; ++i) {
    gx_y_only[i] = c.gy[i] * c.scale * c.s[i] * c.mask[i];
    gx[i] = gx_y_only[i] + c.gz[i] * std::exp(c.x[i]);
    gs[i] = c.gy[i] * c.scale * c.x[i] * c.mask[i];
  }
  OpRunResult r = run_op(op, in, {{"y", gy}, {"z", gz}}, {{"scale", c.scale}}, Device::CPU, DType::F64);
  ASSERT_EQ(r.grads.size(), 2u);  // x and s; never the integer mask
  expect_near(r.grads.at("x"), gx, 1e-14, "grad x");
  expect_near(r.grads.at("s"), gs, 1e-14, "grad s");

  // Only grad_y: the gradient of z counts as zero.
  r = run_op(op, in, {{"y", gy}}, {{"scale", c.scale}}, Device::CPU, DType::F64);
  expect_near(r.grads.at("x"), gx_y_only, 1e-14, "grad x from y only");
  // Only grad_z: s gets an all-zero gradient (nothing flowed), still written.
  r = run_op(op, in, {{"z", gz}}, {{"scale", c.scale}}, Device::CPU, DType::F64);
  EXPECT_EQ(r.grads.at("s").to_vector(), std::vector<double>(6, 0.0)) << "grad s from z only";
  EXPECT_EQ(r.grads.at("s").shape(), c.shape);
  // The caller's tensors are untouched.
  EXPECT_FALSE(in.at("x").requires_grad());
  EXPECT_FALSE(in.at("x").grad().defined());
}

TEST(OpRunner, ConvertsFloatInputsAndKeepsIntegerMasks) {
  const RunnerOp op = test_op();
  Case c = make_case(3);
  NamedTensors in = {{"x", Tensor::from_vector(c.x, c.shape, DType::F32)},
                     {"s", Tensor::from_vector(c.s, c.shape, DType::F64)},
                     {"mask", Tensor::from_ints(c.mask, c.shape, DType::I64)}};
  OpRunResult r = run_op(op, in, {{"y", Tensor::from_vector(c.gy, c.shape, DType::F32)}}, {}, Device::CPU, DType::F64);
  EXPECT_EQ(r.outputs.at("y").dtype(), DType::F64);
  EXPECT_EQ(r.grads.at("x").dtype(), DType::F64);
  r = run_op(op, in, {}, {}, Device::CPU, DType::F32);
  EXPECT_EQ(r.outputs.at("z").dtype(), DType::F32);
  // A float mask is converted like any float (the op then refuses it: masks are integers).
  in["mask"] = Tensor::from_vector({1, 1, 1, 1, 1, 1}, c.shape, DType::F32);
  expect_error([&] { run_op(op, in, {}, {}, Device::CPU, DType::F32); }, {"mask must be an integer"});
}

TEST(OpRunner, BadNamesAreErrorsThatNameThem) {
  const RunnerOp op = test_op();
  const Tensor x = Tensor::zeros({2, 3}, DType::F64);
  expect_error([&] { run_op(op, {{"x", x}, {"q", x}}, {}, {}, Device::CPU, DType::F64); },
               {"scaled_product: unknown input 'q'", "x, [s], [mask]"});
  expect_error([&] { run_op(op, {{"s", x}}, {}, {}, Device::CPU, DType::F64); }, {"missing input 'x'"});
  expect_error([&] { run_op(op, {{"x", x}}, {{"w", x}}, {}, Device::CPU, DType::F64); },
               {"gradient given for unknown output 'w'", "outputs: y, z"});
  expect_error([&] { run_op(op, {{"x", x}}, {}, {{"eps", 1.0}}, Device::CPU, DType::F64); },
               {"unknown attribute 'eps'", "attributes: scale"});
  expect_error([&] { run_op(op, {{"x", x}}, {{"y", Tensor::zeros({3, 2}, DType::F64)}}, {}, Device::CPU, DType::F64); },
               {"grad_y must have the shape of output y [2,3]", "[3,2]"});
  expect_error([&] { run_op(op, {{"x", Tensor::zeros({2, 3}, DType::I32)}}, {}, {}, Device::CPU, DType::F64); },
               {"input 'x' must be floating point", "i32"});
  expect_error([&] { run_op(op, {{"x", x}}, {}, {}, Device::CPU, DType::I32); }, {"compute dtype must be f32 or f64"});
  if (!cuda_available())
    expect_error([&] { run_op(op, {{"x", x}}, {}, {}, Device::CUDA, DType::F32); }, {"--device cuda"});
  else
    expect_error([&] { run_op(op, {{"x", x}}, {}, {}, Device::CUDA, DType::F64); }, {"runs f32 only"});
}

// ---- through files ------------------------------------------------------------------

TEST(OpRunnerFiles, ForwardAndBackwardThroughHdf5) {
  TempDir dir;
  const RunnerOp op = test_op();
  Case c = make_case(4);
  const std::string in_path = dir.file("IN.h5"), out_path = dir.file("OUT.h5");
  {
    File f = File::create(in_path);
    f.write("x", Tensor::from_vector(c.x, c.shape, DType::F32));
    f.write("s", Tensor::from_vector(c.s, c.shape, DType::F32));
    f.write("mask", Tensor::from_ints(c.mask, c.shape, DType::I32));
    f.write("grad_y", Tensor::from_vector(c.gy, c.shape, DType::F32));
    f.set_attr("/", "scale", int64_t{3});  // an integer attribute is a number too
    f.close();
  }
  OpFileSummary s = run_op_files(op, in_path, out_path);
  EXPECT_TRUE(s.backward);
  EXPECT_EQ(s.file_dtype, DType::F32);
  EXPECT_EQ(s.compute_dtype, DType::F32);
  File out = File::open(out_path);
  EXPECT_EQ(out.list_datasets(), (std::vector<std::string>{"grad_s", "grad_x", "y", "z"}));
  EXPECT_EQ(out.attr_string("/", "op"), "scaled_product");
  EXPECT_EQ(out.attr_string("/", "device"), "cpu");
  EXPECT_EQ(out.attr_string("/", "dtype"), "f32");
  std::vector<double> y(6), gx(6);
  for (int i = 0; i < 6; ++i) {
    const double xf = static_cast<float>(c.x[i]), sf = static_cast<float>(c.s[i]), gf = static_cast<float>(c.gy[i]);
    y[i] = 3.0 * xf * sf * c.mask[i];
    gx[i] = gf * 3.0 * sf * c.mask[i];
  }
  Tensor yt = out.read("y");
  EXPECT_EQ(yt.dtype(), DType::F32);
  EXPECT_EQ(yt.shape(), c.shape);
  expect_near(yt, y, 1e-6, "y");
  expect_near(out.read("grad_x"), gx, 1e-6, "grad_x");
}

TEST(OpRunnerFiles, ComputeDtypeAndFileDtype) {
  TempDir dir;
  const RunnerOp op = test_op();
  Case c = make_case(5);
  const std::string in_path = dir.file("IN.h5"), out_path = dir.file("OUT.h5");
  {
    File f = File::create(in_path);
    f.write("x", Tensor::from_vector(c.x, c.shape, DType::F64));
    f.close();
  }
  // f64 inputs: computed and written in f64 by default...
  OpFileSummary s = run_op_files(op, in_path, out_path);
  EXPECT_EQ(s.compute_dtype, DType::F64);
  EXPECT_EQ(File::open(out_path).read("z").dtype(), DType::F64);
  std::vector<double> z(6);
  for (int i = 0; i < 6; ++i) z[i] = std::exp(c.x[i]);
  expect_near(File::open(out_path).read("z"), z, 1e-15, "z in f64");
  // ...and with --dtype f32, computed in f32 but written in the file's f64.
  OpFileOptions o;
  o.dtype = DType::F32;
  s = run_op_files(op, in_path, out_path, o);
  EXPECT_EQ(s.compute_dtype, DType::F32);
  Tensor zt = File::open(out_path).read("z");
  EXPECT_EQ(zt.dtype(), DType::F64);
  const double err = max_rel_diff(zt.to_vector(), z);
  EXPECT_GT(err, 1e-12);  // really went through f32
  EXPECT_LT(err, 1e-6);
}

TEST(OpRunnerFiles, BadFilesAreErrorsThatNameTheProblem) {
  TempDir dir;
  const RunnerOp op = test_op();
  const std::string in_path = dir.file("IN.h5"), out_path = dir.file("OUT.h5");
  const Tensor x = Tensor::zeros({2, 3}, DType::F32);
  auto make = [&](const std::function<void(File&)>& fill) {
    File f = File::create(in_path);
    fill(f);
    f.close();
  };
  make([&](File& f) { f.write("x", x); f.write("foo", x); f.write("grad_q", x); });
  expect_error([&] { run_op_files(op, in_path, out_path); },
               {in_path, "unknown dataset(s) 'foo', 'grad_q'", "grad_y, grad_z"});
  make([&](File& f) { f.write("x", x); f.write("extra/t", x); });
  expect_error([&] { run_op_files(op, in_path, out_path); }, {"unknown dataset(s) 'extra/'"});
  make([&](File& f) { f.write("s", x); });
  expect_error([&] { run_op_files(op, in_path, out_path); }, {in_path, "missing input dataset(s) 'x'"});
  make([&](File& f) { f.write("x", x); f.set_attr("/", "eps", 1e-5); f.set_attr("/", "chunk", 3); });
  expect_error([&] { run_op_files(op, in_path, out_path); },
               {in_path, "unknown attribute(s) 'chunk', 'eps'", "attributes: scale"});
  make([&](File& f) { f.write("x", x); f.set_attr("/", "scale", "big"); });
  expect_error([&] { run_op_files(op, in_path, out_path); }, {"attribute 'scale' must be a number"});
  make([&](File& f) { f.write("x", x); f.write("s", Tensor::zeros({3}, DType::F32)); });
  expect_error([&] { run_op_files(op, in_path, out_path); }, {in_path, "scaled_product: s must have shape [2,3]"});
  expect_error([&] { run_op_files(op, dir.file("none.h5"), out_path); }, {"none.h5: no such file"});
  EXPECT_FALSE(std::filesystem::exists(out_path));  // nothing was written by any failure
  make([&](File& f) { f.write("x", x); });
  expect_error([&] { run_op_files(op, in_path, dir.file("no/dir/OUT.h5")); }, {"no/dir/OUT.h5: cannot create"});
}

// ---- gradcheck ------------------------------------------------------------------------

TEST(OpRunnerGradcheck, PassesARightBackwardAndFailsAWrongOne) {
  OpAttrs attrs;
  GradcheckResult good = gradcheck_op(test_op(), 7, {}, &attrs);
  EXPECT_TRUE(good.ok) << good.report();
  EXPECT_EQ(attrs.at("scale"), 0.5);
  std::vector<std::string> names;
  for (const auto& r : good.inputs) names.push_back(r.name);
  EXPECT_EQ(names, (std::vector<std::string>{"scaled_product.x", "scaled_product.s"}));
  GradcheckResult bad = gradcheck_op(test_op(/*wrong_backward=*/true), 7, {});
  EXPECT_FALSE(bad.ok) << bad.report();
}

// ---- the real runner table ---------------------------------------------------------------

TEST(RunnerTable, NamesAreUniqueAndEntriesComplete) {
  if (runner_ops().empty()) GTEST_SKIP() << "the runner table is empty in this build";
  std::set<std::string> seen;
  for (const auto& op : runner_ops()) {
    SCOPED_TRACE(op.name);
    EXPECT_TRUE(seen.insert(op.name).second) << "duplicate";
    EXPECT_FALSE(op.inputs.empty());
    EXPECT_FALSE(op.outputs.empty());
    EXPECT_TRUE(op.forward);
    EXPECT_TRUE(op.example);
    EXPECT_EQ(find_runner_op(op.name), &op);
  }
}

// An op's example through IN.h5 -> OUT.h5, forward and backward, against the
// same op run in memory.
void check_example_through_files(const RunnerOp& op) {
  SCOPED_TRACE(op.name);
  TempDir dir;
  Rng rng(11);
  OpAttrs attrs;
  NamedTensors ex = op.example(rng, attrs);
  OpRunResult ref = run_op(op, ex, {}, attrs, Device::CPU, DType::F64);
  NamedTensors seeds;
  for (const auto& [name, y] : ref.outputs) seeds[name] = randn(y.shape(), rng, DType::F64);
  OpRunResult ref_bwd = run_op(op, ex, seeds, attrs, Device::CPU, DType::F64);
  {
    File f = File::create(dir.file("IN.h5"));
    for (const auto& [name, t] : ex) f.write(name, t);
    for (const auto& [name, g] : seeds) f.write("grad_" + name, g);
    for (const auto& [name, v] : attrs) f.set_attr("/", name, v);
    f.close();
  }
  run_op_files(op, dir.file("IN.h5"), dir.file("OUT.h5"));
  File out = File::open(dir.file("OUT.h5"));
  size_t grads = 0;
  for (const auto& name : all_inputs(op))
    if (ex.count(name) && is_differentiable_input(op, name) && is_floating(ex.at(name).dtype())) {
      EXPECT_TRUE(out.has_dataset("grad_" + name)) << name;
      ++grads;
    }
  EXPECT_EQ(out.list_datasets().size(), op.outputs.size() + grads);
  for (const auto& [name, y] : ref_bwd.outputs) EXPECT_LT(max_rel_diff(out.read(name), y), 1e-14) << name;
  for (const auto& [name, g] : ref_bwd.grads) EXPECT_LT(max_rel_diff(out.read("grad_" + name), g), 1e-14) << name;
}

TEST(OpRunnerFiles, ExampleThroughFilesMatchesInMemory) { check_example_through_files(test_op()); }

TEST(RunnerTable, EveryOpRunsItsExampleThroughFiles) {
  if (runner_ops().empty()) GTEST_SKIP() << "the runner table is empty in this build";
  for (const auto& op : runner_ops()) check_example_through_files(op);
}

// `echo-lm gradcheck --op all`: every op's example passes the float64 finite-
// difference check, and the check is not vacuous: some input's gradient must be
// of order one (a projection direction that the op's Jacobian annihilates once
// made l2norm's check compare rounding noise with rounding noise).
TEST(RunnerTable, EveryOpPassesGradcheck) {
  if (runner_ops().empty()) GTEST_SKIP() << "the runner table is empty in this build";
  GradcheckOptions options;
  options.max_elements = 100;  // per input; each op's own tests check every element
  for (const auto& op : runner_ops()) {
    for (uint64_t seed : {1, 2}) {
      SCOPED_TRACE(op.name + " seed " + std::to_string(seed));
      GradcheckResult r = gradcheck_op(op, seed, options);
      EXPECT_TRUE(r.ok) << r.report();
      double largest = 0;
      for (const auto& in : r.inputs) largest = std::max(largest, in.gradient_scale);
      if (!r.inputs.empty()) EXPECT_GT(largest, 1e-3) << "every gradient of the check is ~0: " << r.report();
    }
  }
}

// gated_rmsnorm through the runner against a naive loop (spec §1.3: Mamba-2's
// rmsnorm(x · silu(z)) · w, one group), and its gradients by finite differences.
TEST(RunnerTable, GatedRmsnormMatchesANaiveLoop) {
  const RunnerOp* op = find_runner_op("gated_rmsnorm");
  if (!op) GTEST_SKIP() << "gated_rmsnorm is not in the runner table of this build yet";
  Rng rng(3);
  const int64_t rows = 10, d = 8;
  const double eps = 1e-3;
  Tensor x = randn({2, 5, d}, rng, DType::F64), z = randn({2, 5, d}, rng, DType::F64), w = randn({d}, rng, DType::F64);
  OpRunResult r = run_op(*op, {{"x", x}, {"z", z}, {"w", w}}, {}, {{"eps", eps}}, Device::CPU, DType::F64);
  auto xv = x.to_vector(), zv = z.to_vector(), wv = w.to_vector();
  std::vector<double> ref(xv.size());
  for (int64_t i = 0; i < rows; ++i) {
    std::vector<double> g(d);
    double ms = 0;
    for (int64_t j = 0; j < d; ++j) {
      const double zz = zv[i * d + j];
      g[j] = xv[i * d + j] * zz / (1 + std::exp(-zz));
      ms += g[j] * g[j] / d;
    }
    for (int64_t j = 0; j < d; ++j) ref[i * d + j] = g[j] / std::sqrt(ms + eps) * wv[j];
  }
  EXPECT_LT(max_rel_diff(r.outputs.at("y").to_vector(), ref), 1e-13);
  GradcheckOptions gopt;
  gopt.max_elements = 200;  // the op's own tests check every element
  GradcheckResult gc = gradcheck_op(*op, 1, gopt);
  EXPECT_TRUE(gc.ok) << gc.report();
}
