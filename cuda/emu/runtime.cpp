// The emulated CUDA device: memory, errors, device properties and the grid
// scheduler that runs kernels on the CPU (docs/cuda.md).
//
// A launch runs its blocks on a few host threads (blocks are independent, as on
// the GPU). Within a block every CUDA thread is a fiber. The scheduler runs, in
// the chosen order (in order, reversed or seeded random), each ready thread until
// it blocks at a barrier or warp rendezvous or finishes; then it releases what
// can be released and goes round again. So between two barriers the threads of a
// block run one after another, in an order the test picks, and a kernel whose
// output depends on that order has a race.
#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <set>
#include <stdexcept>
#include <string>
#include <fcntl.h>
#include <sys/mman.h>
#include <thread>
#include <unistd.h>
#include <vector>

#include <cuda_runtime.h>

#include "cuda/emu/fiber.h"

#if ECHO_EMU_ASAN
#include <sanitizer/asan_interface.h>
#endif

namespace echo::emu {
namespace {

// ---- limits of the emulated device (an sm_90 part, as an H100/H200) ------------------
constexpr unsigned kMaxThreadsPerBlock = 1024;
constexpr unsigned kMaxBlockDim[3] = {1024, 1024, 64};
constexpr unsigned long long kMaxGrid[3] = {0x7fffffffULL, 65535, 65535};
constexpr size_t kSharedDefault = 48 * 1024;   // per block without the opt-in attribute
constexpr size_t kSharedOptin = 227 * 1024;    // per block with it
constexpr size_t kSharedPerSM = 228 * 1024;
constexpr int kSMs = 132;

// Poison for fresh device memory and shared memory: as f32 every word is a NaN
// (0xFFA0FFA0 signalling, 0xFFF4FFA0 quiet), as f64 a signalling NaN, as bf16
// every half-word a NaN, as integers large negative values.
constexpr uint64_t kPoison = 0xFFF4FFA0FFA0FFA0ULL;
void poison(void* p, size_t bytes) {
  auto* c = static_cast<unsigned char*>(p);
  size_t i = 0;
  for (; i + 8 <= bytes; i += 8) std::memcpy(c + i, &kPoison, 8);
  if (i < bytes) std::memcpy(c + i, &kPoison, bytes - i);
}

// Without AddressSanitizer each device allocation is followed by a redzone of
// canary bytes, checked after every launch: a kernel that writes past the end
// of a buffer is reported by name. (Under ASan the allocation is exact and ASan
// reports reads as well as writes, at the faulting access.)
constexpr size_t kRedzone = ECHO_EMU_ASAN ? 0 : 256;
constexpr unsigned char kCanary = 0xCB;

std::string base_name(const char* path) {
  std::string s = path ? path : "?";
  const size_t slash = s.find_last_of('/');
  return slash == std::string::npos ? s : s.substr(slash + 1);
}
std::string kernel_label(const LaunchConfig& c) { return c.kernel + std::string(" (") + base_name(c.file) + ")"; }
// "file:kernel", the name as declared: a template kernel launched as
// kernel<Real> is one kernel of the source for every Real (the coverage test
// greps declarations; the shared-memory opt-in names it the same way).
std::string kernel_key(const char* file, const char* kernel) {
  std::string name = kernel;
  const size_t angle = name.find('<');
  if (angle != std::string::npos) name.resize(angle);
  return base_name(file) + ":" + name;
}

// ---- errors: the last one, with a message that names the kernel ----------------------
struct ErrorState {
  cudaError_t last = cudaSuccess;
  cudaError_t detailed_code = cudaSuccess;
  std::string detail;
};
ErrorState& errors() {
  static thread_local ErrorState e;
  return e;
}
cudaError_t fail(cudaError_t code, const std::string& message) {
  errors().last = code;
  errors().detailed_code = code;
  errors().detail = std::string(cudaGetErrorName(code)) + ": " + message;
  return code;
}

// ---- device allocations: each its own heap block ---------------------------------------
struct Allocations {
  std::mutex mu;
  struct Extent {
    size_t capacity;  // bytes allocated
    size_t used;      // bytes the owner uses (set_used_bytes); the rest is checked like the redzone
  };
  std::map<uintptr_t, Extent> live;  // base → extent (device memory and pinned host memory)
  size_t bytes = 0;
};
Allocations& allocations() {
  static auto* a = new Allocations();
  return *a;
}
// The redzone of one allocation (and its unused tail), checked and re-armed:
// a message naming the damage, or "".
std::string check_redzone(uintptr_t base, Allocations::Extent& e) {
  unsigned char* z = reinterpret_cast<unsigned char*>(base) + e.used;
  const size_t n = e.capacity - e.used + kRedzone;
  for (size_t i = 0; i < n; ++i)
    if (z[i] != kCanary) {
      std::memset(z, kCanary, n);  // report once
      return "wrote past the end of a device buffer of " + std::to_string(e.used) + " bytes (byte " +
             std::to_string(i) + " beyond its end)";
    }
  return "";
}

// After a launch: the redzones of the allocations its pointer arguments point
// into, and every 64th launch (and at cudaDeviceSynchronize) those of all live
// allocations, for pointers a kernel received inside a struct.
thread_local std::vector<uintptr_t> t_argument_allocations;
std::string damaged_redzone(bool everything) {
  if (kRedzone == 0) return "";
  auto& a = allocations();
  std::lock_guard<std::mutex> lock(a.mu);
  std::string found;
  if (everything) {
    for (auto& [base, e] : a.live)
      if (found.empty()) found = check_redzone(base, e);
  } else {
    for (uintptr_t base : t_argument_allocations) {
      auto it = a.live.find(base);
      if (it != a.live.end() && found.empty()) found = check_redzone(base, it->second);
    }
  }
  return found;
}

// The allocation holding [p, p + bytes), or false; its base into *base.
bool inside_allocation(const void* p, size_t bytes, uintptr_t* base = nullptr) {
  auto& a = allocations();
  std::lock_guard<std::mutex> lock(a.mu);
  const uintptr_t x = reinterpret_cast<uintptr_t>(p);
  auto it = a.live.upper_bound(x);
  if (it == a.live.begin()) return false;
  --it;
  const size_t size = it->second.used;
  if (base) *base = it->first;
  return x >= it->first && x - it->first <= size && bytes <= size - (x - it->first);
}

// ---- kernel attributes, by "file:kernel" -------------------------------------------------
std::mutex g_attr_mu;
std::map<std::string, int> g_max_dynamic_shared;
std::set<std::string> g_launched;

// With ECHO_EMU_COVERAGE_DIR set, the first launch of each kernel in a process
// appends "file:kernel" to DIR/launched.txt (the coverage test reads it after
// the whole suite ran; one short O_APPEND write per line, so processes running
// side by side do not interleave within a line).
void record_coverage(const std::string& key) {
  const char* dir = std::getenv("ECHO_EMU_COVERAGE_DIR");
  if (!dir || !*dir) return;
  const std::string path = std::string(dir) + "/launched.txt", line = key + "\n";
  const int fd = open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) return;
  if (write(fd, line.data(), line.size()) < 0) { /* coverage is best effort; the test reports what is missing */ }
  close(fd);
}

// ---- the schedule ----------------------------------------------------------------------
// ECHO_EMU_SCHEDULE=in-order|reversed|random[:SEED] picks the schedule of a whole
// process (CI runs the suite once in order and once at random).
Schedule schedule_from_environment(uint64_t* seed) {
  const char* s = std::getenv("ECHO_EMU_SCHEDULE");
  *seed = 0;
  if (!s || !*s) return Schedule::InOrder;
  const std::string v = s;
  if (v == "in-order") return Schedule::InOrder;
  if (v == "reversed") return Schedule::Reversed;
  if (v.rfind("random", 0) == 0) {
    if (v.size() > 7 && v[6] == ':') *seed = std::strtoull(v.c_str() + 7, nullptr, 10);
    return Schedule::Random;
  }
  std::fprintf(stderr, "ECHO_EMU_SCHEDULE=%s: expected in-order, reversed or random[:SEED]\n", s);
  std::exit(2);
}
uint64_t g_env_seed = 0;
std::atomic<int> g_schedule{static_cast<int>(schedule_from_environment(&g_env_seed))};
std::atomic<uint64_t> g_seed{g_env_seed};

int worker_count() {
  static const int n = [] {
    if (const char* s = std::getenv("ECHO_EMU_THREADS")) {
      const int v = std::atoi(s);
      if (v >= 1 && v <= 256) return v;
    }
    const unsigned hw = std::thread::hardware_concurrency();
    return hw == 0 ? 1 : static_cast<int>(std::min(hw, 8u));
  }();
  return n;
}
size_t stack_bytes() {
  static const size_t n = [] {
    size_t kb = ECHO_EMU_ASAN ? 512 : 128;
    if (const char* s = std::getenv("ECHO_EMU_STACK_KB")) {
      const long v = std::atol(s);
      if (v >= 16 && v <= 65536) kb = static_cast<size_t>(v);
    }
    return kb * 1024;
  }();
  return n;
}

// ---- the scheduler's view of threads and blocks ---------------------------------------------
enum class State { Ready, AtBarrier, AtWarp, Done, Faulted };

struct ThreadState : Thread {
  Fiber fiber;
  State state = State::Ready;
  int predicate = 0;     // __syncthreads_or/and/count contribution
  int barrier_result = 0;
  unsigned warp_mask = 0;
  int warp_width = 32;
  int source = -1;
  uint64_t deposit = 0, result = 0;
};

struct Worker;

struct BlockState : Block {
  const LaunchConfig* config = nullptr;
  ThreadEntry entry = nullptr;
  void* closure = nullptr;
  Worker* worker = nullptr;
  int n_threads = 0;
  std::vector<ThreadState>* threads = nullptr;
  void* dynamic = nullptr;
  std::vector<std::pair<const void*, void*>> statics;
  size_t static_bytes = 0;
  std::string fault;  // set by the thread that found a problem
};

// One host thread that runs blocks: its scheduler fiber and a stack per CUDA thread.
struct Worker {
  Fiber scheduler;
  std::vector<ThreadState> threads;
  char* stacks = nullptr;
  size_t stacks_reserved = 0;
  ThreadState* current = nullptr;
  BlockState* block = nullptr;
  std::vector<int> order;  // the schedule of the block being run

