// Chunked LM head + cross entropy (see the header).
//
// Rows r of x [rows, d], weight W [V, d], target t_r, n = #{scored rows}:
//   z_r = W x_r                      (logits of row r, [V])
//   lse_r = max z_r + log Σ_j exp(z_rj − max z_r)
//   loss = (1/n) Σ_{r scored} (lse_r − z_{r,t_r})
//   g_rj = ∂loss/∂z_rj = (softmax(z_r)_j − [j = t_r]) / n   (0 on unscored rows)
//   dx_r = Σ_j g_rj W_j = (G W)_r,   dW = Σ_r g_r ⊗ x_r = Gᵀ X.
// For a chunk of c rows, Z_c = X_c Wᵀ is one gemm into a [c, V] buffer, the loop
// over rows overwrites it in place with G_c, and two more gemms give dx_c and add
// G_cᵀ X_c into dW. Peak extra memory: one [c, V] buffer plus dx and dW, instead
// of [rows, V] logits plus their gradient. The row losses are summed in row order,
// so the loss does not depend on the chunk size; dW's accumulation order does (to
// rounding). The products go through cpu_gemm (ops/matmul.h), whose partition
// depends on the shapes alone, so the results are the same for any thread count.
#include "ops/linear_cross_entropy.h"

#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

#include "ops/common.h"
#include "ops/cross_entropy.h"
#include "ops/matmul.h"
#include "ops/runner.h"
#include "ops/vector_math.h"
#include "autograd/random.h"

namespace echo {

int64_t linear_cross_entropy_chunk_rows(int64_t vocab) {
  return std::max<int64_t>(1, (int64_t(1) << 23) / std::max<int64_t>(1, vocab));
}

Tensor linear_cross_entropy(const Tensor& x, const Tensor& weight, const Tensor& targets, int64_t ignore_index,
                            int64_t chunk_rows) {
  const char* op = "linear_cross_entropy";
  op_check(x.defined() && weight.defined() && targets.defined(), op, "x, weight and targets must be defined");
  check_floating_same(op, {&x, &weight});
  check_rank(op, "weight", weight, 2);
  op_check(x.ndim() >= 1 && x.size(-1) == weight.size(1), op,
           "x " + x.describe() + " must end in weight's input width " + std::to_string(weight.size(1)) +
               " (weight " + weight.describe() + ")");
  op_check(chunk_rows >= 0, op, "chunk_rows must be >= 0, got " + std::to_string(chunk_rows));
  // Paths whose numbers are defined by the unfused ops.
  if (on_cuda(x) || (x.dtype() == DType::F32 && matmul_precision() == MatmulPrecision::BF16))
    return cross_entropy(linear(x, weight), targets, ignore_index);

  if (targets.dtype() != DType::I32 && targets.dtype() != DType::I64)
    op_error(op, "targets must be i32 or i64, got " + targets.describe());
  Shape target_shape(x.shape().begin(), x.shape().end() - 1);
  if (target_shape.empty()) target_shape = {1};
  if (targets.shape() != target_shape)
    op_error(op, "targets must have shape " + shape_str(target_shape) + " (x's shape without the last dim), got " +
                     targets.describe() + " for x " + x.describe());
  const int64_t d = weight.size(1), V = weight.size(0), rows = x.numel() / std::max<int64_t>(d, 1);
  op_check(V >= 1, op, "weight must have at least one row, got " + weight.describe());
  const std::vector<int64_t> tv = targets.to_int_vector();
  int64_t n_scored = 0;
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t t = tv[r];
    if (t == ignore_index) continue;
    if (t < 0 || t >= V)
      op_error(op, "target " + std::to_string(t) + " at position " + std::to_string(r) + " is out of range for V=" +
                       std::to_string(V) + " (and is not ignore_index=" + std::to_string(ignore_index) + ")");
    ++n_scored;
  }
  const double inv_scored = n_scored ? 1.0 / static_cast<double>(n_scored) : 0.0;
  const int64_t C = chunk_rows > 0 ? chunk_rows : linear_cross_entropy_chunk_rows(V);

