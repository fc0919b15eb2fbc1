// The HDF5 preflight (File::preflight, train/h5io.h): before a file is opened in
// this process, a forked child opens it and touches everything a reader could
// touch, through the readers' own functions, so that a crash or an endless loop
// inside libhdf5 on a corrupt or hostile file happens in the child and becomes a
// one-line error naming the file. docs/reliability.md lists what it guards.
#include <fcntl.h>
#include <malloc.h>
#include <poll.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <mutex>
#include <optional>
#include <set>
#include <stdexcept>
#include <tuple>

#include "train/h5io.h"
#include "train/h5io_detail.h"

// Present only in a sanitizer's runtime (ASan, UBSan, libFuzzer's host): null otherwise.
extern "C" void __sanitizer_set_death_callback(void (*callback)(void)) __attribute__((weak));

namespace echo::h5 {

using namespace detail;

// Touches everything in a file that a reader could touch, through the very
// functions the readers call (File::attr_names, attr_string, list_datasets'
// children(), read, ...), so that a crash or endless loop inside libhdf5 happens
// here, in the preflight child, first. Errors that HDF5 (or our own checks)
// report cleanly are counted and the walk goes on with the next object: the
// reader will name them, and the objects after them must be touched too.
struct PreflightWalk {
  explicit PreflightWalk(const File& f) : file(f) {}
  const File& file;
  int errors = 0;
  std::set<std::string> visited;  // object identities: hard links may repeat or loop

  // Read-only, without a preflight of its own.
  static File open_here(const std::string& path) { return File(path, open_hdf5(path, H5F_ACC_RDONLY)); }

  template <typename F>
  void attempt(F&& f) {
    try {
      f();
    } catch (const std::exception&) {
      ++errors;
    }
  }

  // A name no file holds: readers also ask for attributes and links that are
  // absent, which takes HDF5 through other lookup code than listing does.
  static constexpr const char* kAbsent = "echo-preflight-absent-name";

  void attributes(const std::string& object) {
    std::vector<std::string> names;
    attempt([&] { names = file.attr_names(object); });  // H5Aiterate2, as the op runner lists them
    attempt([&] { file.has_attr(object, kAbsent); });
    for (const auto& name : names) {
      attempt([&] { file.has_attr(object, name); });
      AttrKind kind = AttrKind::Other;
      attempt([&] { kind = file.attr_kind(object, name); });
      // Every way a reader reads an attribute of this kind (each converts differently).
      if (kind == AttrKind::String) attempt([&] { file.attr_string(object, name); });
      if (kind == AttrKind::Int) attempt([&] { file.attr_int(object, name); });
      if (kind == AttrKind::Int || kind == AttrKind::Float) attempt([&] { file.attr_double(object, name); });
    }
  }

  // Whether File::read's H5Dread parses file structures beyond what opening and
  // checking the dataset parsed: a chunked dataset's chunk index (a B-tree the
  // file describes), its filters, and any conversion from a stored type other
  // than the native one we read (HDF5 converts by the stored type's fields).
  // Not for contiguous data stored as the native type — Echo's own checkpoints:
  // that read copies a byte range that the layout message gives and
  // check_stored_size bounded by the file's size; skipping it saves reading the
  // whole file twice (docs/reliability.md: cost).
  bool data_read_parses_more(const std::string& key) const {
    auto [ds, info] = open_for_reading(file, file.id_checked(), key);
    Handle dcpl(H5Dget_create_plist(ds.get()), H5Pclose);
    Handle stored(H5Dget_type(ds.get()), H5Tclose);
    if (!dcpl.ok() || !stored.ok()) return true;
    return H5Pget_layout(dcpl.get()) != H5D_CONTIGUOUS || H5Tequal(stored.get(), native_type(info.dtype)) <= 0;
  }

  void dataset(const std::string& key) {
    attempt([&] { file.has_dataset(key); });  // the lookup by name, link by link
    attempt([&] { file.dataset_shape(key); });
    attempt([&] { file.dataset_dtype(key); });
    // The data too where reading it makes libhdf5 parse more of the file (below).
    attempt([&] {
      if (data_read_parses_more(key)) file.read(key);
    });
    attributes(key);
  }

