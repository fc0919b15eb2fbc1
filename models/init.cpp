#include "models/init.h"

#include <cmath>
#include <stdexcept>

namespace echo::init {

Tensor leaf(const std::vector<double>& values, const Shape& shape) {
  Tensor t = Tensor::from_vector(values, shape, DType::F32, Device::CPU);
  t.set_requires_grad(true);
  return t;
}

Tensor constant(const Shape& shape, double value) {
  return leaf(std::vector<double>(static_cast<size_t>(shape_numel(shape)), value), shape);
}

Tensor uniform(const Shape& shape, double bound, Rng& rng) {
  std::vector<double> v(static_cast<size_t>(shape_numel(shape)));
  for (auto& x : v) x = rng.uniform(-bound, bound);
  return leaf(v, shape);
}

Tensor normal(const Shape& shape, double stddev, Rng& rng) {
  std::vector<double> v(static_cast<size_t>(shape_numel(shape)));
  for (auto& x : v) x = stddev * rng.normal();
  return leaf(v, shape);
}

Tensor linear_default(int64_t out, int64_t in, Rng& rng, double gain) {
  Tensor t = uniform({out, in}, 1.0 / std::sqrt(static_cast<double>(in)), rng);
  if (gain != 1.0) {
    float* p = t.data<float>();
    for (int64_t i = 0; i < t.numel(); ++i) p[i] = static_cast<float>(p[i] * gain);
  }
  return t;
}

Tensor xavier_uniform(int64_t out, int64_t in, Rng& rng) {
  return uniform({out, in}, std::sqrt(6.0 / static_cast<double>(in + out)), rng);
}

// Modified Gram–Schmidt on the n vectors of length m stored as rows of v (n <= m),
// each pass run twice ("twice is enough") so the result is orthonormal to rounding.
static void orthonormalise_rows(std::vector<double>& v, int64_t n, int64_t m) {
  for (int64_t i = 0; i < n; ++i) {
    double* vi = &v[i * m];
    for (int pass = 0; pass < 2; ++pass)
      for (int64_t j = 0; j < i; ++j) {
        const double* vj = &v[j * m];
        double dot = 0;
        for (int64_t k = 0; k < m; ++k) dot += vi[k] * vj[k];
        for (int64_t k = 0; k < m; ++k) vi[k] -= dot * vj[k];
      }
    double norm = 0;
    for (int64_t k = 0; k < m; ++k) norm += vi[k] * vi[k];
    norm = std::sqrt(norm);
    if (!(norm > 1e-12)) throw std::runtime_error("init::orthogonal: degenerate Gaussian draw");
    for (int64_t k = 0; k < m; ++k) vi[k] /= norm;
  }
}

std::vector<double> orthogonal_values(int64_t rows, int64_t cols, Rng& rng) {
  const int64_t n = std::min(rows, cols), m = std::max(rows, cols);
  // n Gaussian vectors of length m; orthonormalising them in order is the QR
  // factorisation of the m×n matrix they form, with diag(R) > 0.
  std::vector<double> g(static_cast<size_t>(n * m));
  for (auto& x : g) x = rng.normal();
  orthonormalise_rows(g, n, m);
  if (rows <= cols) return g;  // rows orthonormal
  std::vector<double> out(static_cast<size_t>(rows * cols));
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < cols; ++j) out[i * cols + j] = g[j * m + i];  // columns orthonormal
  return out;
}

Tensor orthogonal(int64_t rows, int64_t cols, Rng& rng) {
  return leaf(orthogonal_values(rows, cols, rng), {rows, cols});
}

}  // namespace echo::init