  const bool need_grad = any_requires_grad({&x, &weight});
  const bool need_dx = need_grad && x.requires_grad(), need_dw = need_grad && weight.requires_grad();
  Tensor loss = Tensor::empty({1}, x.dtype());
  Tensor dx = need_dx ? Tensor::empty(x.shape(), x.dtype()) : Tensor();
  Tensor dw = need_dw ? Tensor::empty(weight.shape(), weight.dtype()) : Tensor();  // the first chunk writes it
  dispatch_floating(x.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    const T* xp = x.data<T>();
    const T* wp = weight.data<T>();
    std::vector<T> z(static_cast<size_t>(std::min(C, rows) * V));
    std::vector<T> row_loss(static_cast<size_t>(rows));
    const T inv = static_cast<T>(inv_scored);
    for (int64_t r0 = 0; r0 < rows; r0 += C) {
      const int64_t c = std::min(C, rows - r0);
      cpu_gemm(false, true, c, V, d, T(1), xp + r0 * d, d, wp, d, T(0), z.data(), V);  // Z_c = X_c Wᵀ
      parallel_for(c, [&](int64_t i) {
        T* zr = z.data() + i * V;
        const int64_t t = tv[r0 + i];
        T m = zr[0];
#pragma omp simd reduction(max : m)  // exact in any order
        for (int64_t j = 1; j < V; ++j) m = std::max(m, zr[j]);
        // In f32 the exponentials are vectorised (ops/vector_math.h), the sum in SIMD lanes.
        T s = 0;
        if constexpr (std::is_same_v<T, float>) s = vmath::sum_exp_shifted(zr, V, m);
        else for (int64_t j = 0; j < V; ++j) s += std::exp(zr[j] - m);
        const T lse = m + std::log(s);
        row_loss[r0 + i] = t == ignore_index ? T(0) : lse - zr[t];
        if (!need_grad) return;
        if (t == ignore_index) {
          std::fill(zr, zr + V, T(0));
          return;
        }
        if constexpr (std::is_same_v<T, float>) vmath::exp_shifted_scaled(zr, V, lse, inv);  // G_c in place
        else for (int64_t j = 0; j < V; ++j) zr[j] = inv * std::exp(zr[j] - lse);
        zr[t] -= inv;
      });
      if (need_dx) cpu_gemm(false, false, c, d, V, T(1), z.data(), V, wp, d, T(0), dx.data<T>() + r0 * d, d);
      if (need_dw)
        cpu_gemm(true, false, V, d, c, T(1), z.data(), V, xp + r0 * d, d, r0 == 0 ? T(0) : T(1), dw.data<T>(), d);
    }
    T total = 0;
    for (int64_t r = 0; r < rows; ++r) total += row_loss[r];
    loss.data<T>()[0] = total * inv;
  });

  if (need_grad) {
    record(op, {x, weight, targets}, {loss}, {dx, dw}, [](Node& node, const std::vector<Tensor>& gy,
                                                          std::vector<Tensor>& gx) {
      const double g = gy[0].item();
      for (size_t i = 0; i < 2; ++i) {
        if (!gx[i].defined() || !node.saved_tensors[i].defined()) continue;
        const Tensor& grad = node.saved(i);
        dispatch_floating(grad.dtype(), "linear_cross_entropy", [&](auto t) {
          using T = decltype(t);
          const T a = static_cast<T>(g);
          const T* src = grad.data<T>();
          T* dst = gx[i].data<T>();
          with_fresh(node.grad_is_fresh(i), [&](auto f) {
            parallel_blocks(grad.numel(), [&](int64_t k0, int64_t k1) {
#pragma omp simd
              for (int64_t k = k0; k < k1; ++k) grad_put<decltype(f)::value>(dst[k], a * src[k]);
            });
          });
        });
      }
    }).writes_fresh_grads = true;
  }
  return loss;
}

// Runner entry: `echo-lm op linear_cross_entropy` (x [.., d], weight [V, d],
// targets [..] integers, -100 ignored; chunk_rows, 0 = automatic) -> the mean loss.
// The cases force several chunks with a remainder.
std::vector<RunnerOp> runner_ops_linear_cross_entropy() {
  return {make_runner_op(
      "linear_cross_entropy", {"x", "weight", "targets"}, {{"ignore_index", -100}, {"chunk_rows", 0}},
      [](const std::vector<Tensor>& in, const OpAttrs& a) {
        return linear_cross_entropy(in[0], in[1], in[2], static_cast<int64_t>(a.at("ignore_index")),
                                    static_cast<int64_t>(a.at("chunk_rows")));
      },
      [](Rng& rng, OpAttrs& attrs, int v) {
        const int64_t rows[] = {7, 45, 130}, d[] = {5, 33, 16}, V[] = {11, 70, 300}, chunk[] = {3, 8, 0};
        if (v > 2) return NamedTensors{};
        attrs["chunk_rows"] = static_cast<double>(chunk[v]);
        std::vector<int64_t> t(rows[v]);
        for (size_t i = 0; i < t.size(); ++i)
          t[i] = i % 5 == 4 ? -100 : static_cast<int64_t>(rng.uniform(0.0, 1.0) * V[v]) % V[v];
        return NamedTensors{{"x", randn({1, rows[v], d[v]}, rng, DType::F64)},
                            {"weight", randn({V[v], d[v]}, rng, DType::F64, Device::CPU, 0.5)},
                            {"targets", Tensor::from_ints(t, {1, rows[v]}, DType::I64)}};
      },
      "loss", {"targets"})};
}

}  // namespace echo
