// The emulated CUDA device (cuda/emu/, docs/cuda.md): its execution model, its
// runtime subset, and proof that it catches the bugs it exists to catch. Each
// "Planted" test launches a small kernel with one deliberate defect and checks
// that the defect is reported, by an error or a failing comparison that names
// the kernel.
#include "test_util.h"

#if defined(ECHO_CUDA_EMULATED)

#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstring>
#include <numeric>

#include "autograd/cuda_launch.h"

namespace {

using echo::emu::Schedule;

// ---- small device buffers ---------------------------------------------------------------
template <class T> struct DeviceBuffer {
  T* ptr = nullptr;
  size_t n = 0;
  explicit DeviceBuffer(size_t count) : n(count) { EXPECT_EQ(cudaMalloc(&ptr, count * sizeof(T)), cudaSuccess); }
  DeviceBuffer(const std::vector<T>& host) : DeviceBuffer(host.size()) {
    EXPECT_EQ(cudaMemcpy(ptr, host.data(), n * sizeof(T), cudaMemcpyHostToDevice), cudaSuccess);
  }
  ~DeviceBuffer() { cudaFree(ptr); }
  std::vector<T> host() const {
    std::vector<T> h(n);
    EXPECT_EQ(cudaMemcpy(h.data(), ptr, n * sizeof(T), cudaMemcpyDeviceToHost), cudaSuccess);
    return h;
  }
};

struct ScheduleGuard {
  ~ScheduleGuard() { echo::emu::set_schedule(Schedule::InOrder); }
};

// Runs `launch` under the three schedules; returns the three results.
template <class F> auto under_schedules(F launch) {
  ScheduleGuard guard;
  std::vector<decltype(launch())> out;
  for (Schedule s : {Schedule::InOrder, Schedule::Reversed, Schedule::Random}) {
    echo::emu::set_schedule(s, 12345);
    out.push_back(launch());
  }
  return out;
}

bool bit_equal(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

std::string last_error_message() {
  cudaError_t e = cudaGetLastError();
  return e == cudaSuccess ? std::string() : std::string(cudaGetErrorString(e));
}

// ---- kernels of the execution-model tests ----------------------------------------------------------
__global__ void index_kernel(int* out) {
  const int t = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
  const int b = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
  const int per_block = blockDim.x * blockDim.y * blockDim.z;
  out[b * per_block + t] = 1000000 * blockIdx.z + 100000 * blockIdx.y + 10000 * blockIdx.x + 100 * threadIdx.z +
                           10 * threadIdx.y + threadIdx.x;
}

// Reverses each block's slice through shared memory: right only with the barrier.
__global__ void reverse_kernel(const float* in, float* out) {
  ECHO_SHARED(float, tile, [256]);
  const int t = threadIdx.x, base = blockIdx.x * blockDim.x;
  tile[t] = in[base + t];
  __syncthreads();
  out[base + t] = tile[blockDim.x - 1 - t];
}

__global__ void warp_kernel(const float* in, float* sum_xor, float* from_down, float* from_up, float* broadcast,
                            unsigned* ballots, int* any_all, float* seg_sum) {
  const int t = threadIdx.x, lane = t % 32;
  const float v = in[t];
  float s = v;
  for (int off = 16; off > 0; off >>= 1) s += __shfl_xor_sync(0xffffffffu, s, off);
  sum_xor[t] = s;
  from_down[t] = __shfl_down_sync(0xffffffffu, v, 3);
  from_up[t] = __shfl_up_sync(0xffffffffu, v, 5);
  broadcast[t] = __shfl_sync(0xffffffffu, v, 7);
  const unsigned ballot = __ballot_sync(0xffffffffu, v > 0.f);
  if (lane == 0) ballots[t / 32] = ballot;
  any_all[t] = __any_sync(0xffffffffu, v > 100.f) * 2 + __all_sync(0xffffffffu, v > -100.f);
  float g = v;  // sums within segments of 8 lanes
  for (int off = 4; off > 0; off >>= 1) g += __shfl_xor_sync(0xffffffffu, g, off, 8);
  seg_sum[t] = g;
}

__global__ void barrier_reduce_kernel(const int* flags, int* out) {
  const int p = flags[threadIdx.x];
  const int o = __syncthreads_or(p), a = __syncthreads_and(p), c = __syncthreads_count(p);
  if (threadIdx.x == 0) {
    out[0] = o;
    out[1] = a;
    out[2] = c;
  }
}

__global__ void atomic_kernel(int* counter, float* total) {
  atomicAdd(counter, 1);
  atomicAdd(total, 0.5f);
}

__global__ void dynamic_shared_kernel(float* out, int n) {
  ECHO_DYNAMIC_SHARED(float, buf);
  for (int i = threadIdx.x; i < n; i += blockDim.x) buf[i] = (float)i;
  __syncthreads();
  float s = 0;
  for (int i = 0; i < n; ++i) s += buf[i];
  if (threadIdx.x == 0) out[blockIdx.x] = s;
}

// ---- planted defects ---------------------------------------------------------------------------------
// 1. The barrier between the shared write and the neighbour's read is missing.
__global__ void planted_missing_barrier_kernel(const float* in, float* out) {
  ECHO_SHARED(float, tile, [64]);
  const int t = threadIdx.x;
  tile[t] = in[t];
  out[t] = tile[(t + 1) % blockDim.x];  // __syncthreads() belongs before this line
}
// 2. Off-by-one bound: `<=` writes one element past the end.
__global__ void planted_off_by_one_kernel(float* y, int n) {
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i <= n; i += gridDim.x * blockDim.x) y[i] = 1.f;
}
// 3. Reads a shared element that no thread wrote (only the first half is filled).
__global__ void planted_unwritten_shared_kernel(float* out) {
  ECHO_SHARED(float, tile, [64]);
  const int t = threadIdx.x;
  if (t < 32) tile[t] = (float)t;
  __syncthreads();
  out[t] = tile[63 - t];
}
// 4. A block of 2048 threads; 5. 64 KB of dynamic shared memory.
__global__ void planted_big_block_kernel(float* out) { out[threadIdx.x] = 1.f; }
__global__ void planted_big_shared_kernel(float* out) {
  ECHO_DYNAMIC_SHARED(float, buf);
  buf[threadIdx.x] = 2.f;
  __syncthreads();
  out[threadIdx.x] = buf[threadIdx.x];
}
// 6. Threads past n return before the block's barrier.
__global__ void planted_early_return_kernel(const float* in, float* out, int n) {
  ECHO_SHARED(float, tile, [64]);
  const int t = threadIdx.x;
  if (t >= n) return;
  tile[t] = in[t];
  __syncthreads();
  out[t] = tile[n - 1 - t];
}
// 7. A shuffle from lane 32 of a 32-lane warp.
__global__ void planted_bad_lane_kernel(const float* in, float* out) {
  out[threadIdx.x] = __shfl_sync(0xffffffffu, in[threadIdx.x], threadIdx.x + 1);
}
// 8. Half the warp waits at __syncwarp, the other half at __syncthreads.
__global__ void planted_deadlock_kernel(float* out) {
  if (threadIdx.x < 16) __syncwarp();
  else __syncthreads();
  out[threadIdx.x] = 0.f;
}
// 9. A host pointer given to a kernel.
__global__ void planted_host_pointer_kernel(float* out) { out[threadIdx.x] = 3.f; }

}  // namespace

