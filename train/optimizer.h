// AdamW (decoupled weight decay, as PyTorch's torch.optim.AdamW), the
// warmup + cosine schedule, and global-norm gradient clipping.
#pragma once

#include <string>
#include <vector>

#include "autograd/tensor.h"

namespace echo {

struct AdamWConfig {
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1e-8;
  double weight_decay = 0.1;
};

struct ParamRef {
  std::string name;
  Tensor param;     // leaf, requires grad
  bool decay = true;  // weight decay applies
};

// Per element, with t the step count after increment:
//   p ← p · (1 − lr·wd·[decay])
//   m ← β₁ m + (1 − β₁) g,   v ← β₂ v + (1 − β₂) g²
//   p ← p − lr · (m / (1 − β₁ᵗ)) / (sqrt(v / (1 − β₂ᵗ)) + ε)
class AdamW {
 public:
  AdamW(std::vector<ParamRef> params, AdamWConfig config);
  // Updates every parameter that has a gradient (others are left as they are,
  // their moments untouched). Bumps the parameters' version counters.
  // grad_scale ≠ 1 (clipping) uses grad_scale·g, rounded exactly as
  // scale_grads(params, grad_scale) would; on the CPU inside the update, in the
  // same pass, leaving the gradient buffers unscaled.
  void step(double lr, double grad_scale = 1.0);
  void zero_grad();
  int64_t steps() const { return steps_; }
  void set_steps(int64_t s) { steps_ = s; }
  const std::vector<ParamRef>& params() const { return params_; }
  std::vector<Tensor>& exp_avg() { return m_; }
  std::vector<Tensor>& exp_avg_sq() { return v_; }
  const AdamWConfig& config() const { return cfg_; }

 private:
  std::vector<ParamRef> params_;
  AdamWConfig cfg_;
  std::vector<Tensor> m_, v_;
  int64_t steps_ = 0;
};

// What gradient clipping and the NaN/Inf guard need, in one pass over every
// gradient: Σ g² accumulated in double in a fixed order (deterministic), and
// whether every element is finite. Parameters without a gradient count as zero.
// On CUDA: one reduction over all gradients and one copy back (cuda/adamw.cu).
struct GradStats {
  double sum_squares = 0;
  bool finite = true;
  double norm() const;  // sqrt(sum_squares)
};
GradStats grad_stats(const std::vector<ParamRef>& params);
double global_grad_norm(const std::vector<ParamRef>& params);  // grad_stats(params).norm()
bool grads_finite(const std::vector<ParamRef>& params);        // grad_stats(params).finite
void scale_grads(const std::vector<ParamRef>& params, double factor);

// Linear warmup from 0 over `warmup` steps, then cosine from lr_max down to
// lr_min at step `total`. Steps count from 1.
double lr_schedule(int64_t step, int64_t warmup, int64_t total, double lr_max, double lr_min);

}  // namespace echo
