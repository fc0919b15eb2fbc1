#include "autograd/random.h"

namespace echo {

Tensor randn(const Shape& shape, Rng& rng, DType dtype, Device device, double stddev) {
  std::vector<double> v(static_cast<size_t>(shape_numel(shape)));
  for (auto& x : v) x = stddev * rng.normal();
  return Tensor::from_vector(v, shape, dtype, device);
}

Tensor rand_uniform(const Shape& shape, Rng& rng, double lo, double hi, DType dtype, Device device) {
  std::vector<double> v(static_cast<size_t>(shape_numel(shape)));
  for (auto& x : v) x = rng.uniform(lo, hi);
  return Tensor::from_vector(v, shape, dtype, device);
}

}  // namespace echo
