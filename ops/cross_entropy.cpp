// Fused, stable cross entropy with an ignore index.
//
// For each row r of logits x [rows, V] with target t_r:
//   m_r = max_j x_rj,  lse_r = m_r + log Σ_j exp(x_rj − m_r)   (no overflow)
//   loss = (1/n) Σ_{r scored} (lse_r − x_{r,t_r}),   n = #{r : t_r ≠ ignore_index}
// and loss = 0 when n = 0. Only lse (one float per row) is saved, never the
// softmax; the backward recomputes it:
//   dx_rj += (dloss/n) · (exp(x_rj − lse_r) − [j = t_r])   on scored rows.
// The row losses are summed in row order (CPU) or by a fixed tree (CUDA), so
// the loss is deterministic. Targets are checked on the host (for targets on
// the GPU: one device-to-host copy of the targets per forward); a target that
// is neither ignore_index nor in [0, V) is an error naming it and V.
#include "autograd/random.h"
#include "ops/runner.h"
#include "ops/cross_entropy.h"

#include <cmath>

#include "ops/common.h"
#if ECHO_HAVE_CUDA
#include "cuda/cross_entropy.cuh"
#endif

namespace echo {
namespace {

template <typename T> T row_logsumexp(const T* x, int64_t V) {
  T m = x[0];
#pragma omp simd reduction(max : m)  // exact in any order
  for (int64_t j = 1; j < V; ++j) m = std::max(m, x[j]);
  T s = 0;
  for (int64_t j = 0; j < V; ++j) s += std::exp(x[j] - m);
  return m + std::log(s);
}

}  // namespace

Tensor cross_entropy(const Tensor& logits, const Tensor& targets, int64_t ignore_index) {
  const char* op = "cross_entropy";
  op_check(logits.defined() && targets.defined(), op, "logits and targets must be defined tensors");
  check_floating_same(op, {&logits});
  op_check(logits.ndim() >= 1 && logits.size(-1) >= 1, op,
           "logits must have rank >= 1 and a non-empty last dim, got " + logits.describe());
  if (targets.dtype() != DType::I32 && targets.dtype() != DType::I64)
    op_error(op, "targets must be i32 or i64, got " + targets.describe());
  if (targets.device() != logits.device() && targets.device() != Device::CPU)
    op_error(op, "targets " + targets.describe() + " must be on the CPU or on the logits' device (" +
                     logits.describe() + ")");
  Shape target_shape(logits.shape().begin(), logits.shape().end() - 1);
  if (target_shape.empty()) target_shape = {1};  // logits [V]: one position
  if (targets.shape() != target_shape)
    op_error(op, "targets must have shape " + shape_str(target_shape) + " (logits' shape without the last dim), got " +
                     targets.describe() + " for logits " + logits.describe());
  const int64_t V = logits.size(-1), rows = logits.numel() / V;

  const std::vector<int64_t> host_targets = targets.to_int_vector();
  int64_t n_scored = 0;
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t t = host_targets[r];
    if (t == ignore_index) continue;
    if (t < 0 || t >= V)
      op_error(op, "target " + std::to_string(t) + " at position " + std::to_string(r) +
                       " is out of range for V=" + std::to_string(V) + " (and is not ignore_index=" +
                       std::to_string(ignore_index) + ")");
    ++n_scored;
  }
  const double inv_scored = n_scored ? 1.0 / static_cast<double>(n_scored) : 0.0;

