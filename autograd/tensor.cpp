#include "autograd/tensor.h"

#include "autograd/parallel.h"

#include <cmath>
#include <cstring>
#include <limits>
#include <sstream>

#include "autograd/device.h"
#include "autograd/device_kernels.h"
#include "autograd/parallel.h"
#include "autograd/tape.h"

namespace echo {

namespace {
bool g_poison = false;

float bf16_to_float(uint16_t b) {
  uint32_t u = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
uint16_t float_to_bf16(float f) {  // round to nearest even
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if (std::isnan(f)) return 0x7fc0;
  u += 0x7fff + ((u >> 16) & 1);
  return static_cast<uint16_t>(u >> 16);
}

}  // namespace

void set_poison_uninitialized(bool on) { g_poison = on; }
bool poison_uninitialized() { return g_poison; }

const char* dtype_name(DType t) {
  switch (t) {
    case DType::F32: return "f32";
    case DType::F64: return "f64";
    case DType::BF16: return "bf16";
    case DType::I32: return "i32";
    case DType::I64: return "i64";
  }
  return "?";
}
const char* device_name(Device d) { return d == Device::CPU ? "cpu" : "cuda"; }
size_t dtype_size(DType t) {
  switch (t) {
    case DType::F32: return 4;
    case DType::F64: return 8;
    case DType::BF16: return 2;
    case DType::I32: return 4;
    case DType::I64: return 8;
  }
  return 0;
}
bool is_floating(DType t) { return t == DType::F32 || t == DType::F64 || t == DType::BF16; }
std::string shape_str(const Shape& s) {
  std::ostringstream o;
  o << "[";
  for (size_t i = 0; i < s.size(); ++i) o << (i ? "," : "") << s[i];
  o << "]";
  return o.str();
}
int64_t shape_numel(const Shape& s) {
  int64_t n = 1;
  for (auto d : s) {
    if (d < 0) throw std::runtime_error("negative dimension in shape " + shape_str(s));
    n *= d;
  }
  return n;
}

Storage::Storage(size_t b, Device d) : bytes(b), device(d) { data = device_alloc(b, d); }
Storage::~Storage() { device_free(data, bytes, device); }

// ---- creation -------------------------------------------------------------------

Tensor Tensor::empty(const Shape& shape, DType dtype, Device device) {
  auto impl = std::make_shared<TensorImpl>();
  impl->shape = shape;
  impl->numel = shape_numel(shape);
  impl->dtype = dtype;
  impl->storage = std::make_shared<Storage>(static_cast<size_t>(impl->numel) * dtype_size(dtype), device);
  Tensor t(impl);
  if (g_poison && is_floating(dtype)) t.fill_(std::numeric_limits<double>::quiet_NaN());
  return t;
}

Tensor Tensor::zeros(const Shape& shape, DType dtype, Device device) {
  Tensor t = empty(shape, dtype, device);
  t.fill_(0.0);
  return t;
}

Tensor Tensor::full(const Shape& shape, double value, DType dtype, Device device) {
  Tensor t = empty(shape, dtype, device);
  t.fill_(value);
  return t;
}

Tensor Tensor::from_vector(const std::vector<double>& values, const Shape& shape, DType dtype,
                           Device device) {
  if (static_cast<int64_t>(values.size()) != shape_numel(shape))
    throw std::runtime_error("from_vector: " + std::to_string(values.size()) +
                             " values for shape " + shape_str(shape));
  Tensor host = empty(shape, dtype, Device::CPU);
  const int64_t n = host.numel();
  switch (dtype) {
    case DType::F32: { float* p = host.data<float>(); for (int64_t i = 0; i < n; ++i) p[i] = (float)values[i]; break; }
    case DType::F64: { double* p = host.data<double>(); for (int64_t i = 0; i < n; ++i) p[i] = values[i]; break; }
    case DType::BF16: { uint16_t* p = host.data<uint16_t>(); for (int64_t i = 0; i < n; ++i) p[i] = float_to_bf16((float)values[i]); break; }
    case DType::I32: { int32_t* p = host.data<int32_t>(); for (int64_t i = 0; i < n; ++i) p[i] = (int32_t)values[i]; break; }
    case DType::I64: { int64_t* p = host.data<int64_t>(); for (int64_t i = 0; i < n; ++i) p[i] = (int64_t)values[i]; break; }
  }
  return device == Device::CPU ? host : host.to(device);
}

Tensor Tensor::from_ints(const std::vector<int64_t>& values, const Shape& shape, DType dtype,
                         Device device) {
  if (dtype != DType::I32 && dtype != DType::I64)
    throw std::runtime_error("from_ints: dtype must be i32 or i64");
  if (static_cast<int64_t>(values.size()) != shape_numel(shape))
    throw std::runtime_error("from_ints: " + std::to_string(values.size()) + " values for shape " +
                             shape_str(shape));
  Tensor host = empty(shape, dtype, Device::CPU);
  for (size_t i = 0; i < values.size(); ++i) {
    if (dtype == DType::I32) host.data<int32_t>()[i] = static_cast<int32_t>(values[i]);
    else host.data<int64_t>()[i] = values[i];
  }
  return device == Device::CPU ? host : host.to(device);
}

// ---- metadata -----------------------------------------------------------------

static const TensorImpl& checked(const std::shared_ptr<TensorImpl>& p) {
  if (!p) throw std::runtime_error("use of an undefined tensor");
  return *p;
}
const Shape& Tensor::shape() const { return checked(impl_).shape; }
int64_t Tensor::numel() const { return checked(impl_).numel; }
DType Tensor::dtype() const { return checked(impl_).dtype; }
Device Tensor::device() const { return checked(impl_).storage->device; }
int64_t Tensor::size(int dim) const {
  const Shape& s = shape();
  int d = dim < 0 ? dim + static_cast<int>(s.size()) : dim;
  if (d < 0 || d >= static_cast<int>(s.size()))
    throw std::runtime_error("dimension " + std::to_string(dim) + " out of range for shape " + shape_str(s));
  return s[d];
}
std::string Tensor::describe() const {
  if (!impl_) return "undefined";
  return std::string(dtype_name(dtype())) + shape_str(shape()) + " " + device_name(device());
}
void* Tensor::raw() { return checked(impl_).storage->data; }
const void* Tensor::raw() const { return checked(impl_).storage->data; }

// ---- copies ---------------------------------------------------------------------

Tensor Tensor::detach() const {
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = checked(impl_).storage;
  impl->shape = impl_->shape;
  impl->numel = impl_->numel;
  impl->dtype = impl_->dtype;
  return Tensor(impl);
}

Tensor Tensor::reshape(const Shape& new_shape) const {
  Shape s = new_shape;
  int infer = -1;
  int64_t known = 1;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == -1) {
      if (infer >= 0) throw std::runtime_error("reshape: more than one -1 in " + shape_str(new_shape));
      infer = static_cast<int>(i);
    } else {
      known *= s[i];
    }
  }
  if (infer >= 0) s[infer] = known ? numel() / known : 0;
  if (shape_numel(s) != numel())
    throw std::runtime_error("reshape: cannot view " + describe() + " as " + shape_str(new_shape));
  Tensor out = detach();
  out.impl_->shape = s;
  if (any_requires_grad({this})) {
    Shape in_shape = shape();
    record("reshape", {*this}, {out}, {}, [in_shape](Node& node, const std::vector<Tensor>& gy, std::vector<Tensor>& gx) {
      if (!gx[0].defined()) return;
      if (node.grad_is_fresh(0)) gx[0].copy_(gy[0].reshape(in_shape));
      else gx[0].add_(gy[0].reshape(in_shape));
    }).writes_fresh_grads = true;
  }
  return out;
}

