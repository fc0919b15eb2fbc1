// Finite-difference gradient check in float64.
//
// One backward checks every input: the outputs are projected onto fixed random
// directions R_o, L = Σ_o <R_o, f(x)_o>, so ∂L/∂x is what backward gives when
// seeded with R_o. Numerically ∂L/∂x_j ≈ (L(x+h e_j) − L(x−h e_j)) / 2h.
//
// It also checks the accumulation contract: backward is run once into empty
// gradients and once into gradient buffers pre-filled with random values G0;
// the second must equal G0 + the first (an op that overwrites fails), and it
// turns on NaN-poisoning of uninitialised tensors while it runs.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "autograd/tensor.h"

namespace echo {

struct GradcheckOptions {
  double eps = 1e-6;
  double tolerance = 1e-6;         // on the scaled error below
  int64_t max_elements = 2000;     // per input; a random subset beyond this
  uint64_t seed = 1234;
};

struct GradcheckInputReport {
  std::string name;
  double max_error = 0;        // max_j |analytic_j − numeric_j| / max(max|numeric|, max|analytic|, 1e-8)
  double max_abs_error = 0;
  double gradient_scale = 0;   // max(max|numeric|, max|analytic|): a check whose gradients are ~0 tests nothing
  int64_t checked = 0;
  bool accumulates = true;     // backward added into a pre-filled buffer
};

struct GradcheckResult {
  std::vector<GradcheckInputReport> inputs;
  bool ok = true;
  std::string report() const;
};

using GradcheckFn = std::function<std::vector<Tensor>(const std::vector<Tensor>&)>;

// inputs: float64 CPU tensors (undefined allowed for absent optionals);
// differentiable[i] says which get checked. names label the report.
GradcheckResult gradcheck(const GradcheckFn& fn, const std::vector<Tensor>& inputs,
                          const std::vector<bool>& differentiable,
                          const std::vector<std::string>& names,
                          const GradcheckOptions& options = {});

}  // namespace echo
