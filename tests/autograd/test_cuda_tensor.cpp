// The Tensor methods' own GPU kernels (autograd/device_kernels.cu: fill, cast,
// axpy) and the caching allocator (autograd/device.cpp), each against the CPU
// path of the same method. All tests need a GPU and skip without one.
#include <cfloat>
#include <cmath>

#include "test_util.h"
#include "caching_allocator_check.h"

using namespace echo;
using namespace echo::testing;

namespace {

// Equal element by element, NaN matching NaN.
void expect_same_values(const std::vector<double>& got, const std::vector<double>& want, const std::string& tag) {
  ASSERT_EQ(got.size(), want.size()) << tag;
  for (size_t i = 0; i < got.size(); ++i) {
    if (std::isnan(want[i])) EXPECT_TRUE(std::isnan(got[i])) << tag << " at " << i;
    else EXPECT_EQ(got[i], want[i]) << tag << " at " << i << " (value " << want[i] << ")";
  }
}

}  // namespace

TEST(CudaTensor, FillAndCopiesMatchCpu) {
  ECHO_REQUIRE_GPU();
  // 70000 elements: more than one block of the fill kernel, not a multiple of 256.
  const Shape shape{7, 10000};
  for (DType dt : {DType::F32, DType::F64, DType::BF16, DType::I32, DType::I64})
    for (double value : {0.0, 7.0, -3.0, 2.7}) {
      if ((dt == DType::I32 || dt == DType::I64) && value != std::floor(value)) continue;
      const std::string tag = std::string(dtype_name(dt)) + " " + std::to_string(value);
      Tensor cpu = Tensor::full(shape, value, dt);
      Tensor gpu = Tensor::full(shape, value, dt, Device::CUDA);
      expect_same_values(gpu.to_vector(), cpu.to_vector(), tag);
      // Device-to-device copies keep every element.
      expect_same_values(gpu.clone().to_vector(), cpu.to_vector(), tag + " clone");
      Tensor target = Tensor::zeros(shape, dt, Device::CUDA);
      target.copy_(gpu);
      expect_same_values(target.to_vector(), cpu.to_vector(), tag + " copy_");
    }
}

TEST(CudaTensor, PoisonedEmptyIsNan) {
  ECHO_REQUIRE_GPU();
  PoisonGuard poison;
  for (DType dt : {DType::F32, DType::F64, DType::BF16})
    for (double v : Tensor::empty({3, 333}, dt, Device::CUDA).to_vector()) ASSERT_TRUE(std::isnan(v)) << dtype_name(dt);
}

// f32 <-> f64 and f32 <-> bf16 on the device give the CPU's results bit for bit:
// round to nearest even (ties 1 + 2^-8 down, 1 + 3·2^-8 up), overflow to inf,
// subnormals, signed zeros, infinities and NaN.
TEST(CudaTensor, CastsMatchCpu) {
  ECHO_REQUIRE_GPU();
  Rng rng(11);
  std::vector<double> values = {0.0,         -0.0,        1.0,      1.0 + 0x1p-8, 1.0 + 3 * 0x1p-8, -(1.0 + 0x1p-8),
                                1.0 + 0x1p-30, 3.0e38,    FLT_MAX,  -FLT_MAX,    1e-40,            -1e-42,
                                1e-45,       INFINITY,    -INFINITY, NAN,        65504.0,          0.1};
  for (int i = 0; i < 5000; ++i) values.push_back(rng.normal() * std::pow(10.0, rng.uniform(-8, 8)));
  const Shape shape{static_cast<int64_t>(values.size())};
  Tensor f64 = Tensor::from_vector(values, shape, DType::F64);
  Tensor f64_gpu = f64.to(Device::CUDA);
  Tensor f32 = f64.to(DType::F32), f32_gpu = f64_gpu.to(DType::F32);
  expect_same_values(f32_gpu.to_vector(), f32.to_vector(), "f64 -> f32");
  expect_same_values(f32_gpu.to(DType::F64).to_vector(), f32.to(DType::F64).to_vector(), "f32 -> f64");
  Tensor bf16 = f32.to(DType::BF16), bf16_gpu = f32_gpu.to(DType::BF16);
  expect_same_values(bf16_gpu.to_vector(), bf16.to_vector(), "f32 -> bf16");
  expect_same_values(bf16_gpu.to(DType::F32).to_vector(), bf16.to(DType::F32).to_vector(), "bf16 -> f32");
  // The tie cases really are ties resolved to even (guards the reference itself).
  const auto b = bf16.to_vector();
  EXPECT_EQ(b[3], 1.0);
  EXPECT_EQ(b[4], 1.0 + 0x1p-6);
  EXPECT_TRUE(std::isinf(b[8]));
}

// dst += alpha·src. nvcc contracts the update into one fused multiply-add, the
// CPU build rounds twice, so the results agree to rounding, not bitwise.
TEST(CudaTensor, AddScaledMatchesCpu) {
  ECHO_REQUIRE_GPU();
  Rng rng(12);
  for (DType dt : {DType::F32, DType::F64}) {
    const double tol = dt == DType::F32 ? 1e-6 : 1e-15;
    Tensor dst = rnd({3, 3001}, rng, dt), src = rnd({3, 3001}, rng, dt);
    Tensor dst_gpu = dst.to(Device::CUDA);
    dst.add_(src, 0.37);
    dst_gpu.add_(src.to(Device::CUDA), 0.37);
    EXPECT_LT(max_rel_diff(dst_gpu.to_vector(), dst.to_vector()), tol) << dtype_name(dt) << " device src";
    // A source on the other device (and dtype) is converted first.
    Tensor other = rnd({3, 3001}, rng, DType::F64);
    dst.add_(other, -1.5);
    dst_gpu.add_(other, -1.5);
    EXPECT_LT(max_rel_diff(dst_gpu.to_vector(), dst.to_vector()), tol) << dtype_name(dt) << " host f64 src";
  }
}

TEST(CudaTensor, CachingAllocatorReusesBlocks) {
  ECHO_REQUIRE_GPU();
  check_caching_allocator(Device::CUDA, cuda_allocator_stats, cuda_empty_cache);
}