// Copy with conversion between any two floating types / same int types, any devices.
static void convert_into(Tensor& dst, const Tensor& src) {
  if (dst.numel() != src.numel())
    throw std::runtime_error("copy_: size mismatch " + src.describe() + " -> " + dst.describe());
  const int64_t n = src.numel();
  if (dst.dtype() == src.dtype()) {
    device_copy(dst.raw(), dst.device(), src.raw(), src.device(), dst.nbytes());
    return;
  }
  // Different dtypes: convert on the source's device, then move.
  if (src.device() == Device::CPU && dst.device() == Device::CPU) {
    auto get = [&](int64_t i) -> double {
      switch (src.dtype()) {
        case DType::F32: return src.data<float>()[i];
        case DType::F64: return src.data<double>()[i];
        case DType::BF16: return bf16_to_float(src.data<uint16_t>()[i]);
        case DType::I32: return src.data<int32_t>()[i];
        case DType::I64: return static_cast<double>(src.data<int64_t>()[i]);
      }
      return 0;
    };
    for (int64_t i = 0; i < n; ++i) {
      double v = get(i);
      switch (dst.dtype()) {
        case DType::F32: dst.data<float>()[i] = static_cast<float>(v); break;
        case DType::F64: dst.data<double>()[i] = v; break;
        case DType::BF16: dst.data<uint16_t>()[i] = float_to_bf16(static_cast<float>(v)); break;
        case DType::I32: dst.data<int32_t>()[i] = static_cast<int32_t>(v); break;
        case DType::I64: dst.data<int64_t>()[i] = static_cast<int64_t>(v); break;
      }
    }
    return;
  }
  if (src.device() == Device::CUDA && dst.device() == Device::CUDA) {
#if ECHO_HAVE_CUDA
    DType a = src.dtype(), b = dst.dtype();
    if (a == DType::F32 && b == DType::F64) return devk::cast_f32_to_f64(dst.data<double>(), src.data<float>(), n);
    if (a == DType::F64 && b == DType::F32) return devk::cast_f64_to_f32(dst.data<float>(), src.data<double>(), n);
    if (a == DType::F32 && b == DType::BF16) return devk::cast_f32_to_bf16(dst.data<uint16_t>(), src.data<float>(), n);
    if (a == DType::BF16 && b == DType::F32) return devk::cast_bf16_to_f32(dst.data<float>(), src.data<uint16_t>(), n);
#endif
    // Other pairs: through the host.
  }
  Tensor host_src = src.device() == Device::CPU ? src : src.to(Device::CPU);
  Tensor host_dst = Tensor::empty(dst.shape(), dst.dtype(), Device::CPU);
  convert_into(host_dst, host_src);
  device_copy(dst.raw(), dst.device(), host_dst.raw(), Device::CPU, dst.nbytes());
}

