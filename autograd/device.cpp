#include "autograd/device.h"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <stdexcept>
#include <vector>

#if ECHO_HAVE_CUDA
#include <cuda_runtime.h>
#endif

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#define ECHO_ASAN 1
#endif

namespace echo {

namespace {

struct CudaProbe {
  bool available = false;
  std::string reason;
  CudaProbe() {
#if ECHO_HAVE_CUDA
    int count = 0;
    cudaError_t err = cudaGetDeviceCount(&count);
    if (err != cudaSuccess) {
      reason = std::string("cudaGetDeviceCount failed: ") + cudaGetErrorString(err);
      cudaGetLastError();  // clear the sticky error so later probes start clean
    } else if (count == 0) {
      reason = "no CUDA device found";
    } else {
      available = true;
    }
#else
    reason = "this build has no CUDA backend (configured with ECHO_CUDA=OFF or without nvcc)";
#endif
  }
};

const CudaProbe& probe() {
  static CudaProbe p;
  return p;
}

// Size-bucketed caching allocator, one per device. Requests are rounded up
// (512 B granularity below 1 MiB, 2 MiB above) and freed blocks wait in a
// multimap keyed by their rounded size; a request takes the smallest cached
// block that fits and is not more than twice as large. Steady-state training
// asks for the same sizes every step, so after the first step it allocates
// nothing from the system: no cudaMalloc on the GPU, and on the CPU no
// mmap/munmap and none of the page faults that come with fresh pages (at
// long sequences those faults cost more than the arithmetic). `Backend`
// supplies the raw allocation: `void* raw_alloc(size_t)` (nullptr when out of
// memory), `raw_free(void*)`, `sync()` before blocks go back, `name`, and the
// hooks `on_hand_out(p, bytes asked, block size)` / `on_take_back(p, size)`.
template <class Backend>
class CachingAllocator {
 public:
  void* allocate(size_t bytes) {
    const size_t size = round(bytes);
    std::lock_guard<std::mutex> lock(mu_);
    void* p = nullptr;
    auto it = free_.lower_bound(size);
    if (it != free_.end() && it->first <= 2 * size) {
      p = it->second;
      stats_.cached_bytes -= it->first;
      stats_.allocated_bytes += it->first;
      sizes_[p] = it->first;
      free_.erase(it);
      stats_.peak_allocated_bytes = std::max(stats_.peak_allocated_bytes, stats_.allocated_bytes);
    } else {
      p = Backend::raw_alloc(size);
      if (!p) {
        release_cached_locked();  // retry once after returning the cache to the system
        p = Backend::raw_alloc(size);
        if (!p)
          throw std::runtime_error(std::string(Backend::name) + " out of memory allocating " + std::to_string(size) +
                                   " bytes");
      }
      ++stats_.system_alloc_calls;
      stats_.allocated_bytes += size;
      sizes_[p] = size;
      stats_.peak_allocated_bytes = std::max(stats_.peak_allocated_bytes, stats_.allocated_bytes);
    }
    Backend::on_hand_out(p, bytes, sizes_[p]);
    return p;
  }
  void release(void* p) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = sizes_.find(p);
    if (it == sizes_.end()) return;
    size_t size = it->second;
    sizes_.erase(it);
    stats_.allocated_bytes -= size;
    stats_.cached_bytes += size;
    Backend::on_take_back(p, size);
    free_.emplace(size, p);
  }
  void empty_cache() {
    std::lock_guard<std::mutex> lock(mu_);
    release_cached_locked();
  }
  AllocatorStats stats() {
    std::lock_guard<std::mutex> lock(mu_);
    return stats_;
  }
  void reset_peak() {
    std::lock_guard<std::mutex> lock(mu_);
    stats_.peak_allocated_bytes = stats_.allocated_bytes;
  }

