// The CUDA runtime as the emulated device sees it (build mode ECHO_CUDA=EMU).
//
// The project's .cu files are compiled by the host C++ compiler with this folder
// first on the include path, so `#include <cuda_runtime.h>` lands here. It
// gives them three things:
//   - the host API subset they call (memory, copies, streams, errors, device
//     properties of an sm_90 device), implemented in cuda/emu/runtime.cpp;
//   - the execution model inside a kernel: threadIdx/blockIdx/blockDim/gridDim,
//     __syncthreads, warp shuffles and votes, atomics, math intrinsics. Each
//     CUDA thread of a block is a fiber (cuda/emu/fiber.h) and barriers are
//     real: a thread that calls __syncthreads() waits until every thread of
//     its block has called it;
//   - the launch: ECHO_LAUNCH(kernel, grid, block[, shared, stream])(args...)
//     (autograd/cuda_launch.h), which under nvcc is kernel<<<...>>>(args...).
// docs/cuda.md describes what is checked and what cannot be.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <math.h>
#include <type_traits>
#include <utility>

#include "emu_core.h"

// ---- qualifiers: plain C++ functions and objects --------------------------------
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline __attribute__((always_inline))
#define __launch_bounds__(...)
#define __align__(n) alignas(n)
#define __constant__ const
// Static `__shared__` storage has per-block lifetime, which plain C++ cannot
// declare: kernels use ECHO_SHARED / ECHO_DYNAMIC_SHARED (autograd/cuda_launch.h).
// A bare __shared__ stops the build here rather than silently becoming a global.
#define __shared__ static_assert(false, "use ECHO_SHARED(type, name, [dims]) for shared memory");

// ---- built-in variables -------------------------------------------------------
#define threadIdx (::echo::emu::current_thread().thread_idx)
#define blockIdx (::echo::emu::current_thread().block->block_idx)
#define blockDim (::echo::emu::current_thread().block->block_dim)
#define gridDim (::echo::emu::current_thread().block->grid_dim)
constexpr int warpSize = 32;

// ---- errors -------------------------------------------------------------------
enum cudaError_t {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorMemoryAllocation = 2,
  cudaErrorInitializationError = 3,
  cudaErrorInvalidConfiguration = 9,
  cudaErrorInvalidDevice = 101,
  cudaErrorInvalidDevicePointer = 17,
  cudaErrorInvalidMemcpyDirection = 21,
  cudaErrorLaunchFailure = 719,
  cudaErrorLaunchOutOfResources = 701,
  cudaErrorNotSupported = 801,
};
typedef cudaError_t cudaError;
cudaError_t cudaGetLastError();
cudaError_t cudaPeekAtLastError();
const char* cudaGetErrorString(cudaError_t error);
const char* cudaGetErrorName(cudaError_t error);

// ---- devices ------------------------------------------------------------------
struct cudaDeviceProp {
  char name[256];
  size_t totalGlobalMem;
  size_t sharedMemPerBlock;        // 48 KB without opt-in
  size_t sharedMemPerBlockOptin;   // 227 KB on sm_90
  size_t sharedMemPerMultiprocessor;
  int regsPerBlock;
  int warpSize;
  int maxThreadsPerBlock;
  int maxThreadsDim[3];
  int maxGridSize[3];
  int multiProcessorCount;
  int maxThreadsPerMultiProcessor;
  int major, minor;
  int clockRate, memoryClockRate, memoryBusWidth;
  size_t l2CacheSize;
};
enum cudaDeviceAttr {
  cudaDevAttrMaxThreadsPerBlock = 1,
  cudaDevAttrMaxSharedMemoryPerBlock = 8,
  cudaDevAttrMultiProcessorCount = 16,
  cudaDevAttrComputeCapabilityMajor = 75,
  cudaDevAttrComputeCapabilityMinor = 76,
  cudaDevAttrMaxSharedMemoryPerBlockOptin = 97,
};
cudaError_t cudaGetDeviceCount(int* count);
cudaError_t cudaSetDevice(int device);
cudaError_t cudaGetDevice(int* device);
cudaError_t cudaGetDeviceProperties(cudaDeviceProp* prop, int device);
cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int device);
cudaError_t cudaDeviceSynchronize();
cudaError_t cudaDeviceReset();
cudaError_t cudaMemGetInfo(size_t* free_bytes, size_t* total_bytes);

