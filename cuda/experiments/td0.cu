// CUDA twin of td0::run_chain (train/experiments/td0.cpp): one thread runs one
// chain for all steps in a single launch, with the same xoshiro256** stream as
// the CPU run of the same index, the same transition, the same semi-gradient
// TD(0) update and the same measurement grid. Read the two side by side.
//
// Float64 throughout, unlike the engine's f32 ops: this kernel is a reference
// simulation whose CPU and GPU runs should agree to rounding (the chain's
// decisions compare a uniform with p(x), so a last-bit difference in p(x)
// changes a run only with probability ~1e-16 per step), and the chain is
// latency-bound, not FLOP-bound.
#include <vector>

#include "cuda/common.cuh"
#include "cuda/experiments/td0.cuh"

namespace echo::gpu {
namespace {

// echo::Rng (autograd/random.h): xoshiro256**, uniform = top 53 bits · 2⁻⁵³.
struct DeviceRng {
  uint64_t s[4];
  __device__ static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
  __device__ uint64_t next_u64() {
    const uint64_t result = rotl(s[1] * 5, 7) * 9;
    const uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
  }
  __device__ double uniform() { return (next_u64() >> 11) * 0x1.0p-53; }
};

__device__ double reward(int64_t x) { return cos(0.5 * double(x)); }
__device__ double feature_u(int64_t x, double scale) { return double(x) / (double(x) + scale); }

__device__ void linear_features(int64_t x, const double* whiten, double scale, double* phi) {
  const double u = feature_u(x, scale);
  const double psi[3] = {1.0, u, u * u};
  for (int i = 0; i < 3; ++i) {
    double s = 0;
    for (int j = 0; j < 3; ++j) s += whiten[i * 3 + j] * psi[j];
    phi[i] = s;
  }
}

__device__ double tanh_value(const double* theta, int hidden, double ut, double* grad) {
  const double* v = theta + 1;
  const double* a = theta + 1 + hidden;
  const double* b = theta + 1 + 2 * hidden;
  double out = theta[0];
  if (grad) grad[0] = 1.0;
  for (int j = 0; j < hidden; ++j) {
    const double h = tanh(a[j] * ut + b[j]);
    out += v[j] * h;
    if (grad) {
      const double dh = v[j] * (1.0 - h * h);
      grad[1 + j] = h;
      grad[1 + hidden + j] = dh * ut;
      grad[1 + 2 * hidden + j] = dh;
    }
  }
  return out;
}

__device__ int64_t sample_stationary(const double* cdf, int64_t N, double u) {
  int64_t lo = 0, hi = N;
  while (lo < hi) {
    int64_t mid = (lo + hi) / 2;
    if (cdf[mid] > u) hi = mid;
    else lo = mid + 1;
  }
  return lo;
}

__global__ void td0_chain_kernel(int model, int sampling, int64_t runs, int64_t steps, const uint64_t* rng_states,
                                 const int64_t* x0, const double* theta0, const double* theta_star, int P,
                                 const double* p_up, const double* cdf, int64_t N, const double* whiten, int hidden,
                                 double input_mean, double input_scale, double discount, double scale, double hold, double alpha0, double t0, double eta,
                                 const int64_t* grid, int G, double* error_out, double* theta_out) {
  const int64_t run = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
  if (run >= runs) return;
  DeviceRng rng;
  for (int k = 0; k < 4; ++k) rng.s[k] = rng_states[run * 4 + k];
  double theta[kTd0MaxParams], grad[kTd0MaxParams], phi_next[kTd0MaxParams];
  for (int i = 0; i < P; ++i) theta[i] = theta0[i];
  int64_t x = x0[run];
  int g = 0;
  double* error_row = error_out + run * G;
  auto record = [&](int64_t t) {
    while (g < G && grid[g] == t) {
      double s = 0;
      for (int i = 0; i < P; ++i) s += (theta[i] - theta_star[i]) * (theta[i] - theta_star[i]);
      error_row[g++] = isnan(s) ? INFINITY : sqrt(s);
    }
  };
  record(0);
  for (int64_t t = 1; t <= steps; ++t) {
    const double alpha = alpha0 / pow(double(t) + t0, eta);
    const int64_t x_next = rng.uniform() < p_up[x] ? x + 1 : 0;
    double v_x, v_next;
    if (model == 0) {
      linear_features(x, whiten, scale, grad);
      linear_features(x_next, whiten, scale, phi_next);
      v_x = v_next = 0;
      for (int i = 0; i < P; ++i) v_x += theta[i] * grad[i], v_next += theta[i] * phi_next[i];
    } else {
      v_x = tanh_value(theta, hidden, (feature_u(x, scale) - input_mean) / input_scale, grad);
      v_next = tanh_value(theta, hidden, (feature_u(x_next, scale) - input_mean) / input_scale, nullptr);
    }
    const double delta = reward(x) + discount * v_next - v_x;
    for (int i = 0; i < P; ++i) theta[i] += alpha * delta * grad[i];
    if (sampling == 0) {
      x = x_next;
    } else if (sampling == 1) {
      if (!(rng.uniform() < hold)) x = sample_stationary(cdf, N, rng.uniform());
    } else {
      x = sample_stationary(cdf, N, rng.uniform());
    }
    record(t);
  }
  for (int i = 0; i < P; ++i) theta_out[run * P + i] = theta[i];
}

template <typename T> T* to_device(const T* host, size_t n, const char* what) {
  T* dev = nullptr;
  check_cuda(cudaMalloc(&dev, (n ? n : 1) * sizeof(T)), what);
  if (n) check_cuda(cudaMemcpy(dev, host, n * sizeof(T), cudaMemcpyHostToDevice), what);
  return dev;
}

}  // namespace

void td0_simulate(int model, int sampling, int64_t runs, int64_t steps, const uint64_t* rng_states,
                  const int64_t* x0, const double* theta0, const double* theta_star, int num_params,
                  const double* p_up, const double* cdf, int64_t N, const double* whiten, int hidden,
                  double input_mean, double input_scale, double discount, double feature_scale, double hold,
                  double alpha0, double t0, double eta,
                  const int64_t* grid, int grid_len, double* error_out, double* theta_out) {
  if (num_params < 1 || num_params > kTd0MaxParams)
    throw std::runtime_error("td0_simulate: num_params must be in [1, 64], got " + std::to_string(num_params));
  if (model == 0 && (num_params != 3 || whiten == nullptr))
    throw std::runtime_error("td0_simulate: the linear model needs 3 parameters and a whitening matrix");
  if (runs <= 0) return;
  std::vector<double> no_whiten(9, 0.0);
  uint64_t* d_states = to_device(rng_states, size_t(runs) * 4, "td0_simulate: rng states");
  int64_t* d_x0 = to_device(x0, size_t(runs), "td0_simulate: starts");
  double* d_theta0 = to_device(theta0, size_t(num_params), "td0_simulate: theta0");
  double* d_star = to_device(theta_star, size_t(num_params), "td0_simulate: theta_star");
  double* d_p = to_device(p_up, size_t(N + 1), "td0_simulate: p_up");
  double* d_cdf = to_device(cdf, size_t(N + 1), "td0_simulate: cdf");
  double* d_whiten = to_device(whiten ? whiten : no_whiten.data(), 9, "td0_simulate: whiten");
  int64_t* d_grid = to_device(grid, size_t(grid_len), "td0_simulate: grid");
  double* d_err = nullptr;
  double* d_theta = nullptr;
  check_cuda(cudaMalloc(&d_err, size_t(runs) * grid_len * sizeof(double) + sizeof(double)), "td0_simulate: alloc");
  check_cuda(cudaMalloc(&d_theta, size_t(runs) * num_params * sizeof(double)), "td0_simulate: alloc");
  const int threads = 128;
  const int64_t blocks = (runs + threads - 1) / threads;
  ECHO_LAUNCH(td0_chain_kernel, (unsigned)blocks, threads)(model, sampling, runs, steps, d_states, d_x0, d_theta0, d_star,
                                                  num_params, d_p, d_cdf, N, d_whiten, hidden, input_mean,
                                                  input_scale, discount,
                                                  feature_scale, hold, alpha0, t0, eta, d_grid, grid_len, d_err,
                                                  d_theta);
  check_launch("td0_simulate");
  check_cuda(cudaDeviceSynchronize(), "td0_simulate: kernel");
  check_cuda(cudaMemcpy(error_out, d_err, size_t(runs) * grid_len * sizeof(double), cudaMemcpyDeviceToHost),
             "td0_simulate: copy back");
  check_cuda(cudaMemcpy(theta_out, d_theta, size_t(runs) * num_params * sizeof(double), cudaMemcpyDeviceToHost),
             "td0_simulate: copy back");
  for (void* p : {(void*)d_states, (void*)d_x0, (void*)d_theta0, (void*)d_star, (void*)d_p, (void*)d_cdf,
                  (void*)d_whiten, (void*)d_grid, (void*)d_err, (void*)d_theta})
    cudaFree(p);
}

}  // namespace echo::gpu
