// Parameter initialisers (spec §2.1, §2.2, §2.4, §2.5). Each returns a float32
// CPU leaf that requires grad; values are drawn in double from one seeded Rng in
// parameter order, so a seed fixes the whole model.
#pragma once

#include <cstdint>
#include <vector>

#include "autograd/random.h"
#include "autograd/tensor.h"

namespace echo::init {

Tensor leaf(const std::vector<double>& values, const Shape& shape);
Tensor constant(const Shape& shape, double value);
Tensor uniform(const Shape& shape, double bound, Rng& rng);  // U(−bound, bound)
Tensor normal(const Shape& shape, double stddev, Rng& rng);  // N(0, stddev²)
// PyTorch's nn.Linear default for weight [out, in]: U(±1/√in).
Tensor linear_default(int64_t out, int64_t in, Rng& rng, double gain = 1.0);
// Xavier/Glorot uniform for weight [out, in]: U(±√(6/(in+out))).
Tensor xavier_uniform(int64_t out, int64_t in, Rng& rng);
// Orthogonal [rows, cols]: Gram–Schmidt on a Gaussian matrix; rows orthonormal
// when rows <= cols, columns orthonormal otherwise (the QR convention with a
// positive diagonal of R, as torch.nn.init.orthogonal_).
std::vector<double> orthogonal_values(int64_t rows, int64_t cols, Rng& rng);
Tensor orthogonal(int64_t rows, int64_t cols, Rng& rng);

}  // namespace echo::init