// ---- memory -------------------------------------------------------------------
enum cudaMemcpyKind {
  cudaMemcpyHostToHost = 0,
  cudaMemcpyHostToDevice = 1,
  cudaMemcpyDeviceToHost = 2,
  cudaMemcpyDeviceToDevice = 3,
  cudaMemcpyDefault = 4,
};
typedef struct echo_emu_stream* cudaStream_t;
typedef struct echo_emu_event* cudaEvent_t;
cudaError_t cudaMalloc(void** ptr, size_t bytes);
template <class T> inline cudaError_t cudaMalloc(T** ptr, size_t bytes) {
  return cudaMalloc(reinterpret_cast<void**>(ptr), bytes);
}
cudaError_t cudaFree(void* ptr);
cudaError_t cudaMallocHost(void** ptr, size_t bytes);
cudaError_t cudaFreeHost(void* ptr);
cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind);
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind, cudaStream_t stream = 0);
cudaError_t cudaMemset(void* dst, int value, size_t bytes);
cudaError_t cudaMemsetAsync(void* dst, int value, size_t bytes, cudaStream_t stream = 0);
cudaError_t cudaMemset2DAsync(void* dst, size_t pitch, int value, size_t width, size_t height,
                              cudaStream_t stream = 0);

// ---- streams and events (every operation completes before its call returns) ----
cudaError_t cudaStreamCreate(cudaStream_t* stream);
cudaError_t cudaStreamDestroy(cudaStream_t stream);
cudaError_t cudaStreamSynchronize(cudaStream_t stream);
cudaError_t cudaEventCreate(cudaEvent_t* event);
cudaError_t cudaEventDestroy(cudaEvent_t event);
cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t stream = 0);
cudaError_t cudaEventSynchronize(cudaEvent_t event);
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t end);

// ---- kernel attributes -----------------------------------------------------------
enum cudaFuncAttribute {
  cudaFuncAttributeMaxDynamicSharedMemorySize = 8,
  cudaFuncAttributePreferredSharedMemoryCarveout = 9,
};
// A kernel is known to the emulator by its source file and name (the launch
// macro passes both), so the attribute call is a macro that passes them too.
#define cudaFuncSetAttribute(func, attr, value) ::echo::emu::set_function_attribute(__FILE__, #func, attr, value)
namespace echo::emu {
cudaError_t set_function_attribute(const char* file, const char* kernel, cudaFuncAttribute attr, int value);
}

// ---- inside a kernel: barriers, warps, votes ------------------------------------------
inline void __syncthreads() { ::echo::emu::block_barrier(0, ::echo::emu::BarrierReduce::None); }
inline int __syncthreads_or(int p) { return ::echo::emu::block_barrier(p, ::echo::emu::BarrierReduce::Or); }
inline int __syncthreads_and(int p) { return ::echo::emu::block_barrier(p, ::echo::emu::BarrierReduce::And); }
inline int __syncthreads_count(int p) { return ::echo::emu::block_barrier(p, ::echo::emu::BarrierReduce::Count); }
inline void __syncwarp(unsigned mask = 0xffffffffu) { ::echo::emu::warp_exchange(mask, 0, -1, 32); }
inline void __threadfence() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
inline void __threadfence_block() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }

inline unsigned __ballot_sync(unsigned mask, int p) { return ::echo::emu::warp_vote(mask, p, ::echo::emu::Vote::Ballot); }
inline int __any_sync(unsigned mask, int p) { return ::echo::emu::warp_vote(mask, p, ::echo::emu::Vote::Any) != 0; }
inline int __all_sync(unsigned mask, int p) { return ::echo::emu::warp_vote(mask, p, ::echo::emu::Vote::All) != 0; }
inline unsigned __activemask() { return ::echo::emu::active_mask(); }

// Shuffles: T is any trivially copyable value of at most 8 bytes. srcLane is
// taken within segments of `width` lanes; up/down beyond the segment return the
// caller's own value, as on the GPU.
template <class T> inline T __shfl_sync(unsigned mask, T v, int src_lane, int width = 32) {
  return ::echo::emu::shuffle(mask, v, ::echo::emu::ShuffleKind::Index, src_lane, width);
}
template <class T> inline T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32) {
  return ::echo::emu::shuffle(mask, v, ::echo::emu::ShuffleKind::Xor, lane_mask, width);
}
template <class T> inline T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32) {
  return ::echo::emu::shuffle(mask, v, ::echo::emu::ShuffleKind::Down, static_cast<int>(delta), width);
}
template <class T> inline T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = 32) {
  return ::echo::emu::shuffle(mask, v, ::echo::emu::ShuffleKind::Up, static_cast<int>(delta), width);
}

