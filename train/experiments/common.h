// Small helpers shared by the theory experiments (train/experiments/*.cpp).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

extern "C" void dsyev_(const char* jobz, const char* uplo, const int* n, double* a, const int* lda, double* w,
                       double* work, const int* lwork, int* info);  // LAPACK, shipped inside OpenBLAS

namespace echo::experiment {

// A seed derived from a base seed and up to three tags (SplitMix64 finaliser
// chained over the words), so every run, chain and data set draws from its own
// reproducible stream.
inline uint64_t mix_seed(uint64_t seed, uint64_t a, uint64_t b = 0, uint64_t c = 0) {
  auto mix = [](uint64_t z) {
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  };
  uint64_t h = mix(seed);
  h = mix(h ^ a);
  h = mix(h ^ b);
  h = mix(h ^ c);
  return h;
}

struct LineFit {
  double slope = NAN, intercept = NAN, r2 = NAN;
  int n = 0;
};
// Ordinary least squares y ≈ intercept + slope·x (NaN when fewer than two
// distinct x). r2 is the coefficient of determination.
inline LineFit fit_line(const std::vector<double>& x, const std::vector<double>& y) {
  LineFit f;
  f.n = int(std::min(x.size(), y.size()));
  if (f.n < 2) return f;
  double mx = 0, my = 0;
  for (int i = 0; i < f.n; ++i) mx += x[i], my += y[i];
  mx /= f.n;
  my /= f.n;
  double sxx = 0, sxy = 0, syy = 0;
  for (int i = 0; i < f.n; ++i) {
    sxx += (x[i] - mx) * (x[i] - mx);
    sxy += (x[i] - mx) * (y[i] - my);
    syy += (y[i] - my) * (y[i] - my);
  }
  if (sxx <= 0) return f;
  f.slope = sxy / sxx;
  f.intercept = my - f.slope * mx;
  f.r2 = syy > 0 ? sxy * sxy / (sxx * syy) : 1.0;
  return f;
}

// Eigenvalues (ascending) of a symmetric n×n matrix (row-major; only its upper
// triangle is read).
inline std::vector<double> symmetric_eigenvalues(std::vector<double> a, int n) {
  std::vector<double> w(n);
  if (n == 0) return w;
  int lwork = -1, info = 0;
  double query = 0;
  // Row-major upper = column-major lower.
  dsyev_("N", "L", &n, a.data(), &n, w.data(), &query, &lwork, &info);
  lwork = std::max(1, int(query));
  std::vector<double> work(lwork);
  dsyev_("N", "L", &n, a.data(), &n, w.data(), work.data(), &lwork, &info);
  if (info != 0) throw std::runtime_error("symmetric_eigenvalues: dsyev failed, info=" + std::to_string(info));
  return w;
}

// Solves the n×n system M z = r by Gaussian elimination with partial pivoting
// (row-major M). Throws when M is numerically singular.
inline std::vector<double> solve_linear(std::vector<double> m, std::vector<double> r, int n) {
  for (int col = 0; col < n; ++col) {
    int piv = col;
    for (int i = col + 1; i < n; ++i)
      if (std::fabs(m[size_t(i) * n + col]) > std::fabs(m[size_t(piv) * n + col])) piv = i;
    if (std::fabs(m[size_t(piv) * n + col]) < 1e-300) throw std::runtime_error("solve_linear: singular matrix");
    if (piv != col) {
      for (int j = 0; j < n; ++j) std::swap(m[size_t(col) * n + j], m[size_t(piv) * n + j]);
      std::swap(r[col], r[piv]);
    }
    for (int i = col + 1; i < n; ++i) {
      double f = m[size_t(i) * n + col] / m[size_t(col) * n + col];
      if (f == 0) continue;
      for (int j = col; j < n; ++j) m[size_t(i) * n + j] -= f * m[size_t(col) * n + j];
      r[i] -= f * r[col];
    }
  }
  std::vector<double> z(n);
  for (int i = n - 1; i >= 0; --i) {
    double s = r[i];
    for (int j = i + 1; j < n; ++j) s -= m[size_t(i) * n + j] * z[j];
    z[i] = s / m[size_t(i) * n + i];
  }
  return z;
}

// q-quantile (0 ≤ q ≤ 1) with linear interpolation between order statistics;
// NaN entries are treated as +∞ (a diverged run is worse than any finite one).
inline double quantile(std::vector<double> v, double q) {
  if (v.empty()) return NAN;
  for (auto& x : v)
    if (std::isnan(x)) x = INFINITY;
  std::sort(v.begin(), v.end());
  double pos = q * double(v.size() - 1);
  size_t lo = size_t(std::floor(pos)), hi = std::min(v.size() - 1, lo + 1);
  double frac = pos - double(lo);
  if (frac == 0 || v[lo] == v[hi]) return v[lo];
  return v[lo] + frac * (v[hi] - v[lo]);
}

}  // namespace echo::experiment
