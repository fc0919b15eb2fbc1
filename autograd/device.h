// Memory and copies on each device. The CUDA side keeps a caching allocator:
// freed blocks go to a size-bucketed free list and are reused, so steady-state
// training does no cudaMalloc/cudaFree (see docs/engine.md).
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

struct CudaAllocatorStats {
  size_t allocated_bytes = 0;  // held by live tensors
  size_t cached_bytes = 0;     // held in the free lists
  size_t cuda_malloc_calls = 0;
};
CudaAllocatorStats cuda_allocator_stats();
void cuda_empty_cache();

}  // namespace echo
