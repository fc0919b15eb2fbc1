// The pieces of train/h5io.cpp that the HDF5 preflight (train/h5_preflight.cpp)
// shares with the readers: it must touch a file through the very functions the
// readers call. Internal to those two files; includes hdf5.h.
#pragma once

#include <hdf5.h>

#include <string>
#include <vector>

#include "train/h5io.h"

namespace echo::h5::detail {

// Owns one HDF5 identifier and closes it with the matching function.
class Handle {
 public:
  Handle() = default;
  Handle(hid_t id, herr_t (*closer)(hid_t)) : id_(id), closer_(closer) {}
  Handle(Handle&& o) noexcept : id_(o.id_), closer_(o.closer_) { o.id_ = -1; }
  Handle& operator=(Handle&& o) noexcept {
    if (this != &o) { reset(); id_ = o.id_; closer_ = o.closer_; o.id_ = -1; }
    return *this;
  }
  Handle(const Handle&) = delete;
  Handle& operator=(const Handle&) = delete;
  ~Handle() { reset(); }
  void reset() {
    if (id_ >= 0 && closer_) closer_(id_);
    id_ = -1;
  }
  hid_t get() const { return id_; }
  bool ok() const { return id_ >= 0; }

 private:
  hid_t id_ = -1;
  herr_t (*closer_)(hid_t) = nullptr;
};

// Turns HDF5's error printing off (errors become exceptions).
void silence_hdf5();
// The most specific message on HDF5's error stack, as " (HDF5: ...)", or "".
std::string hdf5_reason();
// "/a//b/" -> "a/b"; "/" and "" -> "" (the root).
std::string normalize(const std::string& key);
// The native HDF5 type a dtype is read as (-1 for none).
hid_t native_type(DType t);
// "PATH: no such file" / "PATH: is a directory, not an HDF5 file".
void check_regular_file(const std::string& path);
// H5Fopen with Echo's file-access properties, errors named; no preflight.
hid_t open_hdf5(const std::string& path, unsigned flags);

struct DatasetInfo {
  Shape shape;
  DType dtype;
};
// A dataset opened, described and size-checked: File::read up to its allocation.
struct CheckedDataset {
  Handle ds;
  DatasetInfo info;
};
CheckedDataset open_for_reading(const File& f, hid_t file, const std::string& key);

// Where an object lives in its file: two links reach the same object exactly
// when these bytes are equal. Empty when HDF5 cannot tell.
std::string object_identity(hid_t obj);

struct Child {
  std::string name;
  H5I_type_t type;       // H5I_DATASET, H5I_GROUP, ...; H5I_BADID when it cannot be opened
  std::string identity;  // object_identity
};
// Children of a group: name, whether it is a dataset or a group, and where it lives.
std::vector<Child> children(const File& f, hid_t file, const std::string& group);

}  // namespace echo::h5::detail
