#include "ops/reference/causal_attention.h"

#include <algorithm>
#include <cmath>

namespace echo::reference {

std::vector<double> rope(const std::vector<double>& x, const AttentionShape& s, double base, int64_t offset,
                         double sign) {
  std::vector<double> y(x.size());
  const int64_t half = s.dh / 2;
  for (int64_t b = 0; b < s.B; ++b)
    for (int64_t t = 0; t < s.T; ++t)
      for (int64_t h = 0; h < s.H; ++h) {
        const double* xr = &x[((b * s.T + t) * s.H + h) * s.dh];
        double* yr = &y[((b * s.T + t) * s.H + h) * s.dh];
        for (int64_t d = 0; d < s.dh; ++d) {
          const int64_t j = d % half;
          const double theta = sign * double(t + offset) / std::pow(base, 2.0 * double(j) / double(s.dh));
          const double rotated = d < half ? -xr[d + half] : xr[d - half];
          yr[d] = xr[d] * std::cos(theta) + rotated * std::sin(theta);
        }
      }
  return y;
}

std::vector<double> causal_attention(const std::vector<double>& q, const std::vector<double>& k,
                                     const std::vector<double>& v, const AttentionShape& s, double base) {
  const auto qr = rope(q, s, base, 0), kr = rope(k, s, base, 0);
  std::vector<double> y(q.size());
  auto idx = [&](int64_t b, int64_t t, int64_t h) { return ((b * s.T + t) * s.H + h) * s.dh; };
  for (int64_t b = 0; b < s.B; ++b)
    for (int64_t h = 0; h < s.H; ++h) {
      std::vector<std::vector<double>> S(s.T, std::vector<double>(s.T));
      for (int64_t i = 0; i < s.T; ++i)
        for (int64_t j = 0; j < s.T; ++j) {
          double dot = 0;
          for (int64_t d = 0; d < s.dh; ++d) dot += qr[idx(b, i, h) + d] * kr[idx(b, j, h) + d];
          S[i][j] = j <= i ? dot / std::sqrt(double(s.dh)) : -INFINITY;
        }
      for (int64_t i = 0; i < s.T; ++i) {
        double mx = -INFINITY, z = 0;
        for (int64_t j = 0; j < s.T; ++j) mx = std::max(mx, S[i][j]);
        for (int64_t j = 0; j < s.T; ++j) z += std::exp(S[i][j] - mx);
        for (int64_t d = 0; d < s.dh; ++d) {
          double acc = 0;
          for (int64_t j = 0; j < s.T; ++j) acc += std::exp(S[i][j] - mx) / z * v[idx(b, j, h) + d];
          y[idx(b, i, h) + d] = acc;
        }
      }
    }
  return y;
}

AttentionGrads causal_attention_backward(const std::vector<double>& q, const std::vector<double>& k,
                                         const std::vector<double>& v, const std::vector<double>& dy,
                                         const AttentionShape& s, double base) {
  const auto qr = rope(q, s, base, 0), kr = rope(k, s, base, 0);
  std::vector<double> dqr(q.size(), 0.0), dkr(q.size(), 0.0), dv(q.size(), 0.0);
  auto idx = [&](int64_t b, int64_t t, int64_t h) { return ((b * s.T + t) * s.H + h) * s.dh; };
  const double scale = 1.0 / std::sqrt(double(s.dh));
  for (int64_t b = 0; b < s.B; ++b)
    for (int64_t h = 0; h < s.H; ++h)
      for (int64_t i = 0; i < s.T; ++i) {
        std::vector<double> P(i + 1), dP(i + 1);
        double mx = -INFINITY, z = 0, D = 0;
        for (int64_t j = 0; j <= i; ++j) {
          double score = 0, g = 0;
          for (int64_t d = 0; d < s.dh; ++d) {
            score += qr[idx(b, i, h) + d] * kr[idx(b, j, h) + d];
            g += dy[idx(b, i, h) + d] * v[idx(b, j, h) + d];
          }
          P[j] = score * scale;
          dP[j] = g;
          mx = std::max(mx, P[j]);
        }
        for (int64_t j = 0; j <= i; ++j) z += std::exp(P[j] - mx);
        for (int64_t j = 0; j <= i; ++j) {
          P[j] = std::exp(P[j] - mx) / z;
          D += P[j] * dP[j];
        }
        for (int64_t j = 0; j <= i; ++j) {
          const double dS = P[j] * (dP[j] - D);
          for (int64_t d = 0; d < s.dh; ++d) {
            dv[idx(b, j, h) + d] += P[j] * dy[idx(b, i, h) + d];
            dqr[idx(b, i, h) + d] += dS * kr[idx(b, j, h) + d] * scale;
            dkr[idx(b, j, h) + d] += dS * qr[idx(b, i, h) + d] * scale;
          }
        }
      }
  return {rope(dqr, s, base, 0, -1.0), rope(dkr, s, base, 0, -1.0), dv};
}

}  // namespace echo::reference