  ~Worker() {
    if (stacks) munmap(stacks, stacks_reserved);
  }
  // Stacks for n threads, each with a guard page below it (an overflow is a
  // SIGSEGV at once, not corruption of the neighbouring stack).
  void reserve(int n) {
    const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
    const size_t each = stack_bytes() + page;
    if (static_cast<size_t>(n) * each <= stacks_reserved) return;
    if (stacks) munmap(stacks, stacks_reserved);
    const size_t total = static_cast<size_t>(kMaxThreadsPerBlock) * each;
    void* p = mmap(nullptr, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) throw std::runtime_error("emulated CUDA device: cannot reserve fiber stacks");
    stacks = static_cast<char*>(p);
    stacks_reserved = total;
    for (unsigned i = 0; i < kMaxThreadsPerBlock; ++i) mprotect(stacks + i * each, page, PROT_NONE);
    threads.assign(kMaxThreadsPerBlock, ThreadState{});
    for (unsigned i = 0; i < kMaxThreadsPerBlock; ++i) {
      threads[i].fiber.stack = stacks + i * each + page;
      threads[i].fiber.stack_size = stack_bytes();
    }
  }
};

thread_local Worker* t_worker = nullptr;
Worker& this_worker() {
  static thread_local std::unique_ptr<Worker> w;
  if (!w) w = std::make_unique<Worker>();
  t_worker = w.get();
  return *w;
}

struct FiberAbort {};

// A fault found on a fiber: record it and leave the fiber for good.
[[noreturn]] void fault_here(const std::string& what) {
  Worker* w = t_worker;
  ThreadState* t = w ? w->current : nullptr;
  if (!t) throw std::runtime_error("emulated CUDA device: " + what + " (outside a kernel)");
  BlockState* b = w->block;
  if (b->fault.empty()) {
    b->fault = kernel_label(*b->config) + ", block (" + std::to_string(b->block_idx.x) + "," +
               std::to_string(b->block_idx.y) + "," + std::to_string(b->block_idx.z) + "), thread (" +
               std::to_string(t->thread_idx.x) + "," + std::to_string(t->thread_idx.y) + "," +
               std::to_string(t->thread_idx.z) + "): " + what;
  }
  t->state = State::Faulted;
  // Unwinds this fiber's frames (and the temporaries they hold) down to
  // thread_main, which leaves the fiber for good.
  throw FiberAbort{};
}

// Gives control back to the scheduler until this thread is released.
void wait_for_release(ThreadState& t) {
  Worker& w = *t_worker;
  fiber_switch(t.fiber, w.scheduler);
}

void thread_main(void* arg) {
  auto* t = static_cast<ThreadState*>(arg);
  Worker& w = *t_worker;
  fiber_arrived(t->fiber, w.scheduler);
  BlockState* b = w.block;
  try {
    b->entry(b->closure);
    t->state = State::Done;
  } catch (const FiberAbort&) {
    // fault_here recorded the fault and marked the thread
  }
  fiber_exit_to(t->fiber, w.scheduler);
}

std::string mask_hex(unsigned m) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "0x%08x", m);
  return buf;
}

