// Data-parallel training over MPI ranks: see train/distributed.h for the
// mathematics and docs/distributed.md for launching and measurements.
#include "train/distributed.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <stdexcept>
#include <thread>

#include "autograd/device.h"

#if ECHO_HAVE_MPI
// The C API only: OpenMPI's mpi.h otherwise pulls in its deprecated C++
// bindings, which live in a library we do not link.
#define OMPI_SKIP_MPICXX 1
#define MPICH_SKIP_MPICXX 1
#include <mpi.h>
#endif
#if ECHO_HAVE_CUDA
#include "cuda/collectives.h"
#endif

namespace echo::dist {

namespace {

bool g_active = false;
int g_rank = 0, g_size = 1, g_local_rank = 0;

}  // namespace

bool active() { return g_active; }
int rank() { return g_rank; }
int size() { return g_size; }
int local_rank() { return g_local_rank; }

void check_global_batch(int64_t batch) {
  if (batch % g_size != 0)
    throw std::runtime_error("train: --batch " + std::to_string(batch) + " cannot be split evenly among " +
                             std::to_string(g_size) + " ranks (the global batch must be a multiple of the rank count)");
}

Share take_share(const Batch& global) {
  if (g_size == 1) return {global, 1.0};
  const int64_t B = global.tokens.size(0), T = global.tokens.size(1);
  const int64_t rows = B / g_size, lo = g_rank * rows;
  auto slice = [&](const Tensor& t) {
    if (!t.defined()) return Tensor();  // text batches have no context mask
    Tensor s = Tensor::empty({rows, T}, DType::I32);
    std::memcpy(s.data<int32_t>(), t.data<int32_t>() + lo * T, static_cast<size_t>(rows * T) * sizeof(int32_t));
    return s;
  };
  // w_r = n_r / n over scored targets (train/distributed.h); 0 when nothing
  // is scored (the loss is then 0 on every rank, as in one process).
  const int32_t* tgt = global.targets.data<int32_t>();
  int64_t n = 0, n_r = 0;
  for (int64_t i = 0; i < B * T; ++i)
    if (tgt[i] != kIgnoreIndex) {
      ++n;
      if (i >= lo * T && i < (lo + rows) * T) ++n_r;
    }
  return {{slice(global.tokens), slice(global.targets), slice(global.mask)},
          n > 0 ? static_cast<double>(n_r) / static_cast<double>(n) : 0.0};
}

int64_t gradient_bytes(const std::vector<ParamRef>& params) {
  int64_t n = 0;
  for (const auto& p : params) n += p.param.numel();
  return n * static_cast<int64_t>(sizeof(float));
}

#if ECHO_HAVE_MPI

namespace {

constexpr int kFailTag = 7001;
// Gradients are reduced in buckets of at most 64 MiB (16 Mi floats): few
// enough collectives that latency does not matter, and a bounded packing
// buffer next to the gradients.
constexpr size_t kBucketElements = (size_t(64) << 20) / sizeof(float);

std::vector<long> g_pids;        // per rank
std::vector<char> g_same_host;   // per rank: on this machine (its pid can be checked)
double g_timeout_s = 300;        // ECHO_DIST_TIMEOUT: rank 0's longest wait for the others
[[maybe_unused]] bool g_use_nccl = false;  // set in CUDA builds
std::vector<float> g_host;       // host packing buffer

void check(int rc, const char* what) {
  if (rc == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(rc, text, &len);
  throw std::runtime_error(std::string("MPI ") + what + ": " + std::string(text, len));
}

bool launched_by_mpi() {
  for (const char* v : {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK", "PMI_SIZE"})
    if (std::getenv(v)) return true;
  return false;
}

// Async-signal-safe text output (signal handler below).
void write_str(const char* s) {
  ssize_t r = ::write(STDERR_FILENO, s, std::strlen(s));
  (void)r;
}
void write_num(long v) {
  char buf[24];
  int i = 23;
  buf[i] = '\0';
  if (v == 0) buf[--i] = '0';
  while (v > 0 && i > 0) {
    buf[--i] = static_cast<char>('0' + v % 10);
    v /= 10;
  }
  write_str(buf + i);
}

// Ranks of this machine whose process is gone (kill(pid, 0) fails with ESRCH).
// Uses only kill(), so the signal handler may call it.
int first_dead_local_rank() {
  for (int r = 0; r < g_size; ++r)
    if (r != g_rank && g_same_host[r] && ::kill(static_cast<pid_t>(g_pids[r]), 0) != 0 && errno == ESRCH) return r;
  return -1;
}

// The launcher ends the job when a rank dies: it signals the others. Rank 0
// then says which rank went away before it goes.
void on_terminate(int sig) {
  int dead = first_dead_local_rank();
  if (dead >= 0) {
    write_str("echo-lm: rank ");
    write_num(dead);
    write_str(" (pid ");
    write_num(g_pids[dead]);
    write_str(") ended unexpectedly (killed or crashed); the job is stopping\n");
  } else {
    write_str("echo-lm: rank 0 stopped by signal ");
    write_num(sig);
    write_str(" from the launcher (another rank failed, or the job was cancelled)\n");
  }
  ::_exit(128 + sig);
}

[[noreturn]] void abort_job(const std::string& line) {
  std::signal(SIGTERM, SIG_DFL);  // the launcher's SIGTERM that follows needs no second line
  std::cerr << line << std::endl;
  MPI_Abort(MPI_COMM_WORLD, 1);
  std::_Exit(1);
}

// Rank 0, while it waits on the others: a rank's failure report, a rank
// whose process is gone, or a wait past the timeout ends the whole job with
// one line naming the rank.
void root_poll(const char* what, std::chrono::steady_clock::time_point start,
               std::chrono::steady_clock::time_point& last_pid_check) {
  if (g_rank != 0) return;
  int flag = 0;
  MPI_Status st;
  if (MPI_Iprobe(MPI_ANY_SOURCE, kFailTag, MPI_COMM_WORLD, &flag, &st) == MPI_SUCCESS && flag) {
    int len = 0;
    MPI_Get_count(&st, MPI_CHAR, &len);
    std::string msg(static_cast<size_t>(std::max(len, 0)), '\0');
    MPI_Recv(msg.data(), len, MPI_CHAR, st.MPI_SOURCE, kFailTag, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
    abort_job("echo-lm: rank " + std::to_string(st.MPI_SOURCE) + ": " + msg);
  }
  const auto now = std::chrono::steady_clock::now();
  if (now - last_pid_check > std::chrono::seconds(1)) {
    last_pid_check = now;
    int dead = first_dead_local_rank();
    if (dead >= 0)
      abort_job("echo-lm: rank " + std::to_string(dead) + " (pid " + std::to_string(g_pids[dead]) +
                ") ended unexpectedly (killed or crashed) during " + what + "; stopping the job");
  }
  if (g_timeout_s > 0 && std::chrono::duration<double>(now - start).count() > g_timeout_s)
    abort_job("echo-lm: rank 0 waited " + std::to_string(static_cast<long>(g_timeout_s)) + " s in " + what +
              " and a rank never arrived (stuck, or unreachable; ECHO_DIST_TIMEOUT sets the wait); stopping the job");
}

// Waits for a non-blocking collective. Polling instead of MPI_Wait keeps rank 0
// able to notice failures: a blocking collective with a dead peer never
// returns. MPI advances a non-blocking collective's rounds inside MPI_Test, so
// the sleep between tests stays short (≤ 100 µs) to keep a many-round
// reduction moving, while a rank that waits for slower ones leaves its core to
// them.
void wait(MPI_Request& req, const char* what) {
  const auto start = std::chrono::steady_clock::now();
  auto last_pid_check = start;
  int sleep_us = 0;
  for (;;) {
    int done = 0;
    check(MPI_Test(&req, &done, MPI_STATUS_IGNORE), what);
    if (done) return;
    root_poll(what, start, last_pid_check);
    if (sleep_us > 0) std::this_thread::sleep_for(std::chrono::microseconds(sleep_us));
    sleep_us = std::min(sleep_us * 2 + 1, 100);
  }
}

void all_reduce_host(float* data, size_t n) {
  MPI_Request req;
  check(MPI_Iallreduce(MPI_IN_PLACE, data, static_cast<int>(n), MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD, &req),
        "all-reduce of the gradients");
  wait(req, "the gradient all-reduce");
}

}  // namespace

void init(int* argc, char*** argv) {
  if (!launched_by_mpi()) return;
  check(MPI_Init(argc, argv), "MPI_Init");
  g_active = true;
  // Errors come back as codes (turned into exceptions), not as a silent abort.
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
  MPI_Comm_size(MPI_COMM_WORLD, &g_size);
  MPI_Comm local;
  check(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, g_rank, MPI_INFO_NULL, &local), "split by machine");
  MPI_Comm_rank(local, &g_local_rank);
  // Every rank's pid, and which ranks share this machine (a local rank's
  // death can be seen with kill(pid, 0)).
  // A machine is named by its lowest world rank.
  int my_node_leader = g_rank;
  MPI_Allreduce(MPI_IN_PLACE, &my_node_leader, 1, MPI_INT, MPI_MIN, local);
  MPI_Comm_free(&local);
  long mine[2] = {static_cast<long>(::getpid()), static_cast<long>(my_node_leader)};
  std::vector<long> all(2 * static_cast<size_t>(g_size));
  check(MPI_Allgather(mine, 2, MPI_LONG, all.data(), 2, MPI_LONG, MPI_COMM_WORLD), "exchange of pids");
  g_pids.assign(static_cast<size_t>(g_size), 0);
  g_same_host.assign(static_cast<size_t>(g_size), 0);
  for (int r = 0; r < g_size; ++r) {
    g_pids[r] = all[2 * r];
    g_same_host[r] = all[2 * r + 1] == my_node_leader;
  }
  if (const char* t = std::getenv("ECHO_DIST_TIMEOUT"); t && *t) g_timeout_s = std::atof(t);
  if (g_rank == 0 && g_size > 1) std::signal(SIGTERM, on_terminate);
}

void finalize() {
  if (!g_active) return;
#if ECHO_HAVE_CUDA
  gpu::nccl_destroy();
#endif
  MPI_Finalize();
  g_active = false;
}

void fail(const std::string& message) {
  if (g_rank == 0) abort_job("echo-lm: " + message);
  // Tell rank 0, then give it 30 s to report and end the job. At most 1000
  // bytes: below every transport's eager limit, so the send returns even
  // while rank 0 is still computing.
  const std::string text = message.substr(0, 1000);
  MPI_Send(text.data(), static_cast<int>(text.size()), MPI_CHAR, 0, kFailTag, MPI_COMM_WORLD);
  for (int i = 0; i < 300; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  abort_job("echo-lm: rank " + std::to_string(g_rank) + ": " + message);
}

void select_device() {
#if ECHO_HAVE_CUDA
  if (!cuda_available()) return;  // the model's move to CUDA reports it
  const int gpus = gpu::select_device_for_rank(g_local_rank).second;
  if (g_size == 1) return;
  // NCCL needs a GPU of its own per rank: it refuses two ranks on one device.
  // All ranks must agree, so the machine with the fewest GPUs per rank decides.
  int local_ranks = 0;
  for (int r = 0; r < g_size; ++r) local_ranks += g_same_host[r];
  std::string why;
  int ok = gpus < local_ranks ? 0 : gpu::nccl_loadable(&why) ? 1 : 0;
  if (gpus < local_ranks) why = std::to_string(local_ranks) + " ranks share " + std::to_string(gpus) + " GPU(s) on a machine";
  MPI_Request req;
  check(MPI_Iallreduce(MPI_IN_PLACE, &ok, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD, &req), "NCCL agreement");
  wait(req, "the NCCL set-up");
  g_use_nccl = ok == 1;
  if (g_use_nccl) {
    std::string id = g_rank == 0 ? gpu::nccl_unique_id() : std::string(gpu::kNcclIdBytes, '\0');
    check(MPI_Ibcast(id.data(), static_cast<int>(id.size()), MPI_BYTE, 0, MPI_COMM_WORLD, &req), "NCCL id broadcast");
    wait(req, "the NCCL id broadcast");
    gpu::nccl_init(id, g_rank, g_size);
  } else if (g_rank == 0) {
    std::cout << "data parallel: " << (why.empty() ? "another rank cannot use NCCL" : why)
              << ": GPU gradients are all-reduced through host memory (MPI)" << std::endl;
  }
#endif
}

void all_reduce_gradients(const std::vector<ParamRef>& params) {
  if (g_size == 1) return;
  // Every rank has the same parameters with gradients (the same graph), so
  // the packing order is the same everywhere.
  std::vector<Tensor> grads;
  for (const auto& p : params) {
    Tensor g = p.param.grad();
    if (!g.defined()) continue;
    if (g.dtype() != DType::F32)
      throw std::runtime_error("data-parallel training supports f32 gradients, got " + g.describe() + " for " + p.name);
    grads.push_back(g);
  }
#if ECHO_HAVE_CUDA
  if (g_use_nccl && !grads.empty() && grads[0].device() == Device::CUDA) {
    std::vector<std::pair<float*, size_t>> pieces;
    for (auto& g : grads) pieces.push_back({g.data<float>(), static_cast<size_t>(g.numel())});
    const auto start = std::chrono::steady_clock::now();
    auto last_pid_check = start;
    gpu::nccl_all_reduce_sum(pieces, kBucketElements,
                             [&] { root_poll("the gradient all-reduce (NCCL)", start, last_pid_check); });
    for (auto& g : grads) g.bump_version();
    return;
  }
#endif
  // Host buckets: consecutive gradients packed up to kBucketElements (one
  // larger gradient forms its own bucket), one MPI_Allreduce each. CUDA
  // gradients without NCCL are staged through host copies.
  size_t i = 0;
  while (i < grads.size()) {
    size_t j = i, used = 0;
    while (j < grads.size() && (j == i || used + grads[j].numel() <= kBucketElements))
      used += static_cast<size_t>(grads[j++].numel());
    if (g_host.size() < used) g_host.resize(used);
    size_t off = 0;
    for (size_t k = i; k < j; ++k) {
      Tensor h = grads[k].device() == Device::CPU ? grads[k] : grads[k].detach().to(Device::CPU);
      std::memcpy(g_host.data() + off, h.data<float>(), h.nbytes());
      off += static_cast<size_t>(h.numel());
    }
    all_reduce_host(g_host.data(), used);
    off = 0;
    for (size_t k = i; k < j; ++k) {
      Tensor& g = grads[k];
      if (g.device() == Device::CPU) {
        std::memcpy(g.data<float>(), g_host.data() + off, g.nbytes());
        g.bump_version();
      } else {
        Tensor h = Tensor::empty(g.shape(), DType::F32);
        std::memcpy(h.data<float>(), g_host.data() + off, g.nbytes());
        g.copy_(h);
      }
      off += static_cast<size_t>(g.numel());
    }
    i = j;
  }
}

Agreement agree(double loss, bool finite, double grad_norm, bool interrupted) {
  if (g_size == 1) return {loss, finite, grad_norm, interrupted};
  // All-gather instead of all-reduce: every rank then sums the same values in
  // the same (rank) order, so the results are bit-identical on all ranks
  // whatever algorithm MPI picks.
  double mine[4] = {loss, finite ? 1.0 : 0.0, grad_norm, interrupted ? 1.0 : 0.0};
  std::vector<double> all(4 * static_cast<size_t>(g_size));
  MPI_Request req;
  check(MPI_Iallgather(mine, 4, MPI_DOUBLE, all.data(), 4, MPI_DOUBLE, MPI_COMM_WORLD, &req),
        "all-gather of the step's loss and flags");
  wait(req, "the step's agreement");
  Agreement a{0, true, all[2], false};
  for (int r = 0; r < g_size; ++r) {
    a.loss += all[4 * r];
    a.finite = a.finite && all[4 * r + 1] != 0;
    a.interrupted = a.interrupted || all[4 * r + 3] != 0;
  }
  if (!a.finite) a.grad_norm = NAN;
  return a;
}

#else  // built without MPI: one process, every hook a no-op

void init(int*, char***) {}
void finalize() {}
void fail(const std::string& message) {
  std::cerr << "echo-lm: " << message << std::endl;
  std::_Exit(1);
}
void select_device() {}
void all_reduce_gradients(const std::vector<ParamRef>&) {}
Agreement agree(double loss, bool finite, double grad_norm, bool interrupted) {
  return {loss, finite, grad_norm, interrupted};
}

#endif

}  // namespace echo::dist
