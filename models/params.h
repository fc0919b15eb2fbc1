// The parameter registry: the model's leaves in a fixed order under their spec
// names (§2.6), so that the optimizer, checkpoints and reports all agree.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "autograd/tensor.h"

namespace echo {

struct NamedParam {
  std::string name;  // dotted spec name, e.g. "layers.3.mixer.A_log"
  Tensor tensor;     // a leaf that requires grad (shares storage with the model)
};

class ParamRegistry {
 public:
  // Throws on a duplicate name.
  void add(const std::string& name, const Tensor& tensor);
  const std::vector<NamedParam>& all() const { return params_; }
  size_t size() const { return params_.size(); }
  // Lookup by spec name; get() throws "unknown parameter <name>".
  const Tensor* find(const std::string& name) const;
  const Tensor& get(const std::string& name) const;
  std::vector<std::string> names() const;
  int64_t total_numel() const;
  // Parameters grouped by their first component, layers split by index:
  // ("embedding", n), ("layers.0", n), ..., ("norm_f", n).
  std::vector<std::pair<std::string, int64_t>> group_counts() const;

 private:
  std::vector<NamedParam> params_;
};

// Spec §2.2: no weight decay on gamma_raw, eta, filter_coef, norms, A_log, D,
// dt_bias, biases, rot_gamma, rot_omega and the (tied) embedding.
bool no_weight_decay(const std::string& name);

// The HDF5 path of a parameter (spec §2.6): "/model/" + name with '.' -> '/'.
std::string hdf5_param_path(const std::string& name);

}  // namespace echo