// After a round in which every thread ran until it blocked: release a block
// barrier that all threads reached and every warp rendezvous whose lanes all
// arrived. Returns whether anything was released; sets b.fault for a barrier
// that can never complete.
bool release(BlockState& b) {
  std::vector<ThreadState>& th = *b.threads;
  const int n = b.n_threads;
  int at_barrier = 0, done = 0;
  for (int i = 0; i < n; ++i) {
    at_barrier += th[i].state == State::AtBarrier;
    done += th[i].state == State::Done;
  }
  bool released = false;
  if (at_barrier == n) {
    int any = 0, all = 1, count = 0;
    for (int i = 0; i < n; ++i) {
      any |= th[i].predicate != 0;
      all &= th[i].predicate != 0;
      count += th[i].predicate != 0;
    }
    for (int i = 0; i < n; ++i) {
      th[i].state = State::Ready;
      th[i].barrier_result = count;
      th[i].predicate = any | (all << 1);
    }
    return true;
  }
  if (at_barrier > 0 && at_barrier + done == n) {
    std::string exited;
    int listed = 0;
    for (int i = 0; i < n && listed < 8; ++i)
      if (th[i].state == State::Done) exited += (listed++ ? "," : "") + std::to_string(i);
    b.fault = kernel_label(*b.config) + ", block (" + std::to_string(b.block_idx.x) + "," +
              std::to_string(b.block_idx.y) + "," + std::to_string(b.block_idx.z) +
              "): __syncthreads() reached by " + std::to_string(at_barrier) + " of " + std::to_string(n) +
              " threads; the others returned (threads " + exited + (done > listed ? ",..." : "") +
              "): a barrier every thread of the block must reach";
    return false;
  }
  // Warp rendezvous, warp by warp.
  for (int base = 0; base < n; base += 32) {
    const int lanes = std::min(32, n - base);
    for (int l = 0; l < lanes; ++l) {
      ThreadState& t = th[base + l];
      if (t.state != State::AtWarp) continue;
      const unsigned mask = t.warp_mask;
      bool complete = true;
      for (int m = 0; m < 32 && complete; ++m) {
        if (!(mask >> m & 1u)) continue;
        if (m >= lanes) {
          b.fault = kernel_label(*b.config) + ": warp rendezvous with mask " + mask_hex(mask) + " names lane " +
                    std::to_string(m) + ", which does not exist (block of " + std::to_string(n) + " threads)";
          return false;
        }
        const ThreadState& o = th[base + m];
        if (o.state == State::Done) {
          b.fault = kernel_label(*b.config) + ": warp rendezvous with mask " + mask_hex(mask) + ": lane " +
                    std::to_string(m) + " of warp " + std::to_string(base / 32) + " has returned";
          return false;
        }
        if (o.state != State::AtWarp) complete = false;
        else if (o.warp_mask != mask) {
          b.fault = kernel_label(*b.config) + ": lanes of warp " + std::to_string(base / 32) +
                    " meet at a warp rendezvous with different masks (" + mask_hex(mask) + " and " +
                    mask_hex(o.warp_mask) + ")";
          return false;
        }
      }
      if (!complete) continue;
      for (int m = 0; m < lanes; ++m) {
        if (!(mask >> m & 1u)) continue;
        ThreadState& o = th[base + m];
        const int src = o.source < 0 ? m : o.source;
        if (!(mask >> src & 1u)) {
          b.fault = kernel_label(*b.config) + ": lane " + std::to_string(m) + " of warp " +
                    std::to_string(base / 32) + " reads lane " + std::to_string(src) + ", outside the mask " +
                    mask_hex(mask) + " (undefined on the GPU)";
          return false;
        }
        o.result = th[base + src].deposit;
      }
      unsigned ballot = 0;
      for (int m = 0; m < lanes; ++m)
        if ((mask >> m & 1u) && th[base + m].predicate) ballot |= 1u << m;
      for (int m = 0; m < lanes; ++m) {
        if (!(mask >> m & 1u)) continue;
        th[base + m].state = State::Ready;
        th[base + m].barrier_result = static_cast<int>(ballot);
      }
      released = true;
    }
  }
  return released;
}

