#include "autograd/device.h"

#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <stdexcept>
#include <vector>

#if ECHO_HAVE_CUDA
#include <cuda_runtime.h>
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

#if ECHO_HAVE_CUDA
// Size-bucketed caching allocator. Requests are rounded up (512 B granularity
// below 1 MiB, 2 MiB above) and freed blocks wait in a multimap keyed by their
// rounded size; a request takes the smallest cached block that fits and is not
// more than twice as large.
class CudaCachingAllocator {
 public:
  void* allocate(size_t bytes) {
    void* p = allocate_block(bytes);
#if ECHO_CUDA_EMULATED
    // The emulated device checks accesses against the bytes asked for, not the
    // rounded block: a kernel that runs past a tensor's end is reported.
    echo::emu::set_used_bytes(p, bytes);
#endif
    return p;
  }
  void* allocate_block(size_t bytes) {
    size_t size = round(bytes);
    std::lock_guard<std::mutex> lock(mu_);
    auto it = free_.lower_bound(size);
    if (it != free_.end() && it->first <= 2 * size) {
      void* p = it->second;
      stats_.cached_bytes -= it->first;
      stats_.allocated_bytes += it->first;
      sizes_[p] = it->first;
      free_.erase(it);
      return p;
    }
    void* p = nullptr;
    cudaError_t err = cudaMalloc(&p, size);
    if (err != cudaSuccess) {
      cudaGetLastError();
      release_cached_locked();  // retry once after returning the cache to the driver
      err = cudaMalloc(&p, size);
      if (err != cudaSuccess) {
        cudaGetLastError();
        throw std::runtime_error("CUDA out of memory allocating " + std::to_string(size) +
                                 " bytes: " + cudaGetErrorString(err));
      }
    }
    ++stats_.cuda_malloc_calls;
    stats_.allocated_bytes += size;
    sizes_[p] = size;
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
    free_.emplace(size, p);
  }
  void empty_cache() {
    std::lock_guard<std::mutex> lock(mu_);
    release_cached_locked();
  }
  CudaAllocatorStats stats() {
    std::lock_guard<std::mutex> lock(mu_);
    return stats_;
  }

 private:
  static size_t round(size_t b) {
    if (b == 0) b = 1;
    const size_t small = 512, large = size_t(2) << 20;
    return b < (size_t(1) << 20) ? (b + small - 1) / small * small : (b + large - 1) / large * large;
  }
  void release_cached_locked() {
    cudaDeviceSynchronize();
    for (auto& kv : free_) cudaFree(kv.second);
    free_.clear();
    stats_.cached_bytes = 0;
  }
  std::mutex mu_;
  std::multimap<size_t, void*> free_;
  std::map<void*, size_t> sizes_;
  CudaAllocatorStats stats_;
};

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

bool cuda_available() { return probe().available; }
const std::string& cuda_unavailable_reason() { return probe().reason; }

void* device_alloc(size_t bytes, Device device) {
  if (device == Device::CPU) {
    // 64-byte alignment for vector loads; at least one byte so the pointer is unique.
    size_t rounded = (bytes + 63) / 64 * 64;
    void* p = std::aligned_alloc(64, rounded ? rounded : 64);
    if (!p) throw std::runtime_error("out of host memory allocating " + std::to_string(bytes) + " bytes");
    return p;
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
    std::free(ptr);
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
  check(cudaMemcpy(dst, src, bytes, kind), "cudaMemcpy");
#endif
}

void device_synchronize() {
#if ECHO_HAVE_CUDA
  if (cuda_available()) check(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
#endif
}

CudaAllocatorStats cuda_allocator_stats() {
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
