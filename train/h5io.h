// A small RAII layer over the HDF5 C API: tensors in and out of datasets by
// path, attributes on the root, groups and datasets, and an atomic file write.
//
// Every failure is a std::runtime_error that starts with the file's path and
// names the key ("IN.h5: dataset 'x' not found"). HDF5's own error printing is
// switched off: the library would otherwise dump its error stack to stderr.
//
// Dataset types: f32, f64, i32 and i64 are read and written as themselves;
// other integer widths are read as i32 (≤ 4 bytes) or i64; other float widths
// (f16, ...) and non-numeric types are refused with a message.
//
// Untrusted files. libhdf5 itself (Debian 12's 1.10.8) crashes, overflows
// buffers or loops forever on some malformed files, inside a single library
// call (docs/reliability.md). So every File::open / open_rw first runs
// `preflight`: a forked child opens the file and touches everything any reader
// could touch, with the same functions the readers use; only when that child
// finishes is the file opened in this process. A child killed by a signal, one
// that fails otherwise, or one still busy after ECHO_H5_PREFLIGHT_TIMEOUT
// seconds (default 30; 0 turns the preflight off) becomes a one-line
// std::runtime_error naming the file.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "autograd/tensor.h"

namespace echo::h5 {

enum class AttrKind { Int, Float, String, Other };

class File {
 public:
  // Opens an existing file read-only ("PATH: no such file",
  // "PATH: not an HDF5 file, or truncated/corrupt").
  static File open(const std::string& path);
  // Opens an existing file for reading and writing.
  static File open_rw(const std::string& path);
  // Creates a new file, replacing any file at that path.
  static File create(const std::string& path);
  // The preflight alone (File::open runs it; exposed for tests and tools). It
  // returns when libhdf5 parsed the whole file without crashing or hanging —
  // also when HDF5 reported errors, which the caller's reader then names — and
  // throws "PATH: libhdf5 crashed (SIGSEGV) while parsing this file: ..." or
  // "PATH: libhdf5 did not finish parsing this file within 30 s: ..." otherwise.
  // Each file is checked once per process (keyed by device, inode, size and
  // times, and for a file changed in the last 2 s also by its content's hash;
  // such a file over 16 MiB is checked on every open).
  static void preflight(const std::string& path);

  File(File&& other) noexcept;
  File& operator=(File&& other) noexcept;
  File(const File&) = delete;
  File& operator=(const File&) = delete;
  ~File();

  const std::string& path() const { return path_; }
  // Flushes and closes; errors surface here rather than being lost in the destructor.
  void close();

  // ---- datasets and groups ("a/b/c" and "/a/b/c" name the same object) ------
  bool has_dataset(const std::string& key) const;
  bool has_group(const std::string& key) const;
  // Reads a dataset into a CPU tensor of the matching dtype.
  Tensor read(const std::string& key) const;
  Shape dataset_shape(const std::string& key) const;
  DType dataset_dtype(const std::string& key) const;
  // Writes a tensor (any device; f32/f64/i32/i64), creating intermediate groups
  // and replacing an existing dataset of that name.
  void write(const std::string& key, const Tensor& tensor);
  void create_group(const std::string& key);
  // Names of the datasets in a group, sorted. recursive: also inside subgroups,
  // as paths relative to the group ("layers/0/w").
  std::vector<std::string> list_datasets(const std::string& group = "/", bool recursive = false) const;
  std::vector<std::string> list_groups(const std::string& group = "/") const;

  // ---- attributes on "/" or on any group or dataset ----------------------------
  std::vector<std::string> attr_names(const std::string& object = "/") const;
  bool has_attr(const std::string& object, const std::string& name) const;
  AttrKind attr_kind(const std::string& object, const std::string& name) const;
  // Replaces an existing attribute of the same name.
  void set_attr(const std::string& object, const std::string& name, int64_t value);
  void set_attr(const std::string& object, const std::string& name, double value);
  void set_attr(const std::string& object, const std::string& name, const std::string& value);
  void set_attr(const std::string& object, const std::string& name, const char* value) {
    set_attr(object, name, std::string(value));
  }
  void set_attr(const std::string& object, const std::string& name, int value) {
    set_attr(object, name, static_cast<int64_t>(value));
  }
  // Scalar attributes; attr_double also accepts integers, attr_int refuses floats.
  int64_t attr_int(const std::string& object, const std::string& name) const;
  double attr_double(const std::string& object, const std::string& name) const;
  std::string attr_string(const std::string& object, const std::string& name) const;

 private:
  friend struct PreflightWalk;
  File(std::string path, int64_t id) : path_(std::move(path)), id_(id) {}
  [[noreturn]] void fail(const std::string& what) const;
  int64_t id_checked() const;

  std::string path_;
  int64_t id_ = -1;  // hid_t; kept as int64_t so this header does not include hdf5.h
};

// Writes a file atomically: `write` creates the file at the temporary path it is
// given (in the same directory as `path`); then the temporary file is fsync'ed,
// renamed over `path`, and the directory is fsync'ed. If `write` throws or any
// step fails, the temporary file is removed, `path` is left as it was, and the
// error is rethrown (prefixed with `path` for the file-system steps).
void atomic_write(const std::string& path, const std::function<void(const std::string& tmp_path)>& write);

}  // namespace echo::h5