std::string describe_deadlock(const BlockState& b) {
  const std::vector<ThreadState>& th = *b.threads;
  int at_barrier = 0, at_warp = 0, done = 0;
  for (int i = 0; i < b.n_threads; ++i) {
    at_barrier += th[i].state == State::AtBarrier;
    at_warp += th[i].state == State::AtWarp;
    done += th[i].state == State::Done;
  }
  return kernel_label(*b.config) + ", block (" + std::to_string(b.block_idx.x) + "," +
         std::to_string(b.block_idx.y) + "," + std::to_string(b.block_idx.z) + "): deadlock: " +
         std::to_string(at_barrier) + " threads wait at __syncthreads(), " + std::to_string(at_warp) +
         " at a warp rendezvous (shuffle, vote or __syncwarp), " + std::to_string(done) + " returned";
}

uint64_t mix(uint64_t x) {  // splitmix64 finaliser
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// Runs one block to completion on this host thread. Returns "" or the fault.
std::string run_block(Worker& w, const LaunchConfig& c, ThreadEntry entry, void* closure, uint64_t linear_block) {
  const dim3 bd = c.block, gd = c.grid;
  const int n = static_cast<int>(bd.x * bd.y * bd.z);
  w.reserve(n);
  BlockState b;
  b.block_idx = uint3{static_cast<unsigned>(linear_block % gd.x), static_cast<unsigned>((linear_block / gd.x) % gd.y),
                      static_cast<unsigned>(linear_block / (static_cast<uint64_t>(gd.x) * gd.y))};
  b.block_dim = bd;
  b.grid_dim = gd;
  b.config = &c;
  b.entry = entry;
  b.closure = closure;
  b.worker = &w;
  b.n_threads = n;
  b.threads = &w.threads;
  if (c.shared_bytes > 0) {
    b.dynamic = std::malloc(c.shared_bytes);
    if (!b.dynamic) throw std::runtime_error("emulated CUDA device: out of host memory for shared memory");
    poison(b.dynamic, c.shared_bytes);
  }
  w.block = &b;
  for (int i = 0; i < n; ++i) {
    ThreadState& t = w.threads[i];
    t.thread_idx = uint3{static_cast<unsigned>(i % bd.x), static_cast<unsigned>((i / bd.x) % bd.y),
                         static_cast<unsigned>(i / (bd.x * bd.y))};
    t.block = &b;
    t.linear = i;
    t.state = State::Ready;
    t.predicate = 0;
    t.source = -1;
    fiber_prepare(t.fiber, &thread_main, &t);
  }
  const Schedule schedule = static_cast<Schedule>(g_schedule.load());
  std::vector<int>& order = w.order;
  order.resize(n);
  for (int i = 0; i < n; ++i) order[i] = schedule == Schedule::Reversed ? n - 1 - i : i;
  uint64_t round = 0;
  int finished = 0;
  while (b.fault.empty()) {
    if (schedule == Schedule::Random) {
      std::mt19937_64 rng(mix(g_seed.load() ^ mix(linear_block) ^ mix(round + 0x51ed)));
      std::shuffle(order.begin(), order.end(), rng);
    }
    ++round;
    bool ran = false;
    for (int idx : order) {
      ThreadState& t = w.threads[idx];
      if (t.state != State::Ready) continue;
      ran = true;
      w.current = &t;
      t_current_thread = &t;
      fiber_switch(w.scheduler, t.fiber);
      t_current_thread = nullptr;
      w.current = nullptr;
      if (t.state == State::Done) ++finished;
      if (!b.fault.empty()) break;
    }
    if (!b.fault.empty() || finished == n) break;
    const bool released = release(b);
    if (!b.fault.empty()) break;
    if (!ran && !released) b.fault = describe_deadlock(b);
  }
  // Fibers left behind by a fault are abandoned: their stacks are reused.
  if (!b.fault.empty())
    for (int i = 0; i < n; ++i)
      if (w.threads[i].state != State::Done) fiber_forget(w.threads[i].fiber);
  std::free(b.dynamic);
  for (auto& s : b.statics) std::free(s.second);
  w.block = nullptr;
  return b.fault;
}

// ---- the pool of host threads that share a grid's blocks ----------------------------------
struct GridJob {
  const LaunchConfig* config;
  ThreadEntry entry;
  void* closure;
  uint64_t blocks;
  std::atomic<uint64_t> next{0};
  std::mutex mu;
  std::string fault;
  std::exception_ptr error;
};

void run_blocks(GridJob& job) {
  Worker& w = this_worker();
  for (;;) {
    {
      std::lock_guard<std::mutex> lock(job.mu);
      if (!job.fault.empty() || job.error) return;
    }
    const uint64_t blk = job.next.fetch_add(1);
    if (blk >= job.blocks) return;
    std::string fault;
    try {
      fault = run_block(w, *job.config, job.entry, job.closure, blk);
    } catch (...) {
      std::lock_guard<std::mutex> lock(job.mu);
      if (!job.error) job.error = std::current_exception();
      return;
    }
    if (!fault.empty()) {
      std::lock_guard<std::mutex> lock(job.mu);
      if (job.fault.empty()) job.fault = fault;
      return;
    }
  }
}

class Pool {
 public:
  explicit Pool(int helpers) {
    for (int i = 0; i < helpers; ++i) threads_.emplace_back([this] { loop(); });
  }
  ~Pool() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    for (auto& t : threads_) t.join();
  }
  // Runs the job on the helpers and the calling thread; returns when all are done.
  void run(GridJob& job) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      job_ = &job;
      ++generation_;
      busy_ = static_cast<int>(threads_.size());
    }
    cv_.notify_all();
    run_blocks(job);
    std::unique_lock<std::mutex> lock(mu_);
    done_cv_.wait(lock, [this] { return busy_ == 0; });
    job_ = nullptr;
  }

 private:
  void loop() {
    uint64_t seen = 0;
    for (;;) {
      GridJob* job;
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [&] { return stop_ || generation_ != seen; });
        if (stop_) return;
        seen = generation_;
        job = job_;
      }
      run_blocks(*job);
      {
        std::lock_guard<std::mutex> lock(mu_);
        --busy_;
      }
      done_cv_.notify_all();
    }
  }
  std::vector<std::thread> threads_;
  std::mutex mu_;
  std::condition_variable cv_, done_cv_;
  GridJob* job_ = nullptr;
  uint64_t generation_ = 0;
  int busy_ = 0;
  bool stop_ = false;
};

