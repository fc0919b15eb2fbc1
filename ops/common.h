// Small helpers shared by the op files: argument checks that name the op, and
// the one-line device dispatch.
#pragma once

#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "autograd/parallel.h"
#include "autograd/tape.h"
#include "autograd/tensor.h"

namespace echo {

[[noreturn]] inline void op_error(const char* op, const std::string& msg) {
  throw std::runtime_error(std::string(op) + ": " + msg);
}
inline void op_check(bool cond, const char* op, const std::string& msg) {
  if (!cond) op_error(op, msg);
}
// All defined tensors on one device with one floating dtype (f32/f64; f32 on CUDA
// unless the op has float64 kernels too).
inline void check_floating_same(const char* op, std::initializer_list<const Tensor*> ts,
                                bool cuda_float64 = false) {
  const Tensor* first = nullptr;
  for (const Tensor* t : ts) {
    if (!t || !t->defined()) continue;
    if (t->dtype() != DType::F32 && t->dtype() != DType::F64)
      op_error(op, "expected f32 or f64 tensors, got " + t->describe());
    if (!first) { first = t; continue; }
    if (t->dtype() != first->dtype() || t->device() != first->device())
      op_error(op, "mixed tensors " + first->describe() + " and " + t->describe());
  }
  if (first && first->device() == Device::CUDA && first->dtype() != DType::F32 && !cuda_float64)
    op_error(op, "the CUDA backend runs f32; got " + first->describe());
}
inline void check_rank(const char* op, const char* name, const Tensor& t, int rank) {
  if (t.ndim() != rank)
    op_error(op, std::string(name) + " must have rank " + std::to_string(rank) + ", got " + t.describe());
}
inline void check_shape(const char* op, const char* name, const Tensor& t, const Shape& expected) {
  if (t.shape() != expected)
    op_error(op, std::string(name) + " must have shape " + shape_str(expected) + ", got " + t.describe());
}
inline bool on_cuda(const Tensor& t) { return t.defined() && t.device() == Device::CUDA; }

// Throws in a build without CUDA (the branch is never taken there in practice:
// a CUDA tensor cannot be created without the backend).
[[noreturn]] inline void no_cuda_build(const char* op) {
  op_error(op, "this build has no CUDA backend");
}

// Gradient buffers the tape hands out new and unzeroed (autograd/tape.h,
// writes_fresh_grads): a CPU loop is instantiated for both cases with
// with_fresh, and grad_put writes (fresh) or adds.
template <typename F> void with_fresh(bool fresh, F&& f) {
  if (fresh) f(std::true_type());
  else f(std::false_type());
}
template <bool Fresh, typename T> inline void grad_put(T& dst, T value) {
  if constexpr (Fresh) dst = value;
  else dst += value;
}

// A GEMM's beta for gradient buffer i: 0 writes a fresh buffer, 1 adds.
template <typename T> inline T grad_beta(const Node& node, size_t i) { return node.grad_is_fresh(i) ? T(0) : T(1); }

template <typename T> inline T* ptr(Tensor& t) { return t.defined() ? t.data<T>() : nullptr; }
template <typename T> inline const T* cptr(const Tensor& t) { return t.defined() ? t.data<T>() : nullptr; }

}  // namespace echo
