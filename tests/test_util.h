// Helpers shared by the tests.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <stdexcept>
#include <string>
#include <vector>

#include "autograd/device.h"
#include "autograd/gradcheck.h"
#include "autograd/random.h"
#include "autograd/tape.h"
#include "autograd/tensor.h"
#include "ops/runner.h"

// Skips a CUDA test with a message that says why (no driver here, no device...).
#define ECHO_REQUIRE_GPU()                                                          \
  do {                                                                              \
    if (!echo::cuda_available())                                                    \
      GTEST_SKIP() << "no CUDA GPU available: " << echo::cuda_unavailable_reason(); \
  } while (0)

namespace echo::testing {

// max |a−b| / max(max|b|, tiny): relative to the scale of the reference.
inline double max_rel_diff(const std::vector<double>& a, const std::vector<double>& b) {
  EXPECT_EQ(a.size(), b.size());
  double num = 0, den = 1e-30;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) {
    double d = std::fabs(a[i] - b[i]);
    if (std::isnan(d)) return INFINITY;
    num = std::max(num, d);
    den = std::max(den, std::fabs(b[i]));
  }
  return num / den;
}
inline double max_rel_diff(const Tensor& a, const Tensor& b) {
  EXPECT_EQ(a.shape(), b.shape()) << a.describe() << " vs " << b.describe();
  return max_rel_diff(a.to_vector(), b.to_vector());
}

inline Tensor rnd(const Shape& s, Rng& rng, DType dt = DType::F64, double scale = 1.0) {
  return randn(s, rng, dt, Device::CPU, scale);
}

// Poison uninitialised outputs for the duration of a test.
struct PoisonGuard {
  bool prev = poison_uninitialized();
  PoisonGuard() { set_poison_uninitialized(true); }
  ~PoisonGuard() { set_poison_uninitialized(prev); }
};

inline void expect_gradcheck(const GradcheckFn& fn, const std::vector<Tensor>& inputs,
                             const std::vector<bool>& diff, const std::vector<std::string>& names,
                             GradcheckOptions opt = {}) {
  auto r = gradcheck(fn, inputs, diff, names, opt);
  EXPECT_TRUE(r.ok) << r.report();
}

// Float64 gradient check of op.forward at the inputs `ex` (what `echo-lm
// gradcheck --op` does): every present input differentiated, every output checked.
inline void gradcheck_runner_forward(const RunnerOp& op, const NamedTensors& ex, const OpAttrs& attrs) {
  std::vector<std::string> names;
  std::vector<Tensor> inputs;
  for (const auto& list : {op.inputs, op.optional_inputs})
    for (const auto& n : list)
      if (ex.count(n)) {
        names.push_back(n);
        inputs.push_back(ex.at(n));
      }
  expect_gradcheck(
      [&](const std::vector<Tensor>& in) {
        NamedTensors named;
        for (size_t i = 0; i < in.size(); ++i) named[names[i]] = in[i];
        auto out = op.forward(named, attrs);
        std::vector<Tensor> result;
        for (const auto& o : op.outputs) result.push_back(out.at(o));
        return result;
      },
      inputs, std::vector<bool>(inputs.size(), true), names);
}

// The runner's example inputs pass that gradient check.
inline void gradcheck_runner_example(const RunnerOp& op) {
  Rng rng(7);
  OpAttrs attrs;
  const NamedTensors ex = op.example(rng, attrs);
  gradcheck_runner_forward(op, ex, attrs);
}

// f() must throw a std::runtime_error whose message contains needle.
inline void expect_throw_containing(const std::function<void()>& f, const std::string& needle) {
  try {
    f();
    ADD_FAILURE() << "no exception; expected one containing: " << needle;
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

}  // namespace echo::testing
