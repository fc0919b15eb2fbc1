#include "models/params.h"

#include <set>
#include <sstream>
#include <stdexcept>

namespace echo {

void ParamRegistry::add(const std::string& name, const Tensor& tensor) {
  if (!tensor.defined()) throw std::runtime_error("params: " + name + " is undefined");
  if (find(name)) throw std::runtime_error("params: duplicate parameter name " + name);
  params_.push_back({name, tensor});
}

const Tensor* ParamRegistry::find(const std::string& name) const {
  for (const auto& p : params_)
    if (p.name == name) return &p.tensor;
  return nullptr;
}

const Tensor& ParamRegistry::get(const std::string& name) const {
  const Tensor* t = find(name);
  if (!t) throw std::runtime_error("params: unknown parameter " + name);
  return *t;
}

std::vector<std::string> ParamRegistry::names() const {
  std::vector<std::string> out;
  for (const auto& p : params_) out.push_back(p.name);
  return out;
}

int64_t ParamRegistry::total_numel() const {
  int64_t n = 0;
  for (const auto& p : params_) n += p.tensor.numel();
  return n;
}

std::vector<std::pair<std::string, int64_t>> ParamRegistry::group_counts() const {
  std::vector<std::pair<std::string, int64_t>> groups;
  for (const auto& p : params_) {
    std::string group = p.name.substr(0, p.name.find('.'));
    if (group == "layers") {
      size_t second = p.name.find('.', 7);
      group = p.name.substr(0, second);
    }
    if (groups.empty() || groups.back().first != group) groups.push_back({group, 0});
    groups.back().second += p.tensor.numel();
  }
  return groups;
}

bool no_weight_decay(const std::string& name) {
  static const std::set<std::string> kNoDecayLeaves = {"gamma_raw", "eta",    "filter_coef", "A_log",
                                                      "D",         "dt_bias", "rot_gamma",  "rot_omega",
                                                      "bias"};
  std::vector<std::string> parts;
  std::stringstream ss(name);
  for (std::string part; std::getline(ss, part, '.');) parts.push_back(part);
  if (parts.empty()) return false;
  if (kNoDecayLeaves.count(parts.back())) return true;
  if (name == "embedding.weight") return true;
  // Any norm: norm1, norm2, norm_f and the Mamba mixer's gated "norm".
  for (const auto& p : parts)
    if (p.rfind("norm", 0) == 0) return true;
  return false;
}

std::string hdf5_param_path(const std::string& name) {
  std::string path = "/model/" + name;
  for (char& c : path)
    if (c == '.') c = '/';
  return path;
}

}  // namespace echo
