// Memory and copies on each device. Both devices keep a caching allocator:
// freed blocks go to a size-bucketed free list and are reused, so steady-state
// training does no cudaMalloc/cudaFree and no host mmap/munmap (docs/engine.md).
#pragma once

#include <cstddef>
#include <string>

#include "autograd/tensor.h"

namespace echo {

// True when this build has CUDA and a usable GPU. Any error from the runtime
// (no driver, no device) counts as "no GPU"; the reason is kept for messages.
bool cuda_available();
const std::string& cuda_unavailable_reason();

void* device_alloc(size_t bytes, Device device);
void device_free(void* ptr, size_t bytes, Device device);

// dst and src may be on either device.
void device_copy(void* dst, Device dst_device, const void* src, Device src_device, size_t bytes);
void device_synchronize();

struct AllocatorStats {
  size_t allocated_bytes = 0;     // held by live tensors (rounded block sizes)
  size_t cached_bytes = 0;        // held in the free lists
  size_t system_alloc_calls = 0;  // blocks taken from the system (cudaMalloc, aligned_alloc)
  size_t peak_allocated_bytes = 0;  // the most allocated_bytes since the last reset_peak
};
AllocatorStats host_allocator_stats();
void host_empty_cache();  // hands the cached host blocks back to the C library
void host_reset_peak();  // peak_allocated_bytes := allocated_bytes
AllocatorStats cuda_allocator_stats();
void cuda_empty_cache();
void cuda_reset_peak();

// Every point where the host waits for the GPU: device-to-host copies (each one
// waits for the work before it) and explicit synchronisations. A training step
// should have almost none (`echo-lm bench step` reports them per step).
struct HostSyncCounts {
  int64_t device_to_host_copies = 0;
  int64_t synchronizations = 0;
};
HostSyncCounts host_sync_counts();
void note_device_to_host_copy();  // for a device-to-host cudaMemcpy outside device_copy

}  // namespace echo
