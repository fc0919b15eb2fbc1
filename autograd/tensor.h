// Tensor: a dtype, a device, a shape and a reference-counted contiguous storage,
// plus the autograd fields (requires_grad, grad, grad_fn).
//
// Design choices (docs/engine.md explains them):
//  * Every tensor is contiguous and row-major. A reshape is a view (same storage);
//    transpose/slice/concat are copies. Ops never deal with strides.
//  * Storage is shared by reference counting and carries a version counter that
//    every in-place write bumps, so that the tape can refuse to use a saved tensor
//    that was modified after it was saved.
#pragma once

#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace echo {

enum class DType { F32, F64, BF16, I32, I64 };
enum class Device { CPU, CUDA };

using Shape = std::vector<int64_t>;

const char* dtype_name(DType t);
const char* device_name(Device d);
size_t dtype_size(DType t);
bool is_floating(DType t);
std::string shape_str(const Shape& s);
int64_t shape_numel(const Shape& s);

// Raw bytes on one device; freed through the allocator of that device.
struct Storage {
  void* data = nullptr;
  size_t bytes = 0;
  Device device = Device::CPU;
  int64_t version = 0;  // bumped by every in-place write
  Storage(size_t bytes, Device device);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;
};

struct Node;
struct TensorImpl;

class Tensor {
 public:
  Tensor() = default;
  explicit Tensor(std::shared_ptr<TensorImpl> impl) : impl_(std::move(impl)) {}

  // ---- creation -------------------------------------------------------------
  // empty(): uninitialised, unless poisoning is on (tests): then floating
  // tensors are filled with NaN so that an element an op forgets to write fails.
  static Tensor empty(const Shape& shape, DType dtype = DType::F32, Device device = Device::CPU);
  static Tensor zeros(const Shape& shape, DType dtype = DType::F32, Device device = Device::CPU);
  static Tensor full(const Shape& shape, double value, DType dtype = DType::F32,
                     Device device = Device::CPU);
  static Tensor from_vector(const std::vector<double>& values, const Shape& shape,
                            DType dtype = DType::F32, Device device = Device::CPU);
  static Tensor from_ints(const std::vector<int64_t>& values, const Shape& shape,
                          DType dtype = DType::I32, Device device = Device::CPU);
  static Tensor scalar(double value, DType dtype = DType::F32, Device device = Device::CPU) {
    return from_vector({value}, {1}, dtype, device);
  }

  // ---- metadata ---------------------------------------------------------------
  bool defined() const { return impl_ != nullptr; }
  const Shape& shape() const;
  int ndim() const { return static_cast<int>(shape().size()); }
  int64_t size(int dim) const;  // negative dims count from the end
  int64_t numel() const;
  DType dtype() const;
  Device device() const;
  size_t nbytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype()); }
  std::string describe() const;  // "f32[2,3] cpu"

  // ---- data access --------------------------------------------------------------
  // Typed pointer; checks that T matches the dtype. Use on the tensor's device.
  template <typename T> T* data();
  template <typename T> const T* data() const;
  void* raw();
  const void* raw() const;

  // ---- copies and views ---------------------------------------------------------
  Tensor to(Device device) const;  // differentiable
  Tensor to(DType dtype) const;    // differentiable between floating types
  Tensor clone() const;            // differentiable deep copy
  Tensor detach() const;           // shares storage, no grad_fn
  Tensor reshape(const Shape& shape) const;  // view; one -1 allowed; differentiable
  std::vector<double> to_vector() const;     // host copy as doubles
  std::vector<int64_t> to_int_vector() const;
  double item() const;                       // single-element tensor

  // ---- in-place (bump the version counter) --------------------------------------
  void fill_(double value);
  void copy_(const Tensor& src);          // same shape, any device/dtype
  void add_(const Tensor& other, double alpha = 1.0);  // this += alpha*other (same shape)
  void bump_version();
  int64_t version() const;

  // ---- autograd -----------------------------------------------------------------
  bool requires_grad() const;
  Tensor& set_requires_grad(bool flag = true);
  Tensor grad() const;          // undefined until a backward reached it
  void set_grad(const Tensor& g);
  void zero_grad();             // drop the gradient buffer
  std::shared_ptr<Node> grad_fn() const;
  bool is_leaf() const;
  void retain_grad();  // keep .grad of a non-leaf after backward
  // Reverse pass from this tensor. Without an argument the tensor must have one
  // element and the seed is 1.
  void backward(const Tensor& seed = Tensor()) const;

  TensorImpl* impl() const { return impl_.get(); }
  const std::shared_ptr<TensorImpl>& impl_ptr() const { return impl_; }
  bool same(const Tensor& o) const { return impl_ == o.impl_; }

 private:
  std::shared_ptr<TensorImpl> impl_;
};

struct TensorImpl {
  std::shared_ptr<Storage> storage;
  Shape shape;
  int64_t numel = 0;
  DType dtype = DType::F32;
  bool requires_grad = false;
  bool retain_grad = false;
  Tensor grad;
  std::shared_ptr<Node> grad_fn;
};

// Poison uninitialised floating tensors with NaN (for tests; off by default).
void set_poison_uninitialized(bool on);
bool poison_uninitialized();

// Helpers for op writers.
template <typename T> DType dtype_of();
template <> inline DType dtype_of<float>() { return DType::F32; }
template <> inline DType dtype_of<double>() { return DType::F64; }
template <> inline DType dtype_of<int32_t>() { return DType::I32; }
template <> inline DType dtype_of<int64_t>() { return DType::I64; }
template <> inline DType dtype_of<uint16_t>() { return DType::BF16; }

template <typename T> T* Tensor::data() {
  if (dtype() != dtype_of<T>())
    throw std::runtime_error(std::string("tensor data<") + dtype_name(dtype_of<T>()) +
                             "> requested on a " + dtype_name(dtype()) + " tensor");
  return static_cast<T*>(raw());
}
template <typename T> const T* Tensor::data() const {
  return const_cast<Tensor*>(this)->data<T>();
}

// Calls f(T{}) with T = float or double according to the dtype; anything else throws.
template <typename F> void dispatch_floating(DType t, const char* op, F&& f) {
  if (t == DType::F32) f(float{});
  else if (t == DType::F64) f(double{});
  else throw std::runtime_error(std::string(op) + ": unsupported dtype " + dtype_name(t) +
                                " (CPU ops run in f32 or f64)");
}

}  // namespace echo