  Tensor loss = Tensor::empty({1}, logits.dtype(), logits.device());
  Tensor lse = Tensor::empty({rows}, logits.dtype(), logits.device());
  const bool cuda = on_cuda(logits);
  Tensor dev_targets = targets;
  if (cuda) {
#if ECHO_HAVE_CUDA
    if (targets.device() != Device::CUDA) dev_targets = targets.to(Device::CUDA);
    Tensor row_loss = Tensor::empty({rows}, DType::F32, Device::CUDA);
    gpu::cross_entropy_forward(logits.data<float>(), dev_targets.raw(), dev_targets.dtype() == DType::I64,
                               lse.data<float>(), row_loss.data<float>(), loss.data<float>(), rows, V, ignore_index,
                               static_cast<float>(inv_scored));
#else
    no_cuda_build(op);
#endif
  } else {
    dispatch_floating(logits.dtype(), op, [&](auto tag) {
      using T = decltype(tag);
      const T* x = logits.data<T>();
      T* lp = lse.data<T>();
      std::vector<T> row_loss(static_cast<size_t>(rows));
      parallel_for(rows, [&](int64_t r) {
        lp[r] = row_logsumexp(x + r * V, V);
        const int64_t t = host_targets[r];
        row_loss[r] = t == ignore_index ? T(0) : lp[r] - x[r * V + t];
      });
      T total = 0;
      for (int64_t r = 0; r < rows; ++r) total += row_loss[r];
      loss.data<T>()[0] = total * static_cast<T>(inv_scored);
    });
  }

  if (any_requires_grad({&logits})) {
    record(op, {logits, targets}, {loss}, {logits, dev_targets, lse},
           [rows, V, ignore_index, inv_scored, cuda](Node& node, const std::vector<Tensor>& gy, std::vector<Tensor>& gx) {
      if (!gx[0].defined() || inv_scored == 0.0) return;
      const Tensor &x = node.saved(0), &t = node.saved(1), &lse = node.saved(2);
      if (cuda) {
#if ECHO_HAVE_CUDA
        gpu::cross_entropy_backward(x.data<float>(), t.raw(), t.dtype() == DType::I64, lse.data<float>(),
                                    gy[0].data<float>(), gx[0].data<float>(), rows, V, ignore_index,
                                    static_cast<float>(inv_scored));
#endif
      } else {
        const std::vector<int64_t> tv = t.to_int_vector();
        dispatch_floating(x.dtype(), "cross_entropy", [&](auto tag) {
          using T = decltype(tag);
          const T* xp = x.data<T>();
          const T* lp = lse.data<T>();
          T* dx = gx[0].data<T>();
          const T g = gy[0].data<T>()[0] * static_cast<T>(inv_scored);
          parallel_for(rows, [&](int64_t r) {
            if (tv[r] == ignore_index) return;
            for (int64_t j = 0; j < V; ++j) {
              const T p = std::exp(xp[r * V + j] - lp[r]);
              dx[r * V + j] += g * (p - (j == tv[r] ? T(1) : T(0)));
            }
          });
        });
      }
    });
  }
  return loss;
}

// Runner entry: `echo-lm op cross_entropy` (logits [.., V], targets [..] integers,
// -100 ignored) -> the mean loss.
std::vector<RunnerOp> runner_ops_cross_entropy() {
  return {make_runner_op(
      "cross_entropy", {"logits", "targets"}, {{"ignore_index", -100}},
      [](const std::vector<Tensor>& in, const OpAttrs& a) {
        return cross_entropy(in[0], in[1], static_cast<int64_t>(a.at("ignore_index")));
      },
      [](Rng& rng, OpAttrs&, int v) {
        const int64_t rows[] = {6, 45, 3}, V[] = {11, 300, 1030};
        if (v > 2) return NamedTensors{};
        std::vector<int64_t> t(rows[v]);
        for (size_t i = 0; i < t.size(); ++i)
          t[i] = i % 4 == 3 ? -100 : static_cast<int64_t>(rng.uniform(0.0, 1.0) * V[v]) % V[v];
        return NamedTensors{{"logits", randn({1, rows[v], V[v]}, rng, DType::F64, Device::CPU, 2.0)},
                            {"targets", Tensor::from_ints(t, {1, rows[v]}, v == 1 ? DType::I32 : DType::I64)}};
      },
      "loss", {"targets"})};
}

}  // namespace echo