// ---- the execution model ------------------------------------------------------------------------
TEST(Emulator, ThreadAndBlockIndicesCoverAThreeDimensionalGrid) {
  const dim3 grid(3, 2, 2), block(4, 3, 2);
  DeviceBuffer<int> out(3 * 2 * 2 * 4 * 3 * 2);
  ECHO_LAUNCH(index_kernel, grid, block)(out.ptr);
  ASSERT_EQ(cudaGetLastError(), cudaSuccess);
  std::vector<int> h = out.host();
  size_t i = 0;
  for (unsigned bz = 0; bz < 2; ++bz)
    for (unsigned by = 0; by < 2; ++by)
      for (unsigned bx = 0; bx < 3; ++bx)
        for (unsigned tz = 0; tz < 2; ++tz)
          for (unsigned ty = 0; ty < 3; ++ty)
            for (unsigned tx = 0; tx < 4; ++tx, ++i)
              ASSERT_EQ(h[i], (int)(1000000 * bz + 100000 * by + 10000 * bx + 100 * tz + 10 * ty + tx)) << i;
}

TEST(Emulator, SyncthreadsIsABarrierUnderEverySchedule) {
  std::vector<float> in(3 * 256);
  std::iota(in.begin(), in.end(), 1.f);
  DeviceBuffer<float> x(in), y(in.size());
  auto results = under_schedules([&] {
    ECHO_LAUNCH(reverse_kernel, 3, 256)(x.ptr, y.ptr);
    return y.host();
  });
  for (int b = 0; b < 3; ++b)
    for (int t = 0; t < 256; ++t) ASSERT_EQ(results[0][b * 256 + t], in[b * 256 + 255 - t]);
  EXPECT_TRUE(bit_equal(results[0], results[1]));
  EXPECT_TRUE(bit_equal(results[0], results[2]));
}

