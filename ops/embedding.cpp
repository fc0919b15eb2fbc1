// Embedding lookup: out[t, :] = weight[id_t, :], and its backward
//   dweight[v, :] += Σ_{t : id_t = v} dy[t, :]
// done deterministically without atomics: the tokens are grouped by id on the
// host (a stable counting sort, O(N + V)), and each vocabulary row sums its
// tokens' gradients in token order, then adds the sum once. The rows are
// independent, so they run in parallel (CPU: parallel_for over rows; CUDA:
// one block per row, cuda/embedding.cu), with the same summation order.
//
// Ids are validated on the host: an id outside [0, V) is an error naming the id,
// its position and V. For ids on the GPU this costs one device-to-host copy of
// the ids (N integers) and a synchronisation per forward; the same host copy
// yields the grouping for the backward, which is uploaded (V+1+N int32) only
// when the weight requires grad. Ids may live on the CPU or on the weight's device.
#include "autograd/random.h"
#include "ops/runner.h"
#include "ops/embedding.h"

#include <algorithm>
#include <climits>
#include <cstring>

#include "ops/common.h"
#if ECHO_HAVE_CUDA
#include "cuda/embedding.cuh"
#endif

namespace echo {
namespace {

// Token positions grouped by id, in token order: the tokens with id v are
// order[row_start[v] .. row_start[v+1]).
struct TokensById {
  std::vector<int64_t> row_start, order;
};
TokensById group_by_id(const std::vector<int64_t>& ids, int64_t V) {
  TokensById g;
  g.row_start.assign(static_cast<size_t>(V + 1), 0);
  for (int64_t id : ids) ++g.row_start[id + 1];
  for (int64_t v = 0; v < V; ++v) g.row_start[v + 1] += g.row_start[v];
  g.order.resize(ids.size());
  std::vector<int64_t> next(g.row_start.begin(), g.row_start.end() - 1);
  for (size_t t = 0; t < ids.size(); ++t) g.order[next[ids[t]]++] = static_cast<int64_t>(t);
  return g;
}

template <typename T>
void embedding_backward_cpu(const T* dy, const TokensById& g, T* dweight, int64_t V, int64_t d) {
  parallel_for(V, [&](int64_t v) {
    const int64_t begin = g.row_start[v], end = g.row_start[v + 1];
    if (begin == end) return;
    std::vector<T> acc(static_cast<size_t>(d), T(0));
    for (int64_t p = begin; p < end; ++p) {
      const T* row = dy + g.order[p] * d;
      for (int64_t c = 0; c < d; ++c) acc[c] += row[c];
    }
    for (int64_t c = 0; c < d; ++c) dweight[v * d + c] += acc[c];
  });
}

}  // namespace

Tensor embedding(const Tensor& weight, const Tensor& ids) {
  const char* op = "embedding";
  op_check(weight.defined() && ids.defined(), op, "weight and ids must be defined tensors");
  check_floating_same(op, {&weight});
  check_rank(op, "weight", weight, 2);
  if (ids.dtype() != DType::I32 && ids.dtype() != DType::I64)
    op_error(op, "ids must be i32 or i64, got " + ids.describe());
  if (ids.device() != weight.device() && ids.device() != Device::CPU)
    op_error(op, "ids " + ids.describe() + " must be on the CPU or on the weight's device (" + weight.describe() + ")");
  const int64_t V = weight.size(0), d = weight.size(1), N = ids.numel();

  const std::vector<int64_t> host_ids = ids.to_int_vector();
  for (int64_t t = 0; t < N; ++t)
    if (host_ids[t] < 0 || host_ids[t] >= V)
      op_error(op, "id " + std::to_string(host_ids[t]) + " at position " + std::to_string(t) +
                       " is out of range for a vocabulary of V=" + std::to_string(V) + " (weight " +
                       weight.describe() + ")");

  Shape out_shape = ids.shape();
  out_shape.push_back(d);
  Tensor out = Tensor::empty(out_shape, weight.dtype(), weight.device());
  const bool cuda = on_cuda(weight);
  if (cuda) {
#if ECHO_HAVE_CUDA
    const Tensor dev_ids = ids.device() == Device::CUDA ? ids : ids.to(Device::CUDA);
    gpu::embedding_forward(weight.data<float>(), dev_ids.raw(), dev_ids.dtype() == DType::I64, out.data<float>(), N, d);
#else
    no_cuda_build(op);
#endif
  } else {
    dispatch_floating(weight.dtype(), op, [&](auto t) {
      using T = decltype(t);
      const T* w = weight.data<T>();
      T* o = out.data<T>();
      parallel_for(N, [&](int64_t tok) { std::memcpy(o + tok * d, w + host_ids[tok] * d, sizeof(T) * d); });
    });
  }

  if (any_requires_grad({&weight})) {
    std::vector<Tensor> saved;
    if (cuda) {
      op_check(N < INT_MAX && V < INT_MAX, op, "too many tokens or rows for the int32 grouping on CUDA");
      TokensById g = group_by_id(host_ids, V);
      saved = {Tensor::from_ints(g.row_start, {V + 1}, DType::I32, Device::CUDA),
               Tensor::from_ints(g.order, {N}, DType::I32, Device::CUDA)};
    } else {
      saved = {ids};
    }
    record(op, {weight, ids}, {out}, saved, [V, d, cuda](Node& node, const std::vector<Tensor>& gy, std::vector<Tensor>& gx) {
      if (!gx[0].defined()) return;
      if (cuda) {
#if ECHO_HAVE_CUDA
        gpu::embedding_backward(gy[0].data<float>(), node.saved(0).data<int32_t>(), node.saved(1).data<int32_t>(),
                                gx[0].data<float>(), V, d);
#endif
      } else {
        const TokensById g = group_by_id(node.saved(0).to_int_vector(), V);
        dispatch_floating(gy[0].dtype(), "embedding", [&](auto t) {
          using T = decltype(t);
          embedding_backward_cpu<T>(gy[0].data<T>(), g, gx[0].data<T>(), V, d);
        });
      }
    });
  }
  return out;
}

// Runner entry: `echo-lm op embedding` (weight [V, d], ids [..] integers).
std::vector<RunnerOp> runner_ops_embedding() {
  return {make_runner_op(
      "embedding", {"weight", "ids"}, {},
      [](const std::vector<Tensor>& in, const OpAttrs&) { return embedding(in[0], in[1]); },
      [](Rng& rng, OpAttrs&, int v) {
        const int64_t V[] = {7, 61, 300}, d[] = {5, 40, 300}, n[] = {9, 150, 77};
        if (v > 2) return NamedTensors{};
        std::vector<int64_t> ids(n[v]);
        for (auto& id : ids) id = static_cast<int64_t>(rng.uniform(0.0, 1.0) * V[v]) % V[v];
        return NamedTensors{{"weight", randn({V[v], d[v]}, rng, DType::F64)},
                            {"ids", Tensor::from_ints(ids, {1, n[v]}, v == 1 ? DType::I32 : DType::I64)}};
      },
      "y", {"ids"})};
}

}  // namespace echo
