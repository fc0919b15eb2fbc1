// GPU collectives for data-parallel training: the rank's device and NCCL's
// all-reduce (cuda/collectives.h). Everything runs on the default stream, the
// stream of every other kernel, so the reduction is ordered after backward and
// before the optimizer without extra events.
#include "cuda/collectives.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <thread>
#include <type_traits>
#include <stdexcept>

#include "cuda/common.cuh"

#if ECHO_HAVE_NCCL
#include <dlfcn.h>
#include <nccl.h>
#endif

namespace echo::gpu {

std::pair<int, int> select_device_for_rank(int local_rank) {
  int count = 0;
  check_cuda(cudaGetDeviceCount(&count), "cudaGetDeviceCount");
  if (count < 1) throw std::runtime_error("no CUDA device on this machine");
  const int device = local_rank % count;
  check_cuda(cudaSetDevice(device), "cudaSetDevice");
  return {device, count};
}

#if ECHO_HAVE_NCCL

namespace {

// libnccl is opened when a job first needs it, not linked: it weighs about
// 200 MB, and a binary that requires it at load time would not even start on
// a machine without it, though only multi-GPU jobs use it.
struct Nccl {
  void* lib = nullptr;
  std::string error;
  decltype(&ncclGetUniqueId) get_unique_id = nullptr;
  decltype(&ncclCommInitRank) comm_init_rank = nullptr;
  decltype(&ncclAllReduce) all_reduce = nullptr;
  decltype(&ncclCommGetAsyncError) get_async_error = nullptr;
  decltype(&ncclCommAbort) comm_abort = nullptr;
  decltype(&ncclCommDestroy) comm_destroy = nullptr;
  decltype(&ncclGetErrorString) error_string = nullptr;
  Nccl() {
    for (const char* name : {"libnccl.so.2", "libnccl.so"})
      if ((lib = dlopen(name, RTLD_NOW | RTLD_LOCAL)) != nullptr) break;
    if (!lib) {
      error = std::string("cannot load libnccl.so.2: ") + dlerror();
      return;
    }
    auto sym = [&](auto& fn, const char* name) {
      fn = reinterpret_cast<std::decay_t<decltype(fn)>>(dlsym(lib, name));
      if (!fn && error.empty()) error = std::string("libnccl has no ") + name;
    };
    sym(get_unique_id, "ncclGetUniqueId");
    sym(comm_init_rank, "ncclCommInitRank");
    sym(all_reduce, "ncclAllReduce");
    sym(get_async_error, "ncclCommGetAsyncError");
    sym(comm_abort, "ncclCommAbort");
    sym(comm_destroy, "ncclCommDestroy");
    sym(error_string, "ncclGetErrorString");
  }
};

const Nccl& nccl() {
  static Nccl n;
  if (!n.error.empty()) throw std::runtime_error(n.error);
  return n;
}

ncclComm_t g_comm = nullptr;
float* g_flat = nullptr;  // the packing buffer, kept between steps
size_t g_flat_elements = 0;

void check_nccl(ncclResult_t r, const char* what) {
  if (r != ncclSuccess) throw std::runtime_error(std::string(what) + ": " + nccl().error_string(r));
}

}  // namespace

bool nccl_built() { return true; }

bool nccl_loadable(std::string* why) {
  try {
    nccl();
    return true;
  } catch (const std::exception& e) {
    if (why) *why = e.what();
    return false;
  }
}

std::string nccl_unique_id() {
  ncclUniqueId id;
  check_nccl(nccl().get_unique_id(&id), "ncclGetUniqueId");
  static_assert(sizeof(ncclUniqueId) == kNcclIdBytes, "NCCL id size");
  return std::string(reinterpret_cast<const char*>(&id), sizeof id);
}

void nccl_init(const std::string& id_bytes, int rank, int size) {
  if (id_bytes.size() != sizeof(ncclUniqueId)) throw std::runtime_error("nccl_init: bad id size");
  ncclUniqueId id;
  std::memcpy(&id, id_bytes.data(), sizeof id);
  check_nccl(nccl().comm_init_rank(&g_comm, size, id, rank), "ncclCommInitRank");
}

bool nccl_ready() { return g_comm != nullptr; }

void nccl_destroy() {
  if (g_flat) cudaFree(g_flat);
  g_flat = nullptr;
  g_flat_elements = 0;
  if (g_comm) nccl().comm_destroy(g_comm);
  g_comm = nullptr;
}

void nccl_all_reduce_sum(const std::vector<std::pair<float*, size_t>>& pieces, size_t bucket_elements,
                         const std::function<void()>& poll) {
  if (!g_comm) throw std::runtime_error("nccl_all_reduce_sum: the NCCL communicator is not set up");
  size_t largest = 0, total = 0;
  for (const auto& p : pieces) {
    largest = std::max(largest, p.second);
    total += p.second;
  }
  const size_t need = std::min(total, std::max(bucket_elements, largest));
  if (need > g_flat_elements) {
    if (g_flat) check_cuda(cudaFree(g_flat), "cudaFree");
    g_flat = nullptr;
    check_cuda(cudaMalloc(&g_flat, need * sizeof(float)), "cudaMalloc (gradient bucket)");
    g_flat_elements = need;
  }
  // Greedy buckets of consecutive pieces: pack (device-to-device copies),
  // one ncclAllReduce, unpack.
  size_t i = 0;
  while (i < pieces.size()) {
    size_t j = i, used = 0;
    while (j < pieces.size() && (j == i || used + pieces[j].second <= need)) used += pieces[j++].second;
    size_t off = 0;
    for (size_t k = i; k < j; ++k) {
      check_cuda(cudaMemcpyAsync(g_flat + off, pieces[k].first, pieces[k].second * sizeof(float),
                                 cudaMemcpyDeviceToDevice, 0), "cudaMemcpyAsync (pack)");
      off += pieces[k].second;
    }
    check_nccl(nccl().all_reduce(g_flat, g_flat, used, ncclFloat32, ncclSum, g_comm, 0), "ncclAllReduce");
    off = 0;
    for (size_t k = i; k < j; ++k) {
      check_cuda(cudaMemcpyAsync(pieces[k].first, g_flat + off, pieces[k].second * sizeof(float),
                                 cudaMemcpyDeviceToDevice, 0), "cudaMemcpyAsync (unpack)");
      off += pieces[k].second;
    }
    i = j;
  }
  // Wait without blocking in the driver, so that a peer that never arrives
  // ends in an error instead of a hang.
  for (;;) {
    cudaError_t q = cudaStreamQuery(0);
    if (q == cudaSuccess) break;
    if (q != cudaErrorNotReady) check_cuda(q, "ncclAllReduce (stream)");
    ncclResult_t async = ncclSuccess;
    check_nccl(nccl().get_async_error(g_comm, &async), "ncclCommGetAsyncError");
    try {
      check_nccl(async, "ncclAllReduce");
      poll();
    } catch (...) {
      nccl().comm_abort(g_comm);
      g_comm = nullptr;
      throw;
    }
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
}

#else  // a CUDA build without NCCL: GPU gradients go through host memory (MPI)

bool nccl_built() { return false; }
bool nccl_loadable(std::string* why) {
  if (why) *why = "this build has no NCCL";
  return false;
}
std::string nccl_unique_id() { throw std::runtime_error("this build has no NCCL"); }
void nccl_init(const std::string&, int, int) { throw std::runtime_error("this build has no NCCL"); }
bool nccl_ready() { return false; }
void nccl_destroy() {}
void nccl_all_reduce_sum(const std::vector<std::pair<float*, size_t>>&, size_t, const std::function<void()>&) {
  throw std::runtime_error("this build has no NCCL");
}

#endif

}  // namespace echo::gpu