TEST(Emulator, WarpShufflesVotesAndSegments) {
  const int n = 64;
  std::vector<float> in(n);
  for (int i = 0; i < n; ++i) in[i] = (i % 5 == 0 ? -1.f : 1.f) * (float)(i + 1);
  DeviceBuffer<float> x(in), sx(n), down(n), up(n), bc(n), seg(n);
  DeviceBuffer<unsigned> ballots(2);
  DeviceBuffer<int> anyall(n);
  ECHO_LAUNCH(warp_kernel, 1, n)(x.ptr, sx.ptr, down.ptr, up.ptr, bc.ptr, ballots.ptr, anyall.ptr, seg.ptr);
  ASSERT_EQ(cudaGetLastError(), cudaSuccess);
  auto hs = sx.host(), hd = down.host(), hu = up.host(), hb = bc.host(), hg = seg.host();
  auto hv = ballots.host();
  auto ha = anyall.host();
  for (int w = 0; w < 2; ++w) {
    float total = 0;
    unsigned ballot = 0;
    for (int l = 0; l < 32; ++l) {
      total += in[w * 32 + l];
      if (in[w * 32 + l] > 0) ballot |= 1u << l;
    }
    EXPECT_EQ(hv[w], ballot);
    for (int l = 0; l < 32; ++l) {
      const int t = w * 32 + l;
      EXPECT_FLOAT_EQ(hs[t], total);
      EXPECT_EQ(hd[t], l + 3 < 32 ? in[t + 3] : in[t]) << "shfl_down beyond the warp returns the lane's own value";
      EXPECT_EQ(hu[t], l >= 5 ? in[t - 5] : in[t]);
      EXPECT_EQ(hb[t], in[w * 32 + 7]);
      EXPECT_EQ(ha[t], 1);  // none > 100, all > -100
      float segment = 0;
      for (int k = 0; k < 8; ++k) segment += in[w * 32 + (l / 8) * 8 + k];
      EXPECT_FLOAT_EQ(hg[t], segment);
    }
  }
}

TEST(Emulator, ReducingBarriers) {
  std::vector<int> flags(96, 0);
  flags[5] = flags[70] = 1;
  DeviceBuffer<int> f(flags), out(3);
  ECHO_LAUNCH(barrier_reduce_kernel, 1, 96)(f.ptr, out.ptr);
  EXPECT_EQ(out.host(), (std::vector<int>{1, 0, 2}));
  std::fill(flags.begin(), flags.end(), 1);
  DeviceBuffer<int> g(flags);
  ECHO_LAUNCH(barrier_reduce_kernel, 1, 96)(g.ptr, out.ptr);
  EXPECT_EQ(out.host(), (std::vector<int>{1, 1, 96}));
}

TEST(Emulator, AtomicsCountEveryThreadOfEveryBlock) {
  DeviceBuffer<int> counter(std::vector<int>{0});
  DeviceBuffer<float> total(std::vector<float>{0.f});
  ECHO_LAUNCH(atomic_kernel, 37, 96)(counter.ptr, total.ptr);
  EXPECT_EQ(counter.host()[0], 37 * 96);
  EXPECT_EQ(total.host()[0], 37 * 96 * 0.5f);
}

