// The emulated device's core: the state of a CUDA thread and of its block, the
// synchronisation primitives the intrinsics in cuda_runtime.h call, and the
// launch object behind ECHO_LAUNCH. Implemented in cuda/emu/runtime.cpp.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

// 1 when AddressSanitizer instruments this build (GCC and Clang spell it differently).
#if defined(__SANITIZE_ADDRESS__)
#define ECHO_EMU_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define ECHO_EMU_ASAN 1
#endif
#endif
#ifndef ECHO_EMU_ASAN
#define ECHO_EMU_ASAN 0
#endif


struct uint3 {
  unsigned x, y, z;
};
struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned vx = 1, unsigned vy = 1, unsigned vz = 1) : x(vx), y(vy), z(vz) {}
  constexpr dim3(uint3 v) : x(v.x), y(v.y), z(v.z) {}
  constexpr operator uint3() const { return uint3{x, y, z}; }
};
typedef struct echo_emu_stream* cudaStream_t;

namespace echo::emu {

// What a kernel reads about its block (the scheduler's state extends it).
struct Block {
  uint3 block_idx;
  dim3 block_dim;
  dim3 grid_dim;
};

// One CUDA thread: its index, and where its fiber stands.
struct Thread {
  uint3 thread_idx;
  Block* block;
  int linear;  // threadIdx.x + blockDim.x·(threadIdx.y + blockDim.y·threadIdx.z)
};

// The calling fiber's thread. Valid only inside a kernel; outside one, using
// threadIdx & co. is an error that names the problem.
Thread& current_thread();

enum class BarrierReduce { None, Or, And, Count };
// __syncthreads and its reducing forms: returns the reduction of `predicate`
// over the block (0 for None).
int block_barrier(int predicate, BarrierReduce reduce);

// The warp-level rendezvous under every shuffle, vote and __syncwarp: each lane
// named in `mask` deposits `value`, waits until all of them have, and gets back
// the value deposited by lane `source` (or its own when source < 0).
uint64_t warp_exchange(unsigned mask, uint64_t value, int source, int width);

enum class Vote { Ballot, Any, All };
unsigned warp_vote(unsigned mask, int predicate, Vote vote);
unsigned active_mask();

enum class ShuffleKind { Index, Xor, Down, Up };
// The lane a shuffle reads, or an error naming the kernel for a lane the GPU
// would not give (outside the segment for Index, or a width that is not a
// power of two in [1, 32]).
int shuffle_source(ShuffleKind kind, int arg, int width);

template <class T> inline T shuffle(unsigned mask, T v, ShuffleKind kind, int arg, int width) {
  static_assert(std::is_trivially_copyable_v<T> && sizeof(T) <= 8, "shuffles move values of at most 8 bytes");
  uint64_t bits = 0;
  std::memcpy(&bits, &v, sizeof(T));
  const uint64_t got = warp_exchange(mask, bits, shuffle_source(kind, arg, width), width);
  T out;
  std::memcpy(&out, &got, sizeof(T));
  return out;
}

// Shared memory of the calling thread's block. A static declaration (key: the
// address of a static object unique to the declaration) is allocated on first
// use in each block; both kinds are filled with the poison pattern first.
void* static_shared(const void* key, size_t bytes, size_t align);
void* dynamic_shared();

// ---- launches ---------------------------------------------------------------------
struct LaunchConfig {
  const char* kernel;
  const char* file;
  dim3 grid, block;
  size_t shared_bytes;
};
using ThreadEntry = void (*)(void* closure);
// Runs every block of the grid; entry(closure) is the body of one thread. A
// launch the GPU would refuse sets the last error and runs nothing; a fault
// while running (deadlock, a lane outside the mask, ...) throws
// std::runtime_error naming the kernel.
void run_grid(const LaunchConfig& config, ThreadEntry entry, void* closure);
// The caller passes pointer arguments here: a non-null pointer outside every
// device allocation (a host pointer given to a kernel) is reported.
void check_pointer_argument(const LaunchConfig& config, int index, const void* p);

template <class T> inline void check_argument(const LaunchConfig& c, int index, const T& v) {
  if constexpr (std::is_pointer_v<T>) check_pointer_argument(c, index, (const void*)v);
}

template <class Body> struct BoundLaunch {
  LaunchConfig config;
  Body body;
  // Arguments are evaluated once and copied, as kernel parameters are; each
  // thread then calls the kernel with its own copy.
  template <class... Args> void operator()(Args&&... args) const {
    auto params = std::make_tuple(static_cast<std::decay_t<Args>>(std::forward<Args>(args))...);
    int index = 0;
    std::apply([&](const auto&... p) { (check_argument(config, index++, p), ...); }, params);
    auto thread_body = [&]() { std::apply(body, params); };
    using Closure = decltype(thread_body);
    run_grid(config, [](void* c) { (*static_cast<Closure*>(c))(); }, &thread_body);
  }
};

struct Launch {
  LaunchConfig config;
  Launch(const char* kernel, const char* file, dim3 grid, dim3 block, size_t shared_bytes = 0,
         cudaStream_t = nullptr)
      : config{kernel, file, grid, block, shared_bytes} {}
  template <class Body> BoundLaunch<Body> operator%(Body body) const { return {config, body}; }
};

// Device memory [p, p + capacity) from cudaMalloc, of which its owner (the
// caching allocator) now uses the first `used` bytes: accesses to the rest are
// reported like accesses past the end. Ignored for other pointers.
void set_used_bytes(void* p, size_t used);

// Schedules of the threads of a block between barriers (docs/cuda.md): a kernel
// whose result depends on the order has a race.
enum class Schedule { InOrder, Reversed, Random };
void set_schedule(Schedule schedule, uint64_t seed = 0);
Schedule current_schedule();
const char* schedule_name(Schedule schedule);

// Every kernel launched so far in this process, as "file:kernel" (file without
// its folders), for the coverage test.
std::vector<std::string> launched_kernels();

}  // namespace echo::emu