  void everything() {
    // Depth-first with an explicit stack: a hostile file may nest groups deeper
    // than a recursion could go.
    std::vector<std::string> groups{"/"};
    attempt([&] {
      Handle root(H5Oopen(file.id_checked(), "/", H5P_DEFAULT), H5Oclose);
      if (root.ok()) visited.insert(object_identity(root.get()));
    });
    while (!groups.empty()) {
      const std::string group = groups.back();
      groups.pop_back();
      attempt([&] { file.has_group(group); });
      attempt([&] { file.has_dataset(normalize(group + "/" + kAbsent)); });
      attributes(group);
      std::vector<Child> kids;
      attempt([&] { kids = children(file, file.id_checked(), group); });
      attempt([&] { file.list_datasets(group, false); });
      attempt([&] { file.list_groups(group); });
      for (const auto& kid : kids) {
        const std::string path = normalize(group + "/" + kid.name);
        if (!kid.identity.empty() && !visited.insert(kid.identity).second) continue;
        if (kid.type == H5I_GROUP) groups.push_back(path);
        else if (kid.type == H5I_DATASET) dataset(path);
        else attempt([&] { file.has_dataset(path); });  // a named type or a dangling link: looked up only
      }
    }
  }
};

namespace {

// Exit statuses of the preflight child. Anything else (a sanitizer's report
// exits with 1, libFuzzer's out-of-memory with its own code) is a failure.
constexpr int kPreflightClean = 0;     // every object parsed
constexpr int kPreflightRefused = 86;  // parsed to the end; HDF5 refused something: the reader names it

double preflight_timeout_seconds() {
  const char* v = std::getenv("ECHO_H5_PREFLIGHT_TIMEOUT");
  if (!v || !*v) return 30.0;
  char* end = nullptr;
  const double s = std::strtod(v, &end);
  if (end == v || *end != '\0' || !std::isfinite(s) || s < 0)
    throw std::runtime_error("ECHO_H5_PREFLIGHT_TIMEOUT must be a number of seconds (0 turns the HDF5 preflight off), got '" +
                             std::string(v) + "'");
  return s;
}

// What a file is, for the cache of files already checked: a change of content
// changes the size or the times, or (atomic replacement) the inode. File times
// are coarse (a few ms), so a file rewritten within the same tick keeps them:
// for a file changed in the last 2 s, its content's hash is part of the key —
// when it is small enough to hash (16 MiB; a larger new file is checked on
// every open).
using FileIdentity = std::tuple<dev_t, ino_t, off_t, int64_t, int64_t, int64_t, int64_t, size_t>;
constexpr off_t kMaxHashedSize = off_t(16) << 20;
bool recently_changed(const struct stat& st) { return std::time(nullptr) - st.st_ctim.tv_sec <= 2; }
std::optional<FileIdentity> identity_of(const std::string& path, const struct stat& st) {
  size_t content = 0;
  if (recently_changed(st)) {
    if (st.st_size > kMaxHashedSize) return std::nullopt;
    std::string bytes(static_cast<size_t>(st.st_size), '\0');
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return std::nullopt;
    const ssize_t n = ::pread(fd, bytes.data(), bytes.size(), 0);
    ::close(fd);
    if (n != static_cast<ssize_t>(bytes.size())) return std::nullopt;
    content = std::hash<std::string>{}(bytes);
  }
  return FileIdentity{st.st_dev, st.st_ino, st.st_size, st.st_mtim.tv_sec, st.st_mtim.tv_nsec, st.st_ctim.tv_sec,
                      st.st_ctim.tv_nsec, content};
}
std::mutex g_checked_mutex;
std::set<FileIdentity> g_checked;

[[noreturn]] void run_preflight_child(const std::string& path, int report_fd, pid_t parent) {
  // Never outlive the parent (a parent killed while libhdf5 loops here).
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (getppid() != parent) _exit(kPreflightRefused);
  // Whatever is printed here (a sanitizer's report) goes to the parent, which
  // quotes its summary line; stdout is not ours to write to.
  dup2(report_fd, STDERR_FILENO);
  const int devnull = ::open("/dev/null", O_WRONLY | O_CLOEXEC);
  if (devnull >= 0) dup2(devnull, STDOUT_FILENO);
  // A crash must end this process by its signal, not in handlers inherited from
  // the parent (libFuzzer's would save the input as a crash of the fuzzed process).
  for (int sig : {SIGSEGV, SIGBUS, SIGABRT, SIGFPE, SIGILL, SIGTRAP}) std::signal(sig, SIG_DFL);
  if (__sanitizer_set_death_callback) __sanitizer_set_death_callback(nullptr);
  // File::read allocates tensors; NaN-poisoning them (gradcheck, tests) fills
  // with parallel_for, and OpenMP's thread pool does not survive fork().
  set_poison_uninitialized(false);
  // Fresh and freed heap memory filled with a pattern: libhdf5's reads of
  // uninitialised or freed memory on a corrupt file then crash here whatever
  // the heap held, instead of depending on the layout (a sample that passed
  // the child and crashed the parent under another address layout).
  mallopt(M_PERTURB, 0xA5);
  int status = kPreflightClean;
  try {
    // Read-only whatever the caller opens with: the child must change nothing.
    File f = PreflightWalk::open_here(path);
    PreflightWalk walk(f);
    walk.everything();
    f.close();
    if (walk.errors > 0) status = kPreflightRefused;
  } catch (...) {
    status = kPreflightRefused;
  }
  // No return into the parent's code, no atexit handlers, no stdio flush.
  _exit(status);
}

std::string signal_label(int sig) {
  switch (sig) {
    case SIGSEGV: return "SIGSEGV";
    case SIGBUS: return "SIGBUS";
    case SIGABRT: return "SIGABRT";
    case SIGFPE: return "SIGFPE";
    case SIGILL: return "SIGILL";
    case SIGKILL: return "SIGKILL, e.g. out of memory";
    case SIGTRAP: return "SIGTRAP";
    default: return "signal " + std::to_string(sig);
  }
}

// The first "SUMMARY: ..." line of a sanitizer's report, as " [SUMMARY: ...]".
std::string report_summary(const std::string& report) {
  size_t at = report.find("SUMMARY: ");
  if (at == std::string::npos) return "";
  size_t end = report.find('\n', at);
  std::string line = report.substr(at, std::min<size_t>(end == std::string::npos ? report.size() - at : end - at, 240));
  return " [" + line + "]";
}

}  // namespace

void File::preflight(const std::string& path) {
  const double timeout_s = preflight_timeout_seconds();
  if (timeout_s == 0) return;
  check_regular_file(path);  // the usual messages for a missing file or a directory
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) throw std::runtime_error(path + ": " + std::strerror(errno));
  const std::optional<FileIdentity> identity = identity_of(path, st);
  if (identity) {
    std::lock_guard<std::mutex> lock(g_checked_mutex);
    if (g_checked.count(*identity)) return;
  }

