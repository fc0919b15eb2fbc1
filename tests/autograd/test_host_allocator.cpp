// Host tensors come from the same caching allocator as CUDA tensors
// (autograd/device.cpp): a training step that allocates what the previous step
// freed takes nothing from the system.
#include <gtest/gtest.h>

#include "caching_allocator_check.h"
#include "autograd/device.h"
#include "autograd/tensor.h"

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#endif

namespace echo {

TEST(HostAllocator, CachingAllocatorReusesBlocks) {
  check_caching_allocator(Device::CPU, host_allocator_stats, host_empty_cache);
}

TEST(HostAllocator, RepeatedStepsAllocateNothingNew) {
  // The shapes of a step, allocated and freed three times: the system is asked
  // for blocks only the first time.
  auto step = [] {
    std::vector<Tensor> live;
    for (int64_t n : {7, 4096, 300000, 5, 4096, 1 << 20}) live.push_back(Tensor::empty({n}));
  };
  step();
  const size_t calls = host_allocator_stats().system_alloc_calls;
  step();
  step();
  EXPECT_EQ(host_allocator_stats().system_alloc_calls, calls);
}

TEST(HostAllocator, PeakCountsTheMostLiveBytesSinceTheReset) {
  host_reset_peak();
  const size_t base = host_allocator_stats().allocated_bytes;
  {
    Tensor a = Tensor::empty({256 * 1024});  // 1 MiB: rounded to 2 MiB
    { Tensor b = Tensor::empty({1000}); }     // 4096 B, freed while a lives
    Tensor c = Tensor::empty({100});          // 512 B
    EXPECT_EQ(host_allocator_stats().peak_allocated_bytes, base + (size_t(2) << 20) + 4096);
  }
  EXPECT_EQ(host_allocator_stats().allocated_bytes, base);
  host_reset_peak();
  EXPECT_EQ(host_allocator_stats().peak_allocated_bytes, base);
}

TEST(HostAllocator, CachedBlocksArePoisonedUnderAddressSanitizer) {
#if defined(__SANITIZE_ADDRESS__)
  const float* p;
  {
    Tensor t = Tensor::empty({1000});  // 4000 B in a 4096 B block
    p = t.data<float>();
    EXPECT_FALSE(__asan_address_is_poisoned(p + 999));
    // The 96 B between the tensor's end and the block's end are not the tensor's.
    EXPECT_TRUE(__asan_address_is_poisoned(p + 1000));
  }
  // Freed into the cache: any access is a use after free.
  EXPECT_TRUE(__asan_address_is_poisoned(p));
#else
  GTEST_SKIP() << "only meaningful in an AddressSanitizer build (scripts/test.sh stage 2)";
#endif
}

}  // namespace echo
