#include "ops/reference/koopman_fit.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <utility>

namespace echo::reference {

namespace {

using Mat = std::vector<double>;  // row-major

Mat matmul(const Mat& A, const Mat& B, int64_t m, int64_t k, int64_t n) {
  Mat C(m * n, 0.0);
  for (int64_t i = 0; i < m; ++i)
    for (int64_t l = 0; l < k; ++l)
      for (int64_t j = 0; j < n; ++j) C[i * n + j] += A[i * k + l] * B[l * n + j];
  return C;
}
Mat transposed(const Mat& A, int64_t m, int64_t n) {
  Mat B(n * m);
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) B[j * m + i] = A[i * n + j];
  return B;
}
Mat inverse_gauss_jordan(Mat A, int64_t r) {
  Mat inv(r * r, 0.0);
  for (int64_t i = 0; i < r; ++i) inv[i * r + i] = 1;
  for (int64_t c = 0; c < r; ++c) {
    int64_t p = c;
    for (int64_t i = c + 1; i < r; ++i)
      if (std::fabs(A[i * r + c]) > std::fabs(A[p * r + c])) p = i;
    for (int64_t j = 0; j < r; ++j) {
      std::swap(A[c * r + j], A[p * r + j]);
      std::swap(inv[c * r + j], inv[p * r + j]);
    }
    const double d = A[c * r + c];
    for (int64_t j = 0; j < r; ++j) {
      A[c * r + j] /= d;
      inv[c * r + j] /= d;
    }
    for (int64_t i = 0; i < r; ++i) {
      if (i == c) continue;
      const double f = A[i * r + c];
      for (int64_t j = 0; j < r; ++j) {
        A[i * r + j] -= f * A[c * r + j];
        inv[i * r + j] -= f * inv[c * r + j];
      }
    }
  }
  return inv;
}
// Textbook Cholesky; a pivot not above eps·max diag fails (the op's rule).
bool naive_cholesky(const Mat& A, int64_t r, Mat& L) {
  L.assign(r * r, 0.0);
  double max_diag = 0;
  for (int64_t i = 0; i < r; ++i) max_diag = std::max(max_diag, A[i * r + i]);
  for (int64_t j = 0; j < r; ++j) {
    double d = A[j * r + j];
    for (int64_t k = 0; k < j; ++k) d -= L[j * r + k] * L[j * r + k];
    if (!(d > std::numeric_limits<double>::epsilon() * max_diag)) return false;
    L[j * r + j] = std::sqrt(d);
    for (int64_t i = j + 1; i < r; ++i) {
      double s = A[i * r + j];
      for (int64_t k = 0; k < j; ++k) s -= L[i * r + k] * L[j * r + k];
      L[i * r + j] = s / L[j * r + j];
    }
  }
  return true;
}

}  // namespace

