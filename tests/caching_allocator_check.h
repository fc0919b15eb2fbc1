// The caching allocator's documented behaviour (autograd/device.cpp), checked on
// each device: rounding (512 B below 1 MiB, 2 MiB above), reuse of a cached block
// up to twice the request, the counters, and empty_cache.
#pragma once

#include <gtest/gtest.h>

#include "autograd/device.h"
#include "autograd/tensor.h"

namespace echo {

inline void check_caching_allocator(Device device, AllocatorStats (*stats)(), void (*empty_cache)()) {
  empty_cache();
  const AllocatorStats s0 = stats();
  EXPECT_EQ(s0.cached_bytes, 0u);
  { Tensor a = Tensor::empty({1000}, DType::F32, device); }  // 4000 B -> 4096 B
  const AllocatorStats s1 = stats();
  EXPECT_EQ(s1.system_alloc_calls, s0.system_alloc_calls + 1);
  EXPECT_EQ(s1.allocated_bytes, s0.allocated_bytes);
  EXPECT_EQ(s1.cached_bytes, 4096u);
  for (int i = 0; i < 5; ++i) {
    Tensor a = Tensor::empty({1000}, DType::F32, device);  // the cached block
    Tensor b = Tensor::empty({750}, DType::F32, device);   // 3000 B: a new 3072 B block
    EXPECT_EQ(stats().allocated_bytes, s0.allocated_bytes + 4096 + 3072);
  }
  EXPECT_EQ(stats().system_alloc_calls, s0.system_alloc_calls + 2);
  {
    // 1000 B (1024 B) does not take a 3072 or 4096 B block (more than twice the request).
    Tensor c = Tensor::empty({250}, DType::F32, device);
    EXPECT_EQ(stats().system_alloc_calls, s0.system_alloc_calls + 3);
  }
  {
    // 3 MiB + 4 B rounds to 4 MiB.
    Tensor big = Tensor::empty({(3 << 20) / 4 + 1}, DType::F32, device);
    EXPECT_EQ(stats().allocated_bytes, s0.allocated_bytes + (size_t(4) << 20));
  }
  // Freed memory goes to the cache, and empty_cache hands it back.
  EXPECT_EQ(stats().allocated_bytes, s0.allocated_bytes);
  EXPECT_EQ(stats().cached_bytes, 4096u + 3072u + 1024u + (size_t(4) << 20));
  empty_cache();
  EXPECT_EQ(stats().cached_bytes, 0u);
}

}  // namespace echo