Pool& pool() {
  static auto* p = new Pool(worker_count() - 1);  // never destroyed: kernels may run during exit
  return *p;
}

std::mutex& launch_mutex() {
  static std::mutex m;
  return m;
}

ThreadState& running_thread(const char* what) {
  Worker* w = t_worker;
  if (!w || !w->current)
    throw std::runtime_error(std::string("emulated CUDA device: ") + what + " used outside a kernel");
  return *w->current;
}

}  // namespace

// ---- kernel-side primitives ------------------------------------------------------------------
thread_local Thread* t_current_thread = nullptr;
void no_current_thread() {
  throw std::runtime_error("emulated CUDA device: threadIdx/blockIdx/blockDim/gridDim used outside a kernel");
}

int block_barrier(int predicate, BarrierReduce reduce) {
  ThreadState& t = running_thread("__syncthreads");
  t.state = State::AtBarrier;
  t.predicate = predicate;
  wait_for_release(t);
  // release() left the count in barrier_result and any | all<<1 in predicate.
  switch (reduce) {
    case BarrierReduce::Or: return t.predicate & 1;
    case BarrierReduce::And: return (t.predicate >> 1) & 1;
    case BarrierReduce::Count: return t.barrier_result;
    default: return 0;
  }
}

uint64_t warp_exchange(unsigned mask, uint64_t value, int source, int width) {
  ThreadState& t = running_thread("a warp intrinsic");
  const int lane = t.linear % 32;
  if (!(mask >> lane & 1u))
    fault_here("lane " + std::to_string(lane) + " calls a warp intrinsic with mask " + mask_hex(mask) +
               " that does not include itself");
  t.state = State::AtWarp;
  t.warp_mask = mask;
  t.warp_width = width;
  t.deposit = value;
  t.source = source;
  wait_for_release(t);
  return t.result;
}

unsigned warp_vote(unsigned mask, int predicate, Vote vote) {
  ThreadState& t = running_thread("a warp vote");
  t.predicate = predicate != 0;
  warp_exchange(mask, 0, -1, 32);
  const unsigned ballot = static_cast<unsigned>(t.barrier_result);
  switch (vote) {
    case Vote::Any: return ballot != 0;
    case Vote::All: return ballot == mask;
    default: return ballot;
  }
}

unsigned active_mask() {
  // Between rendezvous the emulator runs lanes one by one, so "active" is not
  // observable; the full mask of existing lanes is what converged code sees.
  ThreadState& t = running_thread("__activemask");
  const int n = static_cast<int>(t.block->block_dim.x * t.block->block_dim.y * t.block->block_dim.z);
  const int lanes = std::min(32, n - (t.linear / 32) * 32);
  return lanes >= 32 ? 0xffffffffu : (1u << lanes) - 1u;
}

int shuffle_source(ShuffleKind kind, int arg, int width) {
  ThreadState& t = running_thread("a shuffle");
  if (width < 1 || width > 32 || (width & (width - 1)) != 0)
    fault_here("shuffle width " + std::to_string(width) + " is not a power of two in [1, 32]");
  const int lane = t.linear % 32, seg = lane - lane % width, pos = lane % width;
  switch (kind) {
    case ShuffleKind::Index:
      if (arg < 0 || arg >= width)
        fault_here("__shfl_sync source lane " + std::to_string(arg) + " is outside [0, " + std::to_string(width) +
                   ")");
      return seg + arg;
    case ShuffleKind::Xor: {
      const int src = lane ^ arg;
      if (arg < 0 || src >= 32) fault_here("__shfl_xor_sync lane mask " + std::to_string(arg) + " leaves the warp");
      return src >= seg + width ? lane : src;  // later segments are not readable: own value
    }
    case ShuffleKind::Down:
      if (arg < 0) fault_here("negative shuffle delta");
      return pos + arg < width ? lane + arg : lane;
    case ShuffleKind::Up:
      if (arg < 0) fault_here("negative shuffle delta");
      return pos - arg >= 0 ? lane - arg : lane;
  }
  return lane;
}

void* static_shared(const void* key, size_t bytes, size_t align) {
  running_thread("shared memory");
  BlockState& b = *t_worker->block;
  for (auto& s : b.statics)
    if (s.first == key) return s.second;
  b.static_bytes += bytes;
  if (b.static_bytes > kSharedDefault)
    fault_here("static shared memory of " + std::to_string(b.static_bytes) + " bytes exceeds the 48 KB limit");
  if (b.static_bytes + b.config->shared_bytes > kSharedOptin)
    fault_here("static + dynamic shared memory " + std::to_string(b.static_bytes + b.config->shared_bytes) +
               " bytes exceeds the 227 KB per block of sm_90");
  void* p = nullptr;
  if (posix_memalign(&p, std::max<size_t>(align, sizeof(void*)), bytes ? bytes : 1) != 0)
    fault_here("out of host memory for shared memory");
  poison(p, bytes);
  b.statics.emplace_back(key, p);
  return p;
}