TEST(Emulator, DynamicSharedMemoryIsSizedByTheLaunchAndOptInAbove48KB) {
  DeviceBuffer<float> out(4);
  ECHO_LAUNCH(dynamic_shared_kernel, 4, 128, 1000 * sizeof(float))(out.ptr, 1000);
  ASSERT_EQ(cudaGetLastError(), cudaSuccess);
  for (float v : out.host()) EXPECT_EQ(v, 999.f * 1000.f / 2.f);
  const int big = 20000;  // 80 KB: needs the attribute
  ASSERT_EQ(cudaFuncSetAttribute(dynamic_shared_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, big * 4),
            cudaSuccess);
  ECHO_LAUNCH(dynamic_shared_kernel, 2, 128, big * sizeof(float))(out.ptr, big);
  ASSERT_EQ(cudaGetLastError(), cudaSuccess);
  float expected = 0;  // the kernel's sum, in its order
  for (int i = 0; i < big; ++i) expected += (float)i;
  EXPECT_EQ(out.host()[1], expected);
  EXPECT_NE(cudaFuncSetAttribute(dynamic_shared_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, 300 * 1024),
            cudaSuccess)
      << "above the 227 KB of sm_90";
  cudaGetLastError();
}

TEST(Emulator, FreshDeviceMemoryIsPoisonedWithNaN) {
  DeviceBuffer<float> f(33);
  for (float v : f.host()) EXPECT_TRUE(std::isnan(v));
  DeviceBuffer<double> d(17);
  for (double v : d.host()) EXPECT_TRUE(std::isnan(v));
}

TEST(Emulator, CopiesOutsideAnAllocationAreRefused) {
  DeviceBuffer<float> a(10);
  std::vector<float> host(11, 0.f);
  EXPECT_EQ(cudaMemcpy(a.ptr, host.data(), 11 * sizeof(float), cudaMemcpyHostToDevice), cudaErrorInvalidValue);
  EXPECT_NE(last_error_message().find("not inside one device allocation"), std::string::npos);
  EXPECT_EQ(cudaMemcpy(host.data(), host.data() + 1, 4, cudaMemcpyDeviceToHost), cudaErrorInvalidValue);
  cudaGetLastError();
}

TEST(Emulator, Bfloat16AndHalfRoundToNearestEven) {
  auto bf = [](float f) { return __float2bfloat16_rn(f).x; };
  EXPECT_EQ(bf(1.0f), 0x3f80);
  EXPECT_EQ(bf(1.0f + 1.0f / 256), 0x3f80);             // a tie: to the even mantissa (…0)
  EXPECT_EQ(bf(1.0f + 3.0f / 256), 0x3f82);             // a tie: to the even mantissa (…2)
  EXPECT_EQ(bf(1.0f + 1.0f / 256 + 1.0f / 4096), 0x3f81);  // above the tie: up
  EXPECT_EQ(bf(-2.5f), 0xc020);
  EXPECT_EQ(bf(3.4e38f), 0x7f80) << "rounds up to infinity";
  EXPECT_TRUE(std::isnan(__bfloat162float(__float2bfloat16_rn(std::nanf("")))));
  for (float f : {0.1f, -3.75f, 1e-30f, 65504.f, 7.0e37f})
    EXPECT_LE(std::fabs(__bfloat162float(__float2bfloat16_rn(f)) - f), std::fabs(f) / 256) << f;
  auto h = [](float f) { return __float2half_rn(f).x; };
  EXPECT_EQ(h(1.0f), 0x3c00);
  EXPECT_EQ(h(65504.f), 0x7bff);
  EXPECT_EQ(h(65520.f), 0x7c00) << "the tie above the largest half rounds to infinity";
  EXPECT_EQ(h(1.0f + 1.0f / 2048), 0x3c00);  // tie to even
  EXPECT_EQ(h(std::ldexp(1.0f, -24)), 0x0001);  // smallest subnormal
  EXPECT_EQ(h(std::ldexp(1.0f, -25)), 0x0000);  // the tie below it: to even (zero)
  EXPECT_EQ(h(std::ldexp(3.0f, -25)), 0x0002);  // 1.5 subnormal units: to even (2)
  for (float f : {0.1f, -3.75f, 1e-6f, 1000.5f, std::ldexp(5.0f, -22)})
    EXPECT_EQ(__half2float(__float2half_rn(__half2float(__float2half_rn(f)))), __half2float(__float2half_rn(f)));
}