  int report[2];
  if (::pipe2(report, O_CLOEXEC) != 0)
    throw std::runtime_error(path + ": cannot start the HDF5 preflight: " + std::strerror(errno));
  const pid_t parent = ::getpid();
  const pid_t child = ::fork();
  if (child < 0) {
    const int err = errno;
    ::close(report[0]);
    ::close(report[1]);
    throw std::runtime_error(path + ": cannot start the HDF5 preflight: " + std::strerror(err));
  }
  if (child == 0) run_preflight_child(path, report[1], parent);
  ::close(report[1]);

  // Collect the child's report until it closes it (it exits), then reap it;
  // kill it when the time is up.
  using Clock = std::chrono::steady_clock;
  const auto deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(timeout_s));
  auto ms_left = [&] {
    return std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
  };
  std::string text;
  bool report_closed = false, reaped = false, timed_out = false;
  int status = 0;
  while (!reaped) {
    const long long left = ms_left();
    if (left <= 0) {
      timed_out = true;
      break;
    }
    if (!report_closed) {
      pollfd p{report[0], POLLIN, 0};
      const int ready = ::poll(&p, 1, static_cast<int>(std::min<long long>(left + 1, 1 << 30)));
      if (ready > 0) {
        char buf[4096];
        const ssize_t n = ::read(report[0], buf, sizeof buf);
        if (n > 0 && text.size() < (1u << 16)) text.append(buf, static_cast<size_t>(n));
        if (n == 0 || (n < 0 && errno != EINTR && errno != EAGAIN)) report_closed = true;
      }
      continue;
    }
    const pid_t w = ::waitpid(child, &status, WNOHANG);
    if (w == child) {
      reaped = true;
    } else if (w < 0 && errno != EINTR) {
      ::close(report[0]);
      throw std::runtime_error(path + ": lost the HDF5 preflight process: " + std::strerror(errno));
    } else {
      ::usleep(200);  // closed its report: it is exiting
    }
  }
  ::close(report[0]);
  if (!reaped) {
    ::kill(child, SIGKILL);
    while (::waitpid(child, &status, 0) < 0 && errno == EINTR) {
    }
  }

  const std::string verdict = ": it is corrupt or hostile";
  if (timed_out) {
    char secs[32];
    std::snprintf(secs, sizeof secs, "%g", timeout_s);
    throw std::runtime_error(path + ": libhdf5 did not finish parsing this file within " + secs +
                             " s (ECHO_H5_PREFLIGHT_TIMEOUT)" + verdict);
  }
  if (WIFSIGNALED(status))
    throw std::runtime_error(path + ": libhdf5 crashed (" + signal_label(WTERMSIG(status)) +
                             ") while parsing this file" + verdict + report_summary(text));
  const int code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  if (code != kPreflightClean && code != kPreflightRefused)
    throw std::runtime_error(path + ": libhdf5 failed (exit status " + std::to_string(code) +
                             ") while parsing this file" + verdict + report_summary(text));
  if (identity) {
    std::lock_guard<std::mutex> lock(g_checked_mutex);
    if (g_checked.size() >= 4096) g_checked.clear();
    g_checked.insert(*identity);
  }
}

}  // namespace echo::h5