// ---- atomics (blocks may run in parallel on several host threads) -----------------
template <class T> inline T echo_emu_atomic_update(T* address, T (*f)(T, T), T val) {
  static_assert(sizeof(T) == 4 || sizeof(T) == 8, "atomics on 4- and 8-byte values");
  using Bits = std::conditional_t<sizeof(T) == 4, uint32_t, uint64_t>;
  Bits* bits = reinterpret_cast<Bits*>(address);
  Bits old_bits = __atomic_load_n(bits, __ATOMIC_RELAXED);
  for (;;) {
    T old_val;
    std::memcpy(&old_val, &old_bits, sizeof(T));
    T new_val = f(old_val, val);
    Bits new_bits;
    std::memcpy(&new_bits, &new_val, sizeof(T));
    if (__atomic_compare_exchange_n(bits, &old_bits, new_bits, false, __ATOMIC_SEQ_CST, __ATOMIC_RELAXED))
      return old_val;
  }
}
#define ECHO_EMU_ATOMIC(name, expr)                                                                \
  template <class T> inline T name(T* address, T val) {                                           \
    return echo_emu_atomic_update<T>(address, [](T a, T b) -> T { return expr; }, val);          \
  }
ECHO_EMU_ATOMIC(atomicAdd, a + b)
ECHO_EMU_ATOMIC(atomicSub, a - b)
ECHO_EMU_ATOMIC(atomicMax, a > b ? a : b)
ECHO_EMU_ATOMIC(atomicMin, a < b ? a : b)
ECHO_EMU_ATOMIC(atomicExch, ((void)a, b))
ECHO_EMU_ATOMIC(atomicAnd, a & b)
ECHO_EMU_ATOMIC(atomicOr, a | b)
#undef ECHO_EMU_ATOMIC
template <class T> inline T atomicCAS(T* address, T compare, T val) {
  __atomic_compare_exchange_n(address, &compare, val, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
  return compare;  // the old value, whether or not it was replaced
}

// ---- loads and math intrinsics ------------------------------------------------------
template <class T> inline T __ldg(const T* p) { return *p; }
inline float __expf(float x) { return expf(x); }
inline float __logf(float x) { return logf(x); }
inline float __log2f(float x) { return log2f(x); }
inline float __sinf(float x) { return sinf(x); }
inline float __cosf(float x) { return cosf(x); }
inline float __powf(float a, float b) { return powf(a, b); }
inline float __tanhf(float x) { return tanhf(x); }
inline float __fdividef(float a, float b) { return a / b; }
inline float __frcp_rn(float x) { return 1.f / x; }
inline float __fsqrt_rn(float x) { return sqrtf(x); }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fmaf_rn(float a, float b, float c) { return fmaf(a, b, c); }
inline float __saturatef(float x) { return x < 0.f ? 0.f : (x > 1.f ? 1.f : x); }
inline float rsqrtf(float x) { return 1.f / sqrtf(x); }
inline double rsqrt(double x) { return 1.0 / sqrt(x); }
inline float exp10f(float x) { return powf(10.f, x); }
inline float __int_as_float(int x) { float f; std::memcpy(&f, &x, 4); return f; }
inline float __uint_as_float(unsigned x) { float f; std::memcpy(&f, &x, 4); return f; }
inline int __float_as_int(float f) { int x; std::memcpy(&x, &f, 4); return x; }
inline unsigned __float_as_uint(float f) { unsigned x; std::memcpy(&x, &f, 4); return x; }
inline double __longlong_as_double(long long x) { double d; std::memcpy(&d, &x, 8); return d; }
inline long long __double_as_longlong(double d) { long long x; std::memcpy(&x, &d, 8); return x; }
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz(static_cast<unsigned>(x)); }
inline int __ffs(int x) { return __builtin_ffs(x); }
inline unsigned __brev(unsigned x) {
  unsigned r = 0;
  for (int i = 0; i < 32; ++i) r |= ((x >> i) & 1u) << (31 - i);
  return r;
}

// CUDA's min/max accept any two arithmetic values (in device code they are
// overloaded for every integer and floating type).
template <class A, class B, class = std::enable_if_t<std::is_arithmetic_v<A> && std::is_arithmetic_v<B>>>
inline std::common_type_t<A, B> min(A a, B b) {
  using C = std::common_type_t<A, B>;
  return static_cast<C>(a) < static_cast<C>(b) ? static_cast<C>(a) : static_cast<C>(b);
}
template <class A, class B, class = std::enable_if_t<std::is_arithmetic_v<A> && std::is_arithmetic_v<B>>>
inline std::common_type_t<A, B> max(A a, B b) {
  using C = std::common_type_t<A, B>;
  return static_cast<C>(a) < static_cast<C>(b) ? static_cast<C>(b) : static_cast<C>(a);
}
using std::isfinite;
using std::isinf;
using std::isnan;