KoopmanResult koopman_fit_direct(const KoopmanShape& shape, const KoopmanInputs& in, const KoopmanSettings& settings) {
  const int64_t b = shape.batch, T = shape.T, H = shape.H, r = shape.r, P = shape.P, S = settings.chunk_size;
  const int K = settings.power_steps;
  const std::vector<double>& k = in.k;
  const std::vector<double>& q = in.q;
  const std::vector<double>& v = in.v;
  const std::vector<double>& beta = in.beta;  // empty: 1
  const std::vector<double>& mask = in.mask;  // empty: chunk mode
  const std::vector<double>& coef = in.coef;  // empty: the lag-K term alone
  const double gamma = in.gamma;
  const bool prefix = !mask.empty();
  const int64_t n_chunks = (T + S - 1) / S;
  KoopmanResult res;
  res.y.assign(b * T * H * P, 0.0);
  for (int64_t n = 0; n < b; ++n)
    for (int64_t h = 0; h < H; ++h) {
      const int64_t n_ops = prefix ? 1 : n_chunks;
      for (int64_t o = 0; o < n_ops; ++o) {
        auto in_set = [&](int64_t t) {
          if (t < 0) return false;
          return prefix ? mask[n * T + t] == 1.0 : t < o * S;
        };
        auto beta_of = [&](int64_t t) { return beta.empty() ? 1.0 : beta[(n * T + t) * H + h]; };
        auto key = [&](int64_t t, int64_t i) { return k[((n * T + t) * H + h) * r + i]; };
        Mat G(r * r, 0.0), M(r * r, 0.0), C(P * r, 0.0);
        for (int64_t i = 0; i < r; ++i) G[i * r + i] = settings.ridge;
        for (int64_t t = 0; t < T; ++t) {
          if (!in_set(t)) continue;
          const double w = beta_of(t);
          for (int64_t i = 0; i < r; ++i)
            for (int64_t j = 0; j < r; ++j) G[i * r + j] += w * key(t, i) * key(t, j);
          for (int64_t a = 0; a < P; ++a)
            for (int64_t j = 0; j < r; ++j) C[a * r + j] += w * v[((n * T + t) * H + h) * P + a] * key(t, j);
          if (in_set(t - 1))
            for (int64_t i = 0; i < r; ++i)
              for (int64_t j = 0; j < r; ++j) M[i * r + j] += w * key(t, i) * key(t - 1, j);
        }
        Mat Gs(r * r);
        for (int64_t i = 0; i < r; ++i)
          for (int64_t j = 0; j < r; ++j) Gs[i * r + j] = 0.5 * (G[i * r + j] + G[j * r + i]);
        Mat L;
        if (!naive_cholesky(Gs, r, L)) {
          double jitter = 1e-4;
          for (;; jitter *= 10) {
            Mat Gj = Gs;
            for (int64_t i = 0; i < r; ++i) Gj[i * r + i] += jitter;
            if (naive_cholesky(Gj, r, L)) {
              Gs = Gj;
              break;
            }
          }
        }
        const Mat Linv = inverse_gauss_jordan(L, r);
        const Mat W = matmul(matmul(Linv, M, r, r, r), transposed(Linv, r, r), r, r, r);
        // Power iteration (spec §1.4 step 3).
        std::vector<double> vv(r, 1.0 / std::sqrt(double(r))), uu(r);
        auto norm = [](const std::vector<double>& x) {
          double s = 0;
          for (double e : x) s += e * e;
          return std::sqrt(s);
        };
        for (int it = 0; it < settings.power_iters; ++it) {
          for (int64_t i = 0; i < r; ++i) {
            uu[i] = 0;
            for (int64_t j = 0; j < r; ++j) uu[i] += W[i * r + j] * vv[j];
          }
          double nu = std::max(norm(uu), 1e-8);
          for (auto& e : uu) e /= nu;
          for (int64_t i = 0; i < r; ++i) {
            vv[i] = 0;
            for (int64_t j = 0; j < r; ++j) vv[i] += W[j * r + i] * uu[j];
          }
          double nv = std::max(norm(vv), 1e-8);
          for (auto& e : vv) e /= nv;
        }
        for (int64_t i = 0; i < r; ++i) {
          uu[i] = 0;
          for (int64_t j = 0; j < r; ++j) uu[i] += W[i * r + j] * vv[j];
        }
        const double sigma = norm(uu), alpha = 1.0 / std::max(1.0, sigma);
        res.sigma.push_back(prefix || o > 0 ? sigma : 0.0);
        const double s = gamma * alpha;

        const Mat Ginv = inverse_gauss_jordan(Gs, r);
        const Mat N = matmul(Ginv, M, r, r, r);
        const int64_t t_begin = prefix ? 0 : o * S, t_end = prefix ? T : std::min(T, (o + 1) * S);
        for (int64_t t = t_begin; t < t_end; ++t) {
          std::vector<double> x(r, 0.0);  // G⁻¹ q, then (G⁻¹M)^j G⁻¹ q
          for (int64_t i = 0; i < r; ++i)
            for (int64_t j = 0; j < r; ++j) x[i] += Ginv[i * r + j] * q[((n * T + t) * H + h) * r + j];
          double s_j = 1;
          for (int j = 0; j <= K; ++j) {
            if (j > 0) {
              std::vector<double> nx(r, 0.0);
              for (int64_t i = 0; i < r; ++i)
                for (int64_t l = 0; l < r; ++l) nx[i] += N[i * r + l] * x[l];
              x = nx;
              s_j *= s;
            }
            const double c = coef.empty() ? (j == K ? 1.0 : 0.0) : coef[h * (K + 1) + j];
            for (int64_t a = 0; a < P; ++a) {
              double acc = 0;
              for (int64_t i = 0; i < r; ++i) acc += C[a * r + i] * x[i];
              res.y[((n * T + t) * H + h) * P + a] += c * s_j * acc;
            }
          }
        }
      }
    }
  return res;
}

}  // namespace echo::reference