void* dynamic_shared() {
  running_thread("dynamic shared memory");
  BlockState& b = *t_worker->block;
  if (!b.dynamic) fault_here("the kernel reads dynamic shared memory, but the launch gave it 0 bytes");
  return b.dynamic;
}

// ---- launches --------------------------------------------------------------------------------
void check_pointer_argument(const LaunchConfig& c, int index, const void* p) {
  uintptr_t base = 0;
  if (!p) return;
  if (inside_allocation(p, 0, &base)) {
    t_argument_allocations.push_back(base);
    return;
  }
  t_argument_allocations.clear();
  throw std::runtime_error(kernel_label(c) + ": argument " + std::to_string(index + 1) +
                           " is a pointer outside every device allocation (a host pointer, or freed memory)");
}

void run_grid(const LaunchConfig& c, ThreadEntry entry, void* closure) {
  struct ClearArguments {
    ~ClearArguments() { t_argument_allocations.clear(); }
  } clear_arguments;
  if (t_worker && t_worker->current)
    fault_here(std::string("kernel ") + c.kernel + " launched from inside a kernel (dynamic parallelism is not emulated)");
  const std::string label = kernel_label(c);
  const unsigned bd[3] = {c.block.x, c.block.y, c.block.z};
  const unsigned gd[3] = {c.grid.x, c.grid.y, c.grid.z};
  const uint64_t threads = static_cast<uint64_t>(bd[0]) * bd[1] * bd[2];
  for (int i = 0; i < 3; ++i) {
    if (bd[i] == 0 || bd[i] > kMaxBlockDim[i]) {
      fail(cudaErrorInvalidConfiguration, label + ": blockDim." + "xyz"[i] + " = " + std::to_string(bd[i]) +
                                              " is outside [1, " + std::to_string(kMaxBlockDim[i]) + "]");
      return;
    }
    if (gd[i] == 0 || gd[i] > kMaxGrid[i]) {
      fail(cudaErrorInvalidConfiguration, label + ": gridDim." + "xyz"[i] + " = " + std::to_string(gd[i]) +
                                              " is outside [1, " + std::to_string(kMaxGrid[i]) + "]");
      return;
    }
  }
  if (threads > kMaxThreadsPerBlock) {
    fail(cudaErrorInvalidConfiguration, label + ": " + std::to_string(threads) +
                                            " threads per block; the limit is 1024");
    return;
  }
  const std::string key = kernel_key(c.file, c.kernel);
  {
    std::lock_guard<std::mutex> lock(g_attr_mu);
    if (g_launched.insert(key).second) record_coverage(key);
    if (c.shared_bytes > kSharedDefault) {
      auto it = g_max_dynamic_shared.find(key);
      const size_t allowed = it == g_max_dynamic_shared.end() ? kSharedDefault : static_cast<size_t>(it->second);
      if (c.shared_bytes > allowed) {
        fail(cudaErrorInvalidValue,
             label + ": " + std::to_string(c.shared_bytes) + " bytes of dynamic shared memory, above " +
                 std::to_string(allowed) + (it == g_max_dynamic_shared.end()
                                                ? " (above 48 KB a kernel needs cudaFuncSetAttribute("
                                                  "cudaFuncAttributeMaxDynamicSharedMemorySize))"
                                                : " set by cudaFuncSetAttribute"));
        return;
      }
    }
  }
  const uint64_t blocks = static_cast<uint64_t>(gd[0]) * gd[1] * gd[2];
  std::lock_guard<std::mutex> lock(launch_mutex());
  GridJob job;
  job.config = &c;
  job.entry = entry;
  job.closure = closure;
  job.blocks = blocks;
  if (blocks == 1 || worker_count() == 1) run_blocks(job);
  else pool().run(job);
  if (job.error) std::rethrow_exception(job.error);
  if (!job.fault.empty()) throw std::runtime_error("CUDA kernel fault (emulated device): " + job.fault);
  static std::atomic<uint64_t> launches{0};
  const std::string overrun = damaged_redzone(++launches % 64 == 0);
  if (!overrun.empty()) throw std::runtime_error("CUDA kernel fault (emulated device): " + label + ": " + overrun);
}

cudaError_t set_function_attribute(const char* file, const char* kernel, cudaFuncAttribute attr, int value) {
  if (attr == cudaFuncAttributeMaxDynamicSharedMemorySize) {
    if (value < 0 || static_cast<size_t>(value) > kSharedOptin)
      return fail(cudaErrorInvalidValue, std::string(kernel) + ": cudaFuncAttributeMaxDynamicSharedMemorySize " +
                                             std::to_string(value) + " is above the 227 KB of sm_90");
    std::lock_guard<std::mutex> lock(g_attr_mu);
    g_max_dynamic_shared[kernel_key(file, kernel)] = value;
  }
  return cudaSuccess;
}

void set_used_bytes(void* p, size_t used) {
  auto& a = allocations();
  std::lock_guard<std::mutex> lock(a.mu);
  auto it = a.live.find(reinterpret_cast<uintptr_t>(p));
  if (it == a.live.end() || used > it->second.capacity) return;
  Allocations::Extent& e = it->second;
  char* base = reinterpret_cast<char*>(p);
#if ECHO_EMU_ASAN
  __asan_unpoison_memory_region(base, e.capacity);
  __asan_poison_memory_region(base + used, e.capacity - used);
#else
  if (used > e.used) poison(base + e.used, used - e.used);  // what was slack is fresh memory again
  std::memset(base + used, kCanary, e.capacity - used);
#endif
  e.used = used;
}

void set_schedule(Schedule schedule, uint64_t seed) {
  g_schedule = static_cast<int>(schedule);
  g_seed = seed;
}
Schedule current_schedule() { return static_cast<Schedule>(g_schedule.load()); }
const char* schedule_name(Schedule s) {
  switch (s) {
    case Schedule::InOrder: return "in-order";
    case Schedule::Reversed: return "reversed";
    case Schedule::Random: return "random";
  }
  return "?";
}