Tensor Tensor::to(Device device) const {
  if (device == this->device()) return *this;
  Tensor out = empty(shape(), dtype(), device);
  convert_into(out, *this);
  if (any_requires_grad({this})) {
    Device from = this->device();
    record("to_device", {*this}, {out}, {}, [from](Node&, const std::vector<Tensor>& gy, std::vector<Tensor>& gx) {
      if (gx[0].defined()) gx[0].add_(gy[0].to(from));
    });
  }
  return out;
}

Tensor Tensor::to(DType dtype) const {
  if (dtype == this->dtype()) return *this;
  Tensor out = empty(shape(), dtype, device());
  convert_into(out, *this);
  if (any_requires_grad({this}) && is_floating(dtype) && is_floating(this->dtype())) {
    DType from = this->dtype();
    record("to_dtype", {*this}, {out}, {}, [from](Node&, const std::vector<Tensor>& gy, std::vector<Tensor>& gx) {
      if (gx[0].defined()) gx[0].add_(gy[0].to(from));
    });
  }
  return out;
}

Tensor Tensor::clone() const {
  Tensor out = empty(shape(), dtype(), device());
  convert_into(out, *this);
  if (any_requires_grad({this})) {
    record("clone", {*this}, {out}, {}, [](Node&, const std::vector<Tensor>& gy, std::vector<Tensor>& gx) {
      if (gx[0].defined()) gx[0].add_(gy[0]);
    });
  }
  return out;
}

std::vector<double> Tensor::to_vector() const {
  Tensor host = Tensor::empty(shape(), DType::F64, Device::CPU);
  convert_into(host, *this);
  const double* p = host.data<double>();
  return std::vector<double>(p, p + numel());
}

std::vector<int64_t> Tensor::to_int_vector() const {
  Tensor host = Tensor::empty(shape(), DType::I64, Device::CPU);
  convert_into(host, *this);
  const int64_t* p = host.data<int64_t>();
  return std::vector<int64_t>(p, p + numel());
}

double Tensor::item() const {
  if (numel() != 1) throw std::runtime_error("item() on a tensor of " + std::to_string(numel()) + " elements");
  return to_vector()[0];
}

// ---- in-place ----------------------------------------------------------------------

void Tensor::bump_version() { ++checked(impl_).storage->version; }
int64_t Tensor::version() const { return checked(impl_).storage->version; }

