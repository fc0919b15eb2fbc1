// Spectral rotation of the Koopman MLP (spec §1.5). Pair i of g [..., d_k] is
// (g_{2i}, g_{2i+1}); its rotation-scaling (γ_i, ω_i) is projected into the unit
// disc so that the operator never expands:
//   ρ = max(sqrt(γ²+ω²), 1e-8),  s = min(ρ,1)/ρ,  γ' = sγ,  ω' = sω
//   z_{2i}   =  γ' g_{2i} + ω' g_{2i+1}
//   z_{2i+1} = −ω' g_{2i} + γ' g_{2i+1}
// Backward: the transpose of the 2×2 block for g,
//   dg_{2i} = γ' dz_{2i} − ω' dz_{2i+1},   dg_{2i+1} = ω' dz_{2i} + γ' dz_{2i+1},
// then dγ' = Σ_rows (dz_{2i} g_{2i} + dz_{2i+1} g_{2i+1}), dω' = Σ_rows (dz_{2i} g_{2i+1} − dz_{2i+1} g_{2i}),
// and through the clamp: inside the disc (ρ ≤ 1, floor included) s ≡ 1 and
// dγ = dγ', dω = dω'; outside, (γ',ω') = (γ,ω)/ρ, whose Jacobian is
// [ω², −γω; −γω, γ²]/ρ³, so dγ = (ω² dγ' − γω dω')/ρ³, dω = (γ² dω' − γω dγ')/ρ³.
// The row sums use fixed row chunks summed in order (ops/reductions.h:
// deterministic, no atomics).
#include "autograd/random.h"
#include "ops/runner.h"
#include "ops/koopman_rotate.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "ops/common.h"
#include "ops/reductions.h"
#if ECHO_HAVE_CUDA
#include "cuda/koopman_rotate.cuh"
#endif