std::vector<std::string> launched_kernels() {
  std::lock_guard<std::mutex> lock(g_attr_mu);
  return {g_launched.begin(), g_launched.end()};
}

}  // namespace echo::emu

// ---- the host API --------------------------------------------------------------------------
using echo::emu::fail;
using echo::emu::inside_allocation;

cudaError_t cudaGetLastError() {
  cudaError_t e = echo::emu::errors().last;
  echo::emu::errors().last = cudaSuccess;
  return e;
}
cudaError_t cudaPeekAtLastError() { return echo::emu::errors().last; }

const char* cudaGetErrorName(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorInitializationError: return "cudaErrorInitializationError";
    case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
    case cudaErrorInvalidDevice: return "cudaErrorInvalidDevice";
    case cudaErrorInvalidDevicePointer: return "cudaErrorInvalidDevicePointer";
    case cudaErrorInvalidMemcpyDirection: return "cudaErrorInvalidMemcpyDirection";
    case cudaErrorLaunchFailure: return "cudaErrorLaunchFailure";
    case cudaErrorLaunchOutOfResources: return "cudaErrorLaunchOutOfResources";
    case cudaErrorNotSupported: return "cudaErrorNotSupported";
  }
  return "cudaErrorUnknown";
}

const char* cudaGetErrorString(cudaError_t e) {
  auto& s = echo::emu::errors();
  if (e != cudaSuccess && e == s.detailed_code && !s.detail.empty()) return s.detail.c_str();
  switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorInvalidDevice: return "invalid device ordinal";
    case cudaErrorInvalidDevicePointer: return "invalid device pointer";
    case cudaErrorInvalidMemcpyDirection: return "invalid copy direction for memcpy";
    case cudaErrorLaunchFailure: return "unspecified launch failure";
    case cudaErrorLaunchOutOfResources: return "too many resources requested for launch";
    default: return cudaGetErrorName(e);
  }
}

cudaError_t cudaGetDeviceCount(int* count) {
  if (!count) return fail(cudaErrorInvalidValue, "cudaGetDeviceCount: null pointer");
  *count = 1;
  return cudaSuccess;
}
cudaError_t cudaSetDevice(int device) {
  return device == 0 ? cudaSuccess : fail(cudaErrorInvalidDevice, "the emulated machine has one device, 0");
}
cudaError_t cudaGetDevice(int* device) {
  *device = 0;
  return cudaSuccess;
}
cudaError_t cudaGetDeviceProperties(cudaDeviceProp* p, int device) {
  if (device != 0) return fail(cudaErrorInvalidDevice, "the emulated machine has one device, 0");
  std::memset(p, 0, sizeof *p);
  std::snprintf(p->name, sizeof p->name, "Echo emulated CUDA device (sm_90 limits, runs on the CPU)");
  p->totalGlobalMem = static_cast<size_t>(sysconf(_SC_PHYS_PAGES)) * static_cast<size_t>(sysconf(_SC_PAGESIZE));
  p->sharedMemPerBlock = echo::emu::kSharedDefault;
  p->sharedMemPerBlockOptin = echo::emu::kSharedOptin;
  p->sharedMemPerMultiprocessor = echo::emu::kSharedPerSM;
  p->regsPerBlock = 65536;
  p->warpSize = 32;
  p->maxThreadsPerBlock = 1024;
  p->maxThreadsDim[0] = 1024, p->maxThreadsDim[1] = 1024, p->maxThreadsDim[2] = 64;
  p->maxGridSize[0] = 0x7fffffff, p->maxGridSize[1] = 65535, p->maxGridSize[2] = 65535;
  p->multiProcessorCount = echo::emu::kSMs;
  p->maxThreadsPerMultiProcessor = 2048;
  p->major = 9, p->minor = 0;
  p->l2CacheSize = 50u << 20;
  return cudaSuccess;
}
cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int device) {
  cudaDeviceProp p;
  if (cudaError_t e = cudaGetDeviceProperties(&p, device)) return e;
  switch (attr) {
    case cudaDevAttrMaxThreadsPerBlock: *value = p.maxThreadsPerBlock; break;
    case cudaDevAttrMaxSharedMemoryPerBlock: *value = static_cast<int>(p.sharedMemPerBlock); break;
    case cudaDevAttrMultiProcessorCount: *value = p.multiProcessorCount; break;
    case cudaDevAttrComputeCapabilityMajor: *value = p.major; break;
    case cudaDevAttrComputeCapabilityMinor: *value = p.minor; break;
    case cudaDevAttrMaxSharedMemoryPerBlockOptin: *value = static_cast<int>(p.sharedMemPerBlockOptin); break;
    default: return fail(cudaErrorInvalidValue, "cudaDeviceGetAttribute: attribute not emulated");
  }
  return cudaSuccess;
}
cudaError_t cudaDeviceSynchronize() {
  const std::string overrun = echo::emu::damaged_redzone(true);
  if (!overrun.empty()) return fail(cudaErrorLaunchFailure, "a kernel " + overrun);
  return cudaSuccess;
}
cudaError_t cudaDeviceReset() { return cudaSuccess; }
cudaError_t cudaMemGetInfo(size_t* free_bytes, size_t* total_bytes) {
  const size_t total = static_cast<size_t>(sysconf(_SC_PHYS_PAGES)) * static_cast<size_t>(sysconf(_SC_PAGESIZE));
  const size_t avail = static_cast<size_t>(sysconf(_SC_AVPHYS_PAGES)) * static_cast<size_t>(sysconf(_SC_PAGESIZE));
  if (free_bytes) *free_bytes = avail;
  if (total_bytes) *total_bytes = total;
  return cudaSuccess;
}