void Tensor::fill_(double value) {
  const int64_t n = numel();
  if (device() == Device::CPU) {
    switch (dtype()) {
      case DType::F32: { float* p = data<float>(); for (int64_t i = 0; i < n; ++i) p[i] = (float)value; break; }
      case DType::F64: { double* p = data<double>(); for (int64_t i = 0; i < n; ++i) p[i] = value; break; }
      case DType::BF16: { uint16_t* p = data<uint16_t>(); uint16_t b = float_to_bf16((float)value); for (int64_t i = 0; i < n; ++i) p[i] = b; break; }
      case DType::I32: { int32_t* p = data<int32_t>(); for (int64_t i = 0; i < n; ++i) p[i] = (int32_t)value; break; }
      case DType::I64: { int64_t* p = data<int64_t>(); for (int64_t i = 0; i < n; ++i) p[i] = (int64_t)value; break; }
    }
  } else {
#if ECHO_HAVE_CUDA
    if (value == 0.0) devk::fill_bytes_zero(raw(), static_cast<int64_t>(nbytes()));
    else if (dtype() == DType::F32) devk::fill_f32(data<float>(), n, (float)value);
    else if (dtype() == DType::F64) devk::fill_f64(data<double>(), n, value);
    else copy_(Tensor::full(shape(), value, dtype(), Device::CPU));
#endif
  }
  bump_version();
}

void Tensor::copy_(const Tensor& src) {
  if (src.shape() != shape())
    throw std::runtime_error("copy_: shape mismatch " + src.describe() + " -> " + describe());
  convert_into(*this, src);
  bump_version();
}

void Tensor::add_(const Tensor& other, double alpha) {
  if (other.numel() != numel())
    throw std::runtime_error("add_: shape mismatch " + other.describe() + " into " + describe());
  Tensor src = other;
  if (src.device() != device() || src.dtype() != dtype()) src = other.detach().to(device()).to(dtype());
  const int64_t n = numel();
  if (device() == Device::CPU) {
    if (dtype() == DType::F32) {
      float* d = data<float>(); const float* s = src.data<float>(); float a = (float)alpha;
      parallel_blocks(n, [&](int64_t i0, int64_t i1) {
#pragma omp simd
        for (int64_t i = i0; i < i1; ++i) d[i] += a * s[i];
      });
    } else if (dtype() == DType::F64) {
      double* d = data<double>(); const double* s = src.data<double>();
      parallel_blocks(n, [&](int64_t i0, int64_t i1) {
#pragma omp simd
        for (int64_t i = i0; i < i1; ++i) d[i] += alpha * s[i];
      });
    } else {
      throw std::runtime_error("add_: unsupported dtype " + describe());
    }
  } else {
#if ECHO_HAVE_CUDA
    if (dtype() == DType::F32) devk::axpy_f32(data<float>(), src.data<float>(), n, (float)alpha);
    else if (dtype() == DType::F64) devk::axpy_f64(data<double>(), src.data<double>(), n, alpha);
    else throw std::runtime_error("add_: unsupported dtype " + describe());
#endif
  }
  bump_version();
}

// ---- autograd fields -------------------------------------------------------------

bool Tensor::requires_grad() const { return impl_ && impl_->requires_grad; }
Tensor& Tensor::set_requires_grad(bool flag) {
  if (flag && !is_floating(dtype()))
    throw std::runtime_error("only floating tensors can require grad, got " + describe());
  if (!flag && impl_->grad_fn) throw std::runtime_error("set_requires_grad(false) on a non-leaf tensor; use detach()");
  checked(impl_);
  impl_->requires_grad = flag;
  return *this;
}
Tensor Tensor::grad() const { return checked(impl_).grad; }
void Tensor::set_grad(const Tensor& g) {
  if (g.defined() && g.shape() != shape())
    throw std::runtime_error("set_grad: gradient " + g.describe() + " for tensor " + describe());
  checked(impl_);
  impl_->grad = g;
}
void Tensor::zero_grad() { checked(impl_); impl_->grad = Tensor(); }
std::shared_ptr<Node> Tensor::grad_fn() const { return checked(impl_).grad_fn; }
bool Tensor::is_leaf() const { return !checked(impl_).grad_fn; }
void Tensor::retain_grad() { checked(impl_); impl_->retain_grad = true; }

void Tensor::backward(const Tensor& seed) const {
  Tensor s = seed;
  if (!s.defined()) {
    if (numel() != 1)
      throw std::runtime_error("backward() without a seed needs a one-element tensor, got " + describe());
    s = Tensor::full(shape(), 1.0, dtype(), device());
  }
  run_backward({*this}, {s});
}

}  // namespace echo