TEST(Emulator, CublasIsColumnMajorAndIgnoresCWhenBetaIsZero) {
  const int m = 5, n = 3, k = 4;
  std::vector<float> A(m * k), B(k * n), C(m * n, std::nanf(""));
  for (int i = 0; i < m * k; ++i) A[i] = 0.25f * (i % 7) - 0.5f;
  for (int i = 0; i < k * n; ++i) B[i] = 0.5f * (i % 5) - 1.f;
  DeviceBuffer<float> dA(A), dB(B), dC(C);
  cublasHandle_t handle;
  ASSERT_EQ(cublasCreate(&handle), CUBLAS_STATUS_SUCCESS);
  const float one = 1.f, zero = 0.f;
  ASSERT_EQ(cublasSgemm(handle, CUBLAS_OP_N, CUBLAS_OP_N, m, n, k, &one, dA.ptr, m, dB.ptr, k, &zero, dC.ptr, m),
            CUBLAS_STATUS_SUCCESS);
  auto got = dC.host();
  for (int i = 0; i < m; ++i)
    for (int j = 0; j < n; ++j) {
      float s = 0;
      for (int p = 0; p < k; ++p) s += A[p * m + i] * B[j * k + p];  // column-major A[i,p], B[p,j]
      EXPECT_FLOAT_EQ(got[j * m + i], s);
    }
  // bf16 operands through cublasGemmEx: the same product of the rounded values.
  std::vector<__nv_bfloat16> Ab(m * k), Bb(k * n);
  for (int i = 0; i < m * k; ++i) Ab[i] = __float2bfloat16_rn(A[i] * 1.01f);
  for (int i = 0; i < k * n; ++i) Bb[i] = __float2bfloat16_rn(B[i]);
  DeviceBuffer<__nv_bfloat16> dAb(Ab), dBb(Bb);
  ASSERT_EQ(cublasGemmEx(handle, CUBLAS_OP_T, CUBLAS_OP_N, m, n, k, &one, dAb.ptr, CUDA_R_16BF, k, dBb.ptr,
                         CUDA_R_16BF, k, &zero, dC.ptr, CUDA_R_32F, m, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
            CUBLAS_STATUS_SUCCESS);
  got = dC.host();
  for (int i = 0; i < m; ++i)
    for (int j = 0; j < n; ++j) {
      float s = 0;
      for (int p = 0; p < k; ++p) s += __bfloat162float(Ab[i * k + p]) * __bfloat162float(Bb[j * k + p]);  // Aᵀ
      EXPECT_FLOAT_EQ(got[j * m + i], s);
    }
  EXPECT_EQ(cublasSgemm(handle, CUBLAS_OP_N, CUBLAS_OP_N, m, n, k, &one, dA.ptr, m - 1, dB.ptr, k, &zero, dC.ptr, m),
            CUBLAS_STATUS_INVALID_VALUE)
      << "lda below the row count";
  cublasDestroy(handle);
}

TEST(Emulator, DevicePropertiesAreThoseOfAnSm90Part) {
  int count = 0;
  ASSERT_EQ(cudaGetDeviceCount(&count), cudaSuccess);
  EXPECT_EQ(count, 1);
  cudaDeviceProp p;
  ASSERT_EQ(cudaGetDeviceProperties(&p, 0), cudaSuccess);
  EXPECT_EQ(p.major, 9);
  EXPECT_EQ(p.multiProcessorCount, 132);
  EXPECT_EQ(p.sharedMemPerBlockOptin, 227u * 1024);
  EXPECT_EQ(p.maxThreadsPerBlock, 1024);
  EXPECT_EQ(p.maxGridSize[1], 65535);
}

// ---- planted defects: each is reported, naming the kernel ------------------------------------------------
TEST(EmulatorPlanted, MissingSyncthreadsMakesTheSchedulesDisagree) {
  std::vector<float> in(64);
  std::iota(in.begin(), in.end(), 1.f);
  DeviceBuffer<float> x(in), y(64);
  auto r = under_schedules([&] {
    ECHO_LAUNCH(planted_missing_barrier_kernel, 1, 64)(x.ptr, y.ptr);
    return y.host();
  });
  EXPECT_FALSE(bit_equal(r[0], r[1]) && bit_equal(r[0], r[2]))
      << "planted_missing_barrier_kernel: a read-after-write race must change the result with the schedule";
  // In order, thread t reads its neighbour's slot before the neighbour wrote it: poison.
  EXPECT_TRUE(std::isnan(r[0][0]));
  EXPECT_EQ(r[1][0], 2.f) << "reversed, the neighbour ran first";
}

TEST(EmulatorPlanted, OffByOneWritePastTheEndIsReported) {
  DeviceBuffer<float> y(100);
#if ECHO_EMU_ASAN
  EXPECT_DEATH(ECHO_LAUNCH(planted_off_by_one_kernel, 1, 128)(y.ptr, 100), "heap-buffer-overflow");
#else
  try {
    ECHO_LAUNCH(planted_off_by_one_kernel, 1, 128)(y.ptr, 100);
    FAIL() << "the write past the end was not reported";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("planted_off_by_one_kernel"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("past the end"), std::string::npos) << e.what();
  }
#endif
}

TEST(EmulatorPlanted, ReadOfUnwrittenSharedMemoryYieldsPoison) {
  DeviceBuffer<float> y(64);
  ECHO_LAUNCH(planted_unwritten_shared_kernel, 1, 64)(y.ptr);
  auto h = y.host();
  EXPECT_EQ(h[63], 0.f);                                      // read tile[0], written
  EXPECT_TRUE(std::isnan(h[0])) << "tile[63] was never written";  // the failing comparison
}

TEST(EmulatorPlanted, BlockOf2048ThreadsIsALaunchErrorNamingTheKernel) {
  DeviceBuffer<float> y(2048);
  ECHO_LAUNCH(planted_big_block_kernel, 1, 2048)(y.ptr);
  const std::string msg = last_error_message();
  EXPECT_NE(msg.find("cudaErrorInvalidConfiguration"), std::string::npos) << msg;
  EXPECT_NE(msg.find("planted_big_block_kernel"), std::string::npos) << msg;
  EXPECT_TRUE(std::isnan(y.host()[0])) << "the kernel must not have run";
  ECHO_LAUNCH(planted_big_block_kernel, dim3(1, 65536), 32)(y.ptr);
  EXPECT_NE(last_error_message().find("gridDim.y"), std::string::npos);
}

TEST(EmulatorPlanted, DynamicSharedMemoryAbove48KBWithoutTheAttributeIsALaunchError) {
  DeviceBuffer<float> y(32);
  ECHO_LAUNCH(planted_big_shared_kernel, 1, 32, 64 * 1024)(y.ptr);
  const std::string msg = last_error_message();
  EXPECT_NE(msg.find("planted_big_shared_kernel"), std::string::npos) << msg;
  EXPECT_NE(msg.find("cudaFuncAttributeMaxDynamicSharedMemorySize"), std::string::npos) << msg;
}

TEST(EmulatorPlanted, SyncthreadsSkippedByReturnedThreadsIsAFault) {
  DeviceBuffer<float> x(64), y(64);
  try {
    ECHO_LAUNCH(planted_early_return_kernel, 1, 64)(x.ptr, y.ptr, 50);
    FAIL() << "not reported";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("planted_early_return_kernel"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("reached by 50 of 64"), std::string::npos) << e.what();
  }
}

TEST(EmulatorPlanted, ShuffleFromALaneOutsideTheWarpIsAFault) {
  DeviceBuffer<float> x(32), y(32);
  try {
    ECHO_LAUNCH(planted_bad_lane_kernel, 1, 32)(x.ptr, y.ptr);
    FAIL() << "not reported";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("planted_bad_lane_kernel"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("source lane 32"), std::string::npos) << e.what();
  }
}

TEST(EmulatorPlanted, DeadlockIsAnErrorNotAHang) {
  DeviceBuffer<float> y(32);
  try {
    ECHO_LAUNCH(planted_deadlock_kernel, 1, 32)(y.ptr);
    FAIL() << "not reported";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("planted_deadlock_kernel"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("deadlock"), std::string::npos) << e.what();
  }
}

TEST(EmulatorPlanted, HostPointerArgumentIsReported) {
  std::vector<float> host(32);
  try {
    ECHO_LAUNCH(planted_host_pointer_kernel, 1, 32)(host.data());
    FAIL() << "not reported";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("planted_host_pointer_kernel"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("argument 1"), std::string::npos) << e.what();
  }
}

#else

TEST(Emulator, NotInThisBuild) {
  GTEST_SKIP() << "this build has no emulated CUDA device (configure with -DECHO_CUDA=EMU)";
}

#endif