namespace echo {
namespace {

constexpr const char* kOp = "koopman_rotate";

template <typename T> void clamp_to_disc(T gamma, T omega, T& gamma_c, T& omega_c) {
  const T rho = std::max(std::sqrt(gamma * gamma + omega * omega), T(1e-8));
  const T s = std::min(rho, T(1)) / rho;
  gamma_c = s * gamma;
  omega_c = s * omega;
}

template <typename T>
void forward_cpu(const T* g, const T* gamma, const T* omega, T* z, int64_t rows, int64_t half) {
  parallel_for(rows, [&](int64_t r) {
    for (int64_t i = 0; i < half; ++i) {
      T gc, oc;
      clamp_to_disc(gamma[i], omega[i], gc, oc);
      const T a = g[r * 2 * half + 2 * i], b = g[r * 2 * half + 2 * i + 1];
      z[r * 2 * half + 2 * i] = gc * a + oc * b;
      z[r * 2 * half + 2 * i + 1] = -oc * a + gc * b;
    }
  });
}

template <typename T>
void backward_cpu(const T* g, const T* gamma, const T* omega, const T* dz, T* dg, T* dgamma, T* domega, int64_t rows,
                  int64_t half) {
  const int64_t dk = 2 * half;
  if (dg) {
    parallel_for(rows, [&](int64_t r) {
      for (int64_t i = 0; i < half; ++i) {
        T gc, oc;
        clamp_to_disc(gamma[i], omega[i], gc, oc);
        const T da = dz[r * dk + 2 * i], db = dz[r * dk + 2 * i + 1];
        dg[r * dk + 2 * i] += gc * da - oc * db;
        dg[r * dk + 2 * i + 1] += oc * da + gc * db;
      }
    });
  }
  if (dgamma || domega) {
    // partial[chunk][i][0] = Σ dγ'_i terms, partial[chunk][i][1] = Σ dω'_i terms.
    const std::vector<T> partial = chunk_partials<T>(rows, dk, [&](int64_t r, T* p) {
      for (int64_t i = 0; i < half; ++i) {
        const T a = g[r * dk + 2 * i], b = g[r * dk + 2 * i + 1];
        const T da = dz[r * dk + 2 * i], db = dz[r * dk + 2 * i + 1];
        p[2 * i] += da * a + db * b;
        p[2 * i + 1] += da * b - db * a;
      }
    });
    parallel_for(half, [&](int64_t i) {
      const T d_gc = sum_chunks(partial, dk, 2 * i), d_oc = sum_chunks(partial, dk, 2 * i + 1);
      const T ga = gamma[i], om = omega[i];
      const T rho = std::sqrt(ga * ga + om * om);
      T d_ga = d_gc, d_om = d_oc;
      if (rho > T(1)) {
        const T rho3 = rho * rho * rho;
        d_ga = (om * om * d_gc - ga * om * d_oc) / rho3;
        d_om = (ga * ga * d_oc - ga * om * d_gc) / rho3;
      }
      if (dgamma) dgamma[i] += d_ga;
      if (domega) domega[i] += d_om;
    });
  }
}

}  // namespace

Tensor koopman_rotate(const Tensor& g, const Tensor& rot_gamma, const Tensor& rot_omega) {
  check_floating_same(kOp, {&g, &rot_gamma, &rot_omega});
  op_check(g.ndim() >= 1 && g.size(-1) > 0 && g.size(-1) % 2 == 0, kOp,
           "g must have a non-empty, even last axis d_k, got " + g.describe());
  const int64_t dk = g.size(-1), half = dk / 2, rows = g.numel() / dk;
  check_shape(kOp, "rot_gamma", rot_gamma, {half});
  check_shape(kOp, "rot_omega", rot_omega, {half});
  Tensor z = Tensor::empty(g.shape(), g.dtype(), g.device());
  if (on_cuda(g)) {
#if ECHO_HAVE_CUDA
    gpu::koopman_rotate_forward(g.data<float>(), rot_gamma.data<float>(), rot_omega.data<float>(), z.data<float>(),
                                rows, half);
#else
    no_cuda_build(kOp);
#endif
  } else {
    dispatch_floating(g.dtype(), kOp, [&](auto t) {
      using T = decltype(t);
      forward_cpu<T>(g.data<T>(), rot_gamma.data<T>(), rot_omega.data<T>(), z.data<T>(), rows, half);
    });
  }
  if (any_requires_grad({&g, &rot_gamma, &rot_omega})) {
    record(kOp, {g, rot_gamma, rot_omega}, {z}, {g, rot_gamma, rot_omega},
           [](Node& node, const std::vector<Tensor>& gz, std::vector<Tensor>& grads) {
             const Tensor &g = node.saved(0), &gamma = node.saved(1), &omega = node.saved(2);
             const int64_t half = g.size(-1) / 2, rows = g.numel() / (2 * half);
             if (on_cuda(g)) {
#if ECHO_HAVE_CUDA
               Tensor work;
               if (grads[1].defined() || grads[2].defined())
                 work = Tensor::empty({gpu::koopman_rotate_workspace_floats(rows, half)}, DType::F32, Device::CUDA);
               gpu::koopman_rotate_backward(g.data<float>(), gamma.data<float>(), omega.data<float>(),
                                            gz[0].data<float>(), ptr<float>(grads[0]), ptr<float>(grads[1]),
                                            ptr<float>(grads[2]), ptr<float>(work), rows, half);
#endif
             } else {
               dispatch_floating(g.dtype(), kOp, [&](auto t) {
                 using T = decltype(t);
                 backward_cpu<T>(g.data<T>(), gamma.data<T>(), omega.data<T>(), gz[0].data<T>(), ptr<T>(grads[0]),
                                 ptr<T>(grads[1]), ptr<T>(grads[2]), rows, half);
               });
             }
           });
  }
  return z;
}

// Runner entry: `echo-lm op koopman_rotate` (g [.., 2·half], rot_gamma, rot_omega [half]).
std::vector<RunnerOp> runner_ops_koopman_rotate() {
  return {make_runner_op(
      "koopman_rotate", {"g", "rot_gamma", "rot_omega"}, {},
      [](const std::vector<Tensor>& in, const OpAttrs&) { return koopman_rotate(in[0], in[1], in[2]); },
      [](Rng& rng, OpAttrs&, int v) {
        const int64_t rows[] = {3, 301, 70000}, half[] = {2, 33, 3};
        if (v > 2) return NamedTensors{};
        return NamedTensors{{"g", randn({rows[v], 2 * half[v]}, rng, DType::F64)},
                            // |(γ, ω)| away from 1, where min(ρ, 1) has its kink: below it, and above it (v = 2)
                            {"rot_gamma", rand_uniform({half[v]}, rng, v == 2 ? 1.2 : 0.3, v == 2 ? 1.5 : 0.6, DType::F64)},
                            {"rot_omega", rand_uniform({half[v]}, rng, -0.5, 0.5, DType::F64)}};
      })};
}

}  // namespace echo
