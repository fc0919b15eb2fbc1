// GPU side of data-parallel training (train/distributed.cpp): the rank's GPU,
// and NCCL's all-reduce on device memory. Plain C++ interface (no CUDA or NCCL
// types), so the MPI code can call it from a .cpp file.
#pragma once

#include <cstddef>
#include <functional>
#include <string>
#include <utility>
#include <vector>

namespace echo::gpu {

// Makes GPU (local_rank mod visible GPUs) current; returns its index and the
// number of GPUs on this machine.
std::pair<int, int> select_device_for_rank(int local_rank);

// NCCL (built when nccl.h is found; libnccl.so.2 is opened at run time): an id is made on rank 0, broadcast over
// MPI, and every rank joins the communicator with it.
constexpr size_t kNcclIdBytes = 128;
bool nccl_built();
bool nccl_loadable(std::string* why);  // libnccl.so.2 opens (else *why says why)
std::string nccl_unique_id();  // kNcclIdBytes opaque bytes
void nccl_init(const std::string& id, int rank, int size);
bool nccl_ready();
void nccl_destroy();

// Sums the f32 device arrays pieces[i] (count elements each) over the ranks,
// in place: they are packed into one device buffer (one ncclAllReduce per
// bucket of at most bucket_elements), reduced, and unpacked. Synchronous:
// while the GPU works, `poll` is called every millisecond or so (it throws to
// give up: a dead peer would otherwise leave the stream waiting for ever; the
// communicator is then aborted).
void nccl_all_reduce_sum(const std::vector<std::pair<float*, size_t>>& pieces, size_t bucket_elements,
                         const std::function<void()>& poll);

}  // namespace echo::gpu
