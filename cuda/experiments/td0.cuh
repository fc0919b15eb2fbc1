// Launcher of the TD(0) chain kernel of `echo-lm experiment td0`
// (train/experiments/td0.cpp). Plain pointers only; all of them are HOST
// pointers: the launcher copies the inputs to the device, runs one chain per
// thread for all `steps` in a single launch, and copies the results back.
#pragma once
#include <cstdint>

namespace echo::gpu {

constexpr int kTd0MaxParams = 64;  // θ lives in registers/local memory of one thread

// model: 0 linear (3 whitened features), 1 tanh network of `hidden` units.
// sampling: 0 Markov (x_{t+1} = x'_t), 1 geometric control, 2 i.i.d. control.
// rng_states: runs×4 xoshiro256** words (the host Rng's state, so a GPU run
// draws exactly the CPU run's numbers). grid: measurement times (increasing).
// The tanh model's input is ũ = (u(x) − input_mean) / input_scale.
// error_out: runs×grid_len ‖θ_t − θ*‖; theta_out: runs×num_params final θ.
void td0_simulate(int model, int sampling, int64_t runs, int64_t steps, const uint64_t* rng_states,
                  const int64_t* x0, const double* theta0, const double* theta_star, int num_params,
                  const double* p_up, const double* cdf, int64_t N, const double* whiten, int hidden,
                  double input_mean, double input_scale, double discount, double feature_scale, double hold,
                  double alpha0, double t0, double eta,
                  const int64_t* grid, int grid_len, double* error_out, double* theta_out);

}  // namespace echo::gpu