 private:
  static size_t round(size_t b) {
    if (b == 0) b = 1;
    const size_t small = 512, large = size_t(2) << 20;
    return b < (size_t(1) << 20) ? (b + small - 1) / small * small : (b + large - 1) / large * large;
  }
  void release_cached_locked() {
    Backend::sync();
    for (auto& kv : free_) {
      Backend::on_hand_out(kv.second, kv.first, kv.first);  // a sanitizer must see the block as live when it is freed
      Backend::raw_free(kv.second);
    }
    free_.clear();
    stats_.cached_bytes = 0;
  }
  std::mutex mu_;
  std::multimap<size_t, void*> free_;
  std::map<void*, size_t> sizes_;
  AllocatorStats stats_;
};

// Host memory: 64-byte aligned for vector loads. Under AddressSanitizer a cached
// block is poisoned while it waits and only the bytes asked for are unpoisoned
// when it is handed out, so a use after free, or a read past a tensor's end into
// the rest of its rounded block, is still reported.
struct HostBackend {
  static constexpr const char* name = "host";
  static void* raw_alloc(size_t size) { return std::aligned_alloc(64, size); }
  static void raw_free(void* p) { std::free(p); }
  static void sync() {}
  static void on_hand_out(void* p, size_t bytes, size_t size) {
    (void)p, (void)bytes, (void)size;
#if ECHO_ASAN
    ASAN_POISON_MEMORY_REGION(p, size);
    ASAN_UNPOISON_MEMORY_REGION(p, bytes);
#endif
  }
  static void on_take_back(void* p, size_t size) {
    (void)p, (void)size;
#if ECHO_ASAN
    ASAN_POISON_MEMORY_REGION(p, size);
#endif
  }
};

CachingAllocator<HostBackend>& host_allocator() {
  static auto* a = new CachingAllocator<HostBackend>();  // never destroyed: tensors may outlive statics
  return *a;
}

#if ECHO_HAVE_CUDA
struct CudaBackend {
  static constexpr const char* name = "CUDA";
  static void* raw_alloc(size_t size) {
    void* p = nullptr;
    if (cudaMalloc(&p, size) != cudaSuccess) {
      cudaGetLastError();
      return nullptr;
    }
    return p;
  }
  static void raw_free(void* p) { cudaFree(p); }
  static void sync() { cudaDeviceSynchronize(); }
  static void on_hand_out(void* p, size_t bytes, size_t) {
    (void)p, (void)bytes;
#if ECHO_CUDA_EMULATED
    // The emulated device checks accesses against the bytes asked for, not the
    // rounded block: a kernel that runs past a tensor's end is reported.
    echo::emu::set_used_bytes(p, bytes);
#endif
  }
  static void on_take_back(void*, size_t) {}
};
using CudaCachingAllocator = CachingAllocator<CudaBackend>;

CudaCachingAllocator& cuda_allocator() {
  static auto* a = new CudaCachingAllocator();  // never destroyed: avoids teardown-order issues
  return *a;
}

void check(cudaError_t err, const char* what) {
  if (err != cudaSuccess) {
    cudaGetLastError();
    throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(err));
  }
}
#endif

void require_cuda(const char* what) {
  if (!cuda_available())
    throw std::runtime_error(std::string(what) + " needs a CUDA GPU: " + cuda_unavailable_reason());
}

}  // namespace

namespace {
std::atomic<int64_t> g_device_to_host_copies{0}, g_synchronizations{0};
}  // namespace

bool cuda_available() { return probe().available; }
const std::string& cuda_unavailable_reason() { return probe().reason; }

void* device_alloc(size_t bytes, Device device) {
  if (device == Device::CPU) {
    return host_allocator().allocate(bytes);
  }
  require_cuda("allocating a CUDA tensor");
#if ECHO_HAVE_CUDA
  return cuda_allocator().allocate(bytes);
#else
  return nullptr;
#endif
}

void device_free(void* ptr, size_t, Device device) {
  if (!ptr) return;
  if (device == Device::CPU) {
    host_allocator().release(ptr);
    return;
  }
#if ECHO_HAVE_CUDA
  cuda_allocator().release(ptr);
#endif
}

void device_copy(void* dst, Device dd, const void* src, Device sd, size_t bytes) {
  if (bytes == 0) return;
  if (dd == Device::CPU && sd == Device::CPU) {
    std::memcpy(dst, src, bytes);
    return;
  }
  require_cuda("copying to or from a CUDA tensor");
#if ECHO_HAVE_CUDA
  cudaMemcpyKind kind = dd == Device::CUDA ? (sd == Device::CUDA ? cudaMemcpyDeviceToDevice
                                                                 : cudaMemcpyHostToDevice)
                                           : cudaMemcpyDeviceToHost;
  if (kind == cudaMemcpyDeviceToHost) note_device_to_host_copy();
  check(cudaMemcpy(dst, src, bytes, kind), "cudaMemcpy");
#endif
}

void device_synchronize() {
#if ECHO_HAVE_CUDA
  if (cuda_available()) {
    ++g_synchronizations;
    check(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
  }
#endif
}

AllocatorStats host_allocator_stats() { return host_allocator().stats(); }
void host_empty_cache() { host_allocator().empty_cache(); }
void host_reset_peak() { host_allocator().reset_peak(); }

void cuda_reset_peak() {
#if ECHO_HAVE_CUDA
  if (cuda_available()) cuda_allocator().reset_peak();
#endif
}

HostSyncCounts host_sync_counts() { return {g_device_to_host_copies.load(), g_synchronizations.load()}; }
void note_device_to_host_copy() { ++g_device_to_host_copies; }

AllocatorStats cuda_allocator_stats() {
#if ECHO_HAVE_CUDA
  if (cuda_available()) return cuda_allocator().stats();
#endif
  return {};
}

void cuda_empty_cache() {
#if ECHO_HAVE_CUDA
  if (cuda_available()) cuda_allocator().empty_cache();
#endif
}

}  // namespace echo
