// transpose, slice and concat. Tensors are contiguous, so each is a copy
// described by an index map, and its backward is the inverse map, adding:
//
//   transpose: view x as [A, n0, B, n1, C] (n0, n1 the swapped dims);
//              y[a,j,b,i,c] = x[a,i,b,j,c]; dx is dy transposed back.
//   slice:     view x as [A, n, C]; y[a,i,c] = x[a, start+i, c];
//              dx[a, start+i, c] += dy[a,i,c], the rest of dx untouched.
//   concat:    input k is [A, n_k, C], placed at offset o_k = Σ_{l<k} n_l of
//              the output's dim; dx_k[a,i,c] += dy[a, o_k+i, c].
// Slice and concat share one block copy (copy_block); cuda/shape_ops.cu has the
// same two kernels.
#include "autograd/random.h"
#include "ops/runner.h"
#include "ops/shape_ops.h"

#include <algorithm>

#include "ops/common.h"
#if ECHO_HAVE_CUDA
#include "cuda/shape_ops.cuh"
#endif

namespace echo {
namespace {

int normalize_dim(const char* op, int dim, const Tensor& x) {
  const int rank = x.ndim();
  if (dim < -rank || dim >= rank)
    op_error(op, "dim " + std::to_string(dim) + " is out of range for " + x.describe());
  return dim < 0 ? dim + rank : dim;
}
int64_t prod(const Shape& s, int begin, int end) {
  int64_t p = 1;
  for (int i = begin; i < end; ++i) p *= s[i];
  return p;
}

template <typename T>
void transpose_cpu(const T* x, T* out, int64_t A, int64_t n0, int64_t B, int64_t n1, int64_t C, bool accumulate) {
  // One output row (a, j, b, i) of C contiguous elements per iteration.
  parallel_for(A * n1 * B * n0, [&](int64_t row) {
    int64_t rest = row;
    const int64_t i = rest % n0; rest /= n0;
    const int64_t b = rest % B; rest /= B;
    const int64_t j = rest % n1;
    const int64_t a = rest / n1;
    const T* src = x + (((a * n0 + i) * B + b) * n1 + j) * C;
    T* dst = out + row * C;
    if (accumulate) for (int64_t c = 0; c < C; ++c) dst[c] += src[c];
    else for (int64_t c = 0; c < C; ++c) dst[c] = src[c];
  });
}

// Block a of the copy is count·C contiguous elements on both sides; long blocks
// are cut into pieces so that a single block still spreads over the threads.
template <typename T>
void copy_block_cpu(const T* src, int64_t src_n, int64_t src_offset, T* dst, int64_t dst_n, int64_t dst_offset,
                    int64_t A, int64_t count, int64_t C, bool accumulate) {
  const int64_t len = count * C;
  constexpr int64_t kPiece = 16384;
  const int64_t pieces = std::max<int64_t>(1, (len + kPiece - 1) / kPiece);
  parallel_for(A * pieces, [&](int64_t task) {
    const int64_t a = task / pieces, k0 = (task % pieces) * kPiece, k1 = std::min(len, k0 + kPiece);
    const T* s = src + (a * src_n + src_offset) * C;
    T* d = dst + (a * dst_n + dst_offset) * C;
    if (accumulate) for (int64_t k = k0; k < k1; ++k) d[k] += s[k];
    else for (int64_t k = k0; k < k1; ++k) d[k] = s[k];
  });
}

void transpose_any(const char* op, const Tensor& x, Tensor& out, int64_t A, int64_t n0, int64_t B, int64_t n1,
                   int64_t C, bool accumulate) {
  if (on_cuda(x)) {
#if ECHO_HAVE_CUDA
    gpu::transpose_dims(x.data<float>(), out.data<float>(), A, n0, B, n1, C, accumulate);
#else
    no_cuda_build(op);
#endif
  } else {
    dispatch_floating(x.dtype(), op, [&](auto t) {
      using T = decltype(t);
      transpose_cpu<T>(x.data<T>(), out.data<T>(), A, n0, B, n1, C, accumulate);
    });
  }
}

void copy_block_any(const char* op, const Tensor& src, int64_t src_n, int64_t src_offset, Tensor& dst, int64_t dst_n,
                    int64_t dst_offset, int64_t A, int64_t count, int64_t C, bool accumulate) {
  if (on_cuda(src)) {
#if ECHO_HAVE_CUDA
    gpu::copy_block(src.data<float>(), src_n, src_offset, dst.data<float>(), dst_n, dst_offset, A, count, C, accumulate);
#else
    no_cuda_build(op);
#endif
  } else {
    dispatch_floating(src.dtype(), op, [&](auto t) {
      using T = decltype(t);
      copy_block_cpu<T>(src.data<T>(), src_n, src_offset, dst.data<T>(), dst_n, dst_offset, A, count, C, accumulate);
    });
  }
}

}  // namespace

Tensor transpose(const Tensor& x, int dim0, int dim1) {
  const char* op = "transpose";
  op_check(x.defined(), op, "input must be a defined tensor");
  check_floating_same(op, {&x});
  int d0 = normalize_dim(op, dim0, x), d1 = normalize_dim(op, dim1, x);
  if (d0 == d1) return x.clone();
  if (d0 > d1) std::swap(d0, d1);
  const Shape& s = x.shape();
  const int64_t A = prod(s, 0, d0), n0 = s[d0], B = prod(s, d0 + 1, d1), n1 = s[d1], C = prod(s, d1 + 1, x.ndim());
  Shape out_shape = s;
  std::swap(out_shape[d0], out_shape[d1]);
  Tensor y = Tensor::empty(out_shape, x.dtype(), x.device());
  transpose_any(op, x, y, A, n0, B, n1, C, false);
  if (any_requires_grad({&x})) {
    record(op, {x}, {y}, {}, [=](Node&, const std::vector<Tensor>& gy, std::vector<Tensor>& gx) {
      // dy is [A, n1, B, n0, C]; transposing it back swaps the roles of n0 and n1.
      if (gx[0].defined()) transpose_any("transpose", gy[0], gx[0], A, n1, B, n0, C, true);
    });
  }
  return y;
}

Tensor slice(const Tensor& x, int dim, int64_t start, int64_t end) {
  const char* op = "slice";
  op_check(x.defined(), op, "input must be a defined tensor");
  check_floating_same(op, {&x});
  const int d = normalize_dim(op, dim, x);
  const Shape& s = x.shape();
  const int64_t n = s[d];
  if (start < 0 || start > end || end > n)
    op_error(op, "range [" + std::to_string(start) + ", " + std::to_string(end) + ") is not within [0, " +
                     std::to_string(n) + "] along dim " + std::to_string(dim) + " of " + x.describe());
  const int64_t A = prod(s, 0, d), C = prod(s, d + 1, x.ndim()), count = end - start;
  Shape out_shape = s;
  out_shape[d] = count;
  Tensor y = Tensor::empty(out_shape, x.dtype(), x.device());
  copy_block_any(op, x, n, start, y, count, 0, A, count, C, false);
  if (any_requires_grad({&x})) {
    record(op, {x}, {y}, {}, [=](Node&, const std::vector<Tensor>& gy, std::vector<Tensor>& gx) {
      if (gx[0].defined()) copy_block_any("slice", gy[0], count, 0, gx[0], n, start, A, count, C, true);
    });
  }
  return y;
}

std::vector<Tensor> split(const Tensor& x, int dim, const std::vector<int64_t>& sizes) {
  const char* op = "split";
  op_check(x.defined(), op, "input must be a defined tensor");
  check_floating_same(op, {&x});
  const int d = normalize_dim(op, dim, x);
  const Shape& s = x.shape();
  const int64_t n = s[d];
  std::vector<int64_t> offsets;
  int64_t total = 0;
  for (int64_t size : sizes) {
    op_check(size >= 0, op, "part sizes must be >= 0, got " + std::to_string(size));
    offsets.push_back(total);
    total += size;
  }
  if (sizes.empty() || total != n)
    op_error(op, "part sizes add up to " + std::to_string(total) + ", but dim " + std::to_string(dim) + " of " +
                     x.describe() + " has " + std::to_string(n));
  const int64_t A = prod(s, 0, d), C = prod(s, d + 1, x.ndim());
  std::vector<Tensor> ys;
  for (size_t k = 0; k < sizes.size(); ++k) {
    Shape part = s;
    part[d] = sizes[k];
    ys.push_back(Tensor::empty(part, x.dtype(), x.device()));
    copy_block_any(op, x, n, offsets[k], ys.back(), sizes[k], 0, A, sizes[k], C, false);
  }
  if (any_requires_grad({&x})) {
    // The parts tile x, so a fresh buffer is written whole by the copies.
    record(op, {x}, ys, {}, [=](Node& node, const std::vector<Tensor>& gy, std::vector<Tensor>& gx) {
      if (!gx[0].defined()) return;
      for (size_t k = 0; k < sizes.size(); ++k)
        copy_block_any("split", gy[k], sizes[k], 0, gx[0], n, offsets[k], A, sizes[k], C, !node.grad_is_fresh(0));
    }).writes_fresh_grads = true;
  }
  return ys;
}

Tensor concat(const std::vector<Tensor>& xs, int dim) {
  const char* op = "concat";
  op_check(!xs.empty(), op, "needs at least one tensor");
  for (size_t k = 0; k < xs.size(); ++k)
    op_check(xs[k].defined(), op, "input " + std::to_string(k) + " is undefined");
  const Tensor& first = xs[0];
  for (const Tensor& x : xs) check_floating_same(op, {&first, &x});
  const int d = normalize_dim(op, dim, first);
  Shape out_shape = first.shape();
  out_shape[d] = 0;
  std::vector<int64_t> sizes, offsets;
  for (size_t k = 0; k < xs.size(); ++k) {
    const Tensor& x = xs[k];
    bool ok = x.ndim() == first.ndim();
    for (int i = 0; ok && i < first.ndim(); ++i) ok = i == d || x.size(i) == first.size(i);
    if (!ok)
      op_error(op, "input " + std::to_string(k) + " must match input 0 except along dim " + std::to_string(dim) +
                       ", got " + x.describe() + " and " + first.describe());
    offsets.push_back(out_shape[d]);
    sizes.push_back(x.size(d));
    out_shape[d] += x.size(d);
  }
  const int64_t A = prod(out_shape, 0, d), N = out_shape[d], C = prod(out_shape, d + 1, first.ndim());
  Tensor y = Tensor::empty(out_shape, first.dtype(), first.device());
  for (size_t k = 0; k < xs.size(); ++k)
    copy_block_any(op, xs[k], sizes[k], 0, y, N, offsets[k], A, sizes[k], C, false);
  if (any_requires_grad(xs)) {
    record(op, xs, {y}, {}, [=](Node& node, const std::vector<Tensor>& gy, std::vector<Tensor>& gx) {
      for (size_t k = 0; k < gx.size(); ++k)
        if (gx[k].defined())
          copy_block_any("concat", gy[0], N, offsets[k], gx[k], sizes[k], 0, A, sizes[k], C, !node.grad_is_fresh(k));
    }).writes_fresh_grads = true;
  }
  return y;
}

// Runner entries: transpose (dim0, dim1), slice (dim, start, end), concat
// (a, b along dim) and split (x into a, b, c along dim).
std::vector<RunnerOp> runner_ops_shape() {
  auto transpose_op = make_runner_op(
      "transpose", {"x"}, {{"dim0", 1}, {"dim1", 2}},
      [](const std::vector<Tensor>& in, const OpAttrs& a) {
        return transpose(in[0], static_cast<int>(a.at("dim0")), static_cast<int>(a.at("dim1")));
      },
      [](Rng& rng, OpAttrs& attrs, int v) {
        if (v > 2) return NamedTensors{};
        attrs["dim0"] = v == 2 ? 0 : 1;
        attrs["dim1"] = 2;
        const Shape shapes[] = {{2, 3, 4}, {3, 37, 29, 5}, {17, 6, 33}};
        return NamedTensors{{"x", randn(shapes[v], rng, DType::F64)}};
      });
  auto slice_op = make_runner_op(
      "slice", {"x"}, {{"dim", 1}, {"start", 1}, {"end", 3}},
      [](const std::vector<Tensor>& in, const OpAttrs& a) {
        return slice(in[0], static_cast<int>(a.at("dim")), static_cast<int64_t>(a.at("start")),
                     static_cast<int64_t>(a.at("end")));
      },
      [](Rng& rng, OpAttrs& attrs, int v) {
        if (v > 2) return NamedTensors{};
        const Shape shapes[] = {{2, 4, 3}, {3, 300, 7}, {5, 9, 263}};
        attrs["dim"] = v == 2 ? 2 : 1;
        attrs["start"] = v == 0 ? 1 : 13;
        attrs["end"] = v == 0 ? 3 : (v == 1 ? 290 : 200);
        return NamedTensors{{"x", randn(shapes[v], rng, DType::F64)}};
      });
  auto concat_op = make_runner_op(
      "concat", {"a", "b"}, {{"dim", 1}},
      [](const std::vector<Tensor>& in, const OpAttrs& a) { return concat({in[0], in[1]}, static_cast<int>(a.at("dim"))); },
      [](Rng& rng, OpAttrs& attrs, int v) {
        if (v > 2) return NamedTensors{};
        attrs["dim"] = v == 2 ? 2 : 1;
        const Shape a_shape = v == 0 ? Shape{2, 3, 4} : (v == 1 ? Shape{3, 45, 7} : Shape{2, 9, 100});
        Shape b_shape = a_shape;
        b_shape[v == 2 ? 2 : 1] = v == 0 ? 2 : 31;
        return NamedTensors{{"a", randn(a_shape, rng, DType::F64)}, {"b", randn(b_shape, rng, DType::F64)}};
      });
  // split: x -> a, b, c (sizes size_a, size_b and the rest).
  RunnerOp split_op;
  split_op.name = "split";
  split_op.inputs = {"x"};
  split_op.outputs = {"a", "b", "c"};
  split_op.attr_defaults = {{"dim", 1}, {"size_a", 1}, {"size_b", 1}};
  split_op.forward = [](const NamedTensors& in, const OpAttrs& a) {
    op_check(in.count("x") && in.at("x").defined(), "split", "missing input x");
    const Tensor& x = in.at("x");
    const int dim = static_cast<int>(a.at("dim"));
    const int64_t sa = static_cast<int64_t>(a.at("size_a")), sb = static_cast<int64_t>(a.at("size_b"));
    const int64_t n = x.size(dim);
    std::vector<Tensor> parts = split(x, dim, {sa, sb, n - sa - sb});
    return NamedTensors{{"a", parts[0]}, {"b", parts[1]}, {"c", parts[2]}};
  };
  split_op.cases = [](Rng& rng, OpAttrs& attrs, int v) {
    if (v > 2) return NamedTensors{};
    const Shape shapes[] = {{2, 6, 3}, {3, 300, 7}, {5, 9, 563}};
    attrs["dim"] = v == 2 ? 2 : 1;
    attrs["size_a"] = v == 0 ? 1 : (v == 1 ? 129 : 256);  // as the Mamba in_proj: z, xBC, dt
    attrs["size_b"] = v == 0 ? 3 : (v == 1 ? 161 : 288);
    return NamedTensors{{"x", randn(shapes[v], rng, DType::F64)}};
  };
  split_op.example = [cases = split_op.cases](Rng& rng, OpAttrs& attrs) { return cases(rng, attrs, 0); };
  return {transpose_op, slice_op, concat_op, split_op};
}

}  // namespace echo