static cudaError_t emu_allocate(void** ptr, size_t bytes, const char* what) {
  if (!ptr) return fail(cudaErrorInvalidValue, std::string(what) + ": null pointer");
  void* p = nullptr;
  // 256-byte alignment, as cudaMalloc gives; the exact size, so that
  // AddressSanitizer reports a kernel that reads or writes past the end.
  if (posix_memalign(&p, 256, (bytes ? bytes : 1) + echo::emu::kRedzone) != 0) {
    *ptr = nullptr;
    return fail(cudaErrorMemoryAllocation, std::string(what) + ": out of memory allocating " + std::to_string(bytes) +
                                               " bytes");
  }
  echo::emu::poison(p, bytes);
  std::memset(static_cast<char*>(p) + bytes, echo::emu::kCanary, echo::emu::kRedzone);
  auto& a = echo::emu::allocations();
  std::lock_guard<std::mutex> lock(a.mu);
  a.live[reinterpret_cast<uintptr_t>(p)] = {bytes, bytes};
  a.bytes += bytes;
  *ptr = p;
  return cudaSuccess;
}
static cudaError_t emu_release(void* ptr, const char* what) {
  if (!ptr) return cudaSuccess;
  auto& a = echo::emu::allocations();
  {
    std::lock_guard<std::mutex> lock(a.mu);
    auto it = a.live.find(reinterpret_cast<uintptr_t>(ptr));
    if (it == a.live.end())
      return fail(cudaErrorInvalidDevicePointer, std::string(what) + ": not the start of a live allocation");
    a.bytes -= it->second.capacity;
#if ECHO_EMU_ASAN
    __asan_unpoison_memory_region(ptr, it->second.capacity);
#endif
    a.live.erase(it);
  }
  std::free(ptr);
  return cudaSuccess;
}
cudaError_t cudaMalloc(void** ptr, size_t bytes) { return emu_allocate(ptr, bytes, "cudaMalloc"); }
cudaError_t cudaFree(void* ptr) { return emu_release(ptr, "cudaFree"); }
cudaError_t cudaMallocHost(void** ptr, size_t bytes) { return emu_allocate(ptr, bytes, "cudaMallocHost"); }
cudaError_t cudaFreeHost(void* ptr) { return emu_release(ptr, "cudaFreeHost"); }

// A device-side range of a copy or memset must lie inside one allocation.
static cudaError_t check_device_range(const void* p, size_t bytes, const char* what, const char* side) {
  if (bytes == 0 || inside_allocation(p, bytes)) return cudaSuccess;
  return fail(cudaErrorInvalidValue, std::string(what) + ": the " + side + " range of " + std::to_string(bytes) +
                                         " bytes is not inside one device allocation");
}

cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind) {
  if (bytes == 0) return cudaSuccess;
  if (kind == cudaMemcpyDefault)
    kind = inside_allocation(dst, bytes) ? (inside_allocation(src, bytes) ? cudaMemcpyDeviceToDevice
                                                                           : cudaMemcpyHostToDevice)
                                         : (inside_allocation(src, bytes) ? cudaMemcpyDeviceToHost
                                                                          : cudaMemcpyHostToHost);
  const bool dst_dev = kind == cudaMemcpyHostToDevice || kind == cudaMemcpyDeviceToDevice;
  const bool src_dev = kind == cudaMemcpyDeviceToHost || kind == cudaMemcpyDeviceToDevice;
  if (kind < cudaMemcpyHostToHost || kind > cudaMemcpyDeviceToDevice)
    return fail(cudaErrorInvalidMemcpyDirection, "cudaMemcpy: unknown direction");
  if (dst_dev)
    if (cudaError_t e = check_device_range(dst, bytes, "cudaMemcpy", "destination")) return e;
  if (src_dev)
    if (cudaError_t e = check_device_range(src, bytes, "cudaMemcpy", "source")) return e;
  std::memmove(dst, src, bytes);
  return cudaSuccess;
}
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind, cudaStream_t) {
  return cudaMemcpy(dst, src, bytes, kind);
}
cudaError_t cudaMemset(void* dst, int value, size_t bytes) {
  if (cudaError_t e = check_device_range(dst, bytes, "cudaMemset", "destination")) return e;
  if (bytes) std::memset(dst, value, bytes);
  return cudaSuccess;
}
cudaError_t cudaMemsetAsync(void* dst, int value, size_t bytes, cudaStream_t) { return cudaMemset(dst, value, bytes); }
cudaError_t cudaMemset2DAsync(void* dst, size_t pitch, int value, size_t width, size_t height, cudaStream_t) {
  if (width > pitch && height > 1) return fail(cudaErrorInvalidValue, "cudaMemset2D: width exceeds the pitch");
  if (height == 0 || width == 0) return cudaSuccess;
  if (cudaError_t e = check_device_range(dst, pitch * (height - 1) + width, "cudaMemset2D", "destination")) return e;
  for (size_t r = 0; r < height; ++r) std::memset(static_cast<char*>(dst) + r * pitch, value, width);
  return cudaSuccess;
}

struct echo_emu_stream {};
struct echo_emu_event {
  double seconds = 0;
};
cudaError_t cudaStreamCreate(cudaStream_t* s) {
  *s = new echo_emu_stream();
  return cudaSuccess;
}
cudaError_t cudaStreamDestroy(cudaStream_t s) {
  delete s;
  return cudaSuccess;
}
cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }
cudaError_t cudaEventCreate(cudaEvent_t* e) {
  *e = new echo_emu_event();
  return cudaSuccess;
}
cudaError_t cudaEventDestroy(cudaEvent_t e) {
  delete e;
  return cudaSuccess;
}
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t) {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  e->seconds = ts.tv_sec + 1e-9 * ts.tv_nsec;
  return cudaSuccess;
}
cudaError_t cudaEventSynchronize(cudaEvent_t) { return cudaSuccess; }
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t end) {
  *ms = static_cast<float>((end->seconds - start->seconds) * 1e3);
  return cudaSuccess;
}
