// The HDF5 layer (train/h5io.h): files, datasets, attributes, atomic writes.
// The preflight that guards every open is train/h5_preflight.cpp.
#include "train/h5io.h"

#include <fcntl.h>
#include <hdf5.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <set>
#include <stdexcept>

#include "train/h5io_detail.h"

namespace echo::h5 {

namespace detail {

// HDF5 prints its whole error stack to stderr by default; we turn errors into
// exceptions instead. Done before every open (cheap, and per-thread in
// thread-safe builds of the library).
void silence_hdf5() { H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr); }

// No exit-time cleanup by HDF5: when a write fails (disk full), H5Fclose fails
// half-way and HDF5 1.10 keeps the file's id while freeing parts of it; the
// library's atexit cleanup then closes that id again and crashes (SEGV in
// H5F__close_cb; tests/reliability/test_faults.cpp). Every file we write is
// closed explicitly (File::close, atomic_write), so skipping that cleanup loses
// nothing. It has to run before the library's first use, and macros such as
// H5F_ACC_RDONLY already initialise it: hence a static initialiser.
const bool g_hdf5_no_atexit = H5dont_atexit() >= 0;

// The most specific message on HDF5's error stack (set by the call that just
// failed), e.g. "truncated file: eof = 1024, ...". Empty when there is none.
std::string hdf5_reason() {
  std::string reason;
  H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD,
           [](unsigned n, const H5E_error2_t* e, void* out) -> herr_t {
             if (n == 0 && e->desc) *static_cast<std::string*>(out) = e->desc;
             return 0;
           },
           &reason);
  // The file driver's I/O errors list time, file name, descriptor, buffer and
  // offsets: keep the operation and the system's message ("file write failed:
  // No space left on device").
  const std::string tag = "error message = '";
  const size_t at = reason.find(tag), colon = reason.find(':');
  if (at != std::string::npos && colon != std::string::npos && colon < at) {
    const size_t end = reason.find('\'', at + tag.size());
    reason = reason.substr(0, colon) + ": " + reason.substr(at + tag.size(), end - at - tag.size());
  }
  return reason.empty() ? "" : " (HDF5: " + reason + ")";
}


// "/a//b/" -> "a/b"; "/" and "" -> "" (the root).
std::string normalize(const std::string& key) {
  std::string out;
  size_t i = 0;
  while (i < key.size()) {
    size_t j = key.find('/', i);
    if (j == std::string::npos) j = key.size();
    if (j > i) {
      if (!out.empty()) out += '/';
      out += key.substr(i, j - i);
    }
    i = j + 1;
  }
  return out;
}
std::string h5_path(const std::string& key) {  // for HDF5 calls
  std::string k = normalize(key);
  return k.empty() ? "/" : k;
}
std::string shown(const std::string& key) {  // for messages
  std::string k = normalize(key);
  return k.empty() ? "/" : k;
}

// Type of the object at `key` (H5I_DATASET, H5I_GROUP, ...), or H5I_BADID when
// there is none. H5Lexists needs every parent to exist, so walk the components.
H5I_type_t object_type(hid_t file, const std::string& key) {
  std::string k = normalize(key);
  if (k.empty()) return H5I_GROUP;
  size_t pos = 0;
  while (true) {
    size_t slash = k.find('/', pos);
    std::string prefix = k.substr(0, slash);
    if (H5Lexists(file, prefix.c_str(), H5P_DEFAULT) <= 0) return H5I_BADID;
    if (slash == std::string::npos) break;
    pos = slash + 1;
  }
  Handle obj(H5Oopen(file, k.c_str(), H5P_DEFAULT), H5Oclose);
  if (!obj.ok()) return H5I_BADID;  // e.g. a dangling soft link
  return H5Iget_type(obj.get());
}

hid_t native_type(DType t) {
  switch (t) {
    case DType::F32: return H5T_NATIVE_FLOAT;
    case DType::F64: return H5T_NATIVE_DOUBLE;
    case DType::I32: return H5T_NATIVE_INT32;
    case DType::I64: return H5T_NATIVE_INT64;
    default: return -1;
  }
}
hid_t file_type(DType t) {  // little-endian IEEE / two's complement, as numpy and h5py write
  switch (t) {
    case DType::F32: return H5T_IEEE_F32LE;
    case DType::F64: return H5T_IEEE_F64LE;
    case DType::I32: return H5T_STD_I32LE;
    case DType::I64: return H5T_STD_I64LE;
    default: return -1;
  }
}

hid_t file_access_props() {
  hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
  // Closing the file closes every object still open in it, so a file handle
  // never outlives its File.
  H5Pset_fclose_degree(fapl, H5F_CLOSE_STRONG);
#if H5_VERSION_GE(1, 10, 7)
  // Lock when the file system supports it; do not fail where it does not (NFS).
  H5Pset_file_locking(fapl, true, true);
#endif
  return fapl;
}

}  // namespace detail
using namespace detail;

// ---- File ------------------------------------------------------------------------

void File::fail(const std::string& what) const { throw std::runtime_error(path_ + ": " + what); }

int64_t File::id_checked() const {
  if (id_ < 0) fail("file is closed");
  return id_;
}


void detail::check_regular_file(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0)
    throw std::runtime_error(path + ": " + (errno == ENOENT ? std::string("no such file") : std::strerror(errno)));
  if (S_ISDIR(st.st_mode)) throw std::runtime_error(path + ": is a directory, not an HDF5 file");
}

hid_t detail::open_hdf5(const std::string& path, unsigned flags) {
  silence_hdf5();
  check_regular_file(path);
  Handle fapl(file_access_props(), H5Pclose);
  hid_t id = H5Fopen(path.c_str(), flags, fapl.get());
  if (id < 0)
    throw std::runtime_error(path + ": not an HDF5 file or unreadable (truncated or corrupt?)" + hdf5_reason());
  return id;
}

File File::open(const std::string& path) {
  preflight(path);
  return File(path, open_hdf5(path, H5F_ACC_RDONLY));
}
File File::open_rw(const std::string& path) {
  preflight(path);
  return File(path, open_hdf5(path, H5F_ACC_RDWR));
}

File File::create(const std::string& path) {
  silence_hdf5();
  Handle fapl(file_access_props(), H5Pclose);
  hid_t id = H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, fapl.get());
  if (id < 0) throw std::runtime_error(path + ": cannot create HDF5 file" + hdf5_reason());
  return File(path, id);
}

File::File(File&& o) noexcept : path_(std::move(o.path_)), id_(o.id_) { o.id_ = -1; }
File& File::operator=(File&& o) noexcept {
  if (this != &o) {
    if (id_ >= 0) H5Fclose(id_);
    path_ = std::move(o.path_);
    id_ = o.id_;
    o.id_ = -1;
  }
  return *this;
}
File::~File() {
  if (id_ >= 0) H5Fclose(id_);
}

void File::close() {
  if (id_ < 0) return;
  hid_t id = id_;
  id_ = -1;
  herr_t flushed = H5Fflush(id, H5F_SCOPE_LOCAL);
  std::string reason = flushed < 0 ? hdf5_reason() : "";
  herr_t closed = H5Fclose(id);
  if (flushed < 0 || closed < 0) fail("cannot flush and close the file" + (reason.empty() ? hdf5_reason() : reason));
}

// ---- datasets and groups ---------------------------------------------------------

bool File::has_dataset(const std::string& key) const { return object_type(id_checked(), key) == H5I_DATASET; }
bool File::has_group(const std::string& key) const { return object_type(id_checked(), key) == H5I_GROUP; }

namespace {
constexpr int64_t kMaxElements = int64_t(1) << 56;
}  // namespace

static DatasetInfo describe_dataset(const File& f, hid_t ds, const std::string& key) {
  auto fail = [&](const std::string& what) -> DatasetInfo {
    throw std::runtime_error(f.path() + ": dataset '" + shown(key) + "' " + what);
  };
  Handle type(H5Dget_type(ds), H5Tclose);
  Handle space(H5Dget_space(ds), H5Sclose);
  if (!type.ok() || !space.ok()) return fail("is unreadable" + hdf5_reason());
  DatasetInfo info;
  const H5T_class_t cls = H5Tget_class(type.get());
  const size_t size = H5Tget_size(type.get());
  if (cls == H5T_FLOAT && size == 4) info.dtype = DType::F32;
  else if (cls == H5T_FLOAT && size == 8) info.dtype = DType::F64;
  else if (cls == H5T_INTEGER) info.dtype = size <= 4 ? DType::I32 : DType::I64;
  else if (cls == H5T_FLOAT)
    return fail("has a " + std::to_string(8 * size) + "-bit float type; only f32 and f64 are supported");
  else
    return fail("is not numeric (only float32/float64/integer datasets are supported)");
  const H5S_class_t sc = H5Sget_simple_extent_type(space.get());
  if (sc == H5S_NULL) return fail("has no data (null dataspace)");
  const int rank = H5Sget_simple_extent_ndims(space.get());
  if (rank < 0) return fail("has an unreadable shape" + hdf5_reason());
  std::vector<hsize_t> dims(rank);
  if (rank > 0 && H5Sget_simple_extent_dims(space.get(), dims.data(), nullptr) < 0)
    return fail("has an unreadable shape" + hdf5_reason());
  // The shape is metadata that a corrupt file can set to anything: refuse sizes
  // whose element count (zero dimensions counted as one, so that [0, 2^63] is no
  // loophole for later products) would overflow.
  int64_t extent = 1;
  for (hsize_t d : dims) {
    const int64_t m = std::max<int64_t>(d > hsize_t(kMaxElements) ? kMaxElements + 1 : int64_t(d), 1);
    if (m > kMaxElements / extent) return fail("has an impossible shape (more than 2^56 elements)");
    extent *= m;
    info.shape.push_back(static_cast<int64_t>(d));
  }
  return info;
}

// Before a read allocates what the shape declares, check that the file holds
// that data: raw (unfiltered) data must be stored in full and fit in the file;
// compressed data may not expand past 1024× the file. Virtual and external
// datasets (data in other files) are refused.
static void check_stored_size(const File& f, hid_t file, hid_t ds, const std::string& key, const Shape& shape) {
  auto fail = [&](const std::string& what) {
    throw std::runtime_error(f.path() + ": dataset '" + shown(key) + "' " + what);
  };
  Handle dcpl(H5Dget_create_plist(ds), H5Pclose);
  Handle type(H5Dget_type(ds), H5Tclose);
  if (!dcpl.ok() || !type.ok()) fail("is unreadable" + hdf5_reason());
  const H5D_layout_t layout = H5Pget_layout(dcpl.get());
  if (layout == H5D_VIRTUAL) fail("is a virtual dataset (not supported)");
  if (H5Pget_external_count(dcpl.get()) != 0) fail("keeps its data in external files (not supported)");
  const bool filtered = layout == H5D_CHUNKED && H5Pget_nfilters(dcpl.get()) > 0;
  hsize_t file_size = 0;
  if (H5Fget_filesize(file, &file_size) < 0) fail("is unreadable: file size unknown" + hdf5_reason());
  const long double declared = static_cast<long double>(shape_numel(shape)) * H5Tget_size(type.get());
  const long double stored = static_cast<long double>(H5Dget_storage_size(ds));
  const long double limit = filtered ? 1024.0L * file_size : static_cast<long double>(file_size);
  if (!filtered && stored < declared)
    fail("declares " + std::to_string(static_cast<uint64_t>(declared)) + " bytes but the file stores " +
         std::to_string(static_cast<uint64_t>(stored)) + " (truncated or corrupt file, or data never written)");
  if (declared > limit)
    fail("declares " + std::to_string(static_cast<uint64_t>(declared)) + " bytes, more than a " +
         std::to_string(file_size) + "-byte file can hold");
}

static Handle open_dataset(const File& f, hid_t file, const std::string& key) {
  H5I_type_t t = object_type(file, key);
  if (t == H5I_GROUP) throw std::runtime_error(f.path() + ": '" + shown(key) + "' is a group, not a dataset");
  if (t != H5I_DATASET) throw std::runtime_error(f.path() + ": dataset '" + shown(key) + "' not found");
  Handle ds(H5Dopen2(file, h5_path(key).c_str(), H5P_DEFAULT), H5Dclose);
  if (!ds.ok()) throw std::runtime_error(f.path() + ": cannot open dataset '" + shown(key) + "'" + hdf5_reason());
  return ds;
}

Shape File::dataset_shape(const std::string& key) const {
  Handle ds = open_dataset(*this, id_checked(), key);
  return describe_dataset(*this, ds.get(), key).shape;
}

DType File::dataset_dtype(const std::string& key) const {
  Handle ds = open_dataset(*this, id_checked(), key);
  return describe_dataset(*this, ds.get(), key).dtype;
}

CheckedDataset detail::open_for_reading(const File& f, hid_t file, const std::string& key) {
  Handle ds = open_dataset(f, file, key);
  DatasetInfo info = describe_dataset(f, ds.get(), key);
  check_stored_size(f, file, ds.get(), key, info.shape);
  return {std::move(ds), std::move(info)};
}

Tensor File::read(const std::string& key) const {
  auto [ds, info] = open_for_reading(*this, id_checked(), key);
  Tensor t = Tensor::empty(info.shape, info.dtype, Device::CPU);
  // HDF5 converts from the file's type (any byte order or integer width) to
  // the native one we ask for.
  if (t.numel() > 0 && H5Dread(ds.get(), native_type(info.dtype), H5S_ALL, H5S_ALL, H5P_DEFAULT, t.raw()) < 0)
    fail("cannot read dataset '" + shown(key) + "' (truncated or corrupt file?)" + hdf5_reason());
  return t;
}

void File::write(const std::string& key, const Tensor& tensor) {
  const hid_t file = id_checked();
  const std::string k = normalize(key);
  if (k.empty()) fail("cannot write a dataset at the root '/'");
  if (!tensor.defined()) fail("cannot write undefined tensor as dataset '" + k + "'");
  const DType dt = tensor.dtype();
  if (native_type(dt) < 0)
    fail(std::string("cannot write a ") + dtype_name(dt) + " tensor as dataset '" + k +
         "' (supported: f32, f64, i32, i64)");
  Tensor host = tensor.detach();
  if (host.device() != Device::CPU) host = host.to(Device::CPU);

  H5I_type_t existing = object_type(file, k);
  if (existing != H5I_BADID && H5Ldelete(file, k.c_str(), H5P_DEFAULT) < 0)
    fail("cannot replace '" + k + "'" + hdf5_reason());

  Handle lcpl(H5Pcreate(H5P_LINK_CREATE), H5Pclose);
  H5Pset_create_intermediate_group(lcpl.get(), 1);
  const Shape& shape = host.shape();
  Handle space;
  if (shape.empty()) {
    space = Handle(H5Screate(H5S_SCALAR), H5Sclose);
  } else {
    std::vector<hsize_t> dims(shape.begin(), shape.end());
    space = Handle(H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr), H5Sclose);
  }
  Handle ds(H5Dcreate2(file, k.c_str(), file_type(dt), space.get(), lcpl.get(), H5P_DEFAULT, H5P_DEFAULT),
            H5Dclose);
  if (!ds.ok()) fail("cannot create dataset '" + k + "'" + hdf5_reason());
  if (host.numel() > 0 && H5Dwrite(ds.get(), native_type(dt), H5S_ALL, H5S_ALL, H5P_DEFAULT, host.raw()) < 0)
    fail("cannot write dataset '" + k + "'" + hdf5_reason());
}

void File::create_group(const std::string& key) {
  const hid_t file = id_checked();
  const std::string k = normalize(key);
  H5I_type_t t = object_type(file, k);
  if (t == H5I_GROUP) return;
  if (t != H5I_BADID) fail("cannot create group '" + k + "': a dataset of that name exists");
  Handle lcpl(H5Pcreate(H5P_LINK_CREATE), H5Pclose);
  H5Pset_create_intermediate_group(lcpl.get(), 1);
  Handle g(H5Gcreate2(file, k.c_str(), lcpl.get(), H5P_DEFAULT, H5P_DEFAULT), H5Gclose);
  if (!g.ok()) fail("cannot create group '" + k + "'" + hdf5_reason());
}

// Where an object lives in its file: two links reach the same object exactly
// when these bytes are equal. Empty when HDF5 cannot tell.
std::string detail::object_identity(hid_t obj) {
#if H5_VERSION_GE(1, 12, 0)
  H5O_info2_t info;
  if (H5Oget_info3(obj, &info, H5O_INFO_BASIC) < 0) return "";
  return std::string(reinterpret_cast<const char*>(&info.fileno), sizeof info.fileno) +
         std::string(reinterpret_cast<const char*>(&info.token), sizeof info.token);
#else
  H5O_info_t info;
  if (H5Oget_info2(obj, &info, H5O_INFO_BASIC) < 0) return "";
  return std::string(reinterpret_cast<const char*>(&info.fileno), sizeof info.fileno) +
         std::string(reinterpret_cast<const char*>(&info.addr), sizeof info.addr);
#endif
}

// Children of a group: name, whether it is a dataset or a group, and where it lives.
std::vector<Child> detail::children(const File& f, hid_t file, const std::string& group) {
  H5I_type_t t = object_type(file, group);
  if (t != H5I_GROUP)
    throw std::runtime_error(f.path() + ": group '" + shown(group) + "' " +
                             (t == H5I_BADID ? "not found" : "is not a group"));
  Handle g(H5Gopen2(file, h5_path(group).c_str(), H5P_DEFAULT), H5Gclose);
  H5G_info_t info;
  if (!g.ok() || H5Gget_info(g.get(), &info) < 0)
    throw std::runtime_error(f.path() + ": cannot read group '" + shown(group) + "'" + hdf5_reason());
  std::vector<Child> out;
  for (hsize_t i = 0; i < info.nlinks; ++i) {
    ssize_t len = H5Lget_name_by_idx(g.get(), ".", H5_INDEX_NAME, H5_ITER_INC, i, nullptr, 0, H5P_DEFAULT);
    if (len < 0) throw std::runtime_error(f.path() + ": cannot list group '" + shown(group) + "'" + hdf5_reason());
    std::string name(static_cast<size_t>(len) + 1, '\0');
    H5Lget_name_by_idx(g.get(), ".", H5_INDEX_NAME, H5_ITER_INC, i, name.data(), name.size(), H5P_DEFAULT);
    name.resize(static_cast<size_t>(len));
    Handle obj(H5Oopen(g.get(), name.c_str(), H5P_DEFAULT), H5Oclose);
    if (obj.ok()) out.push_back({name, H5Iget_type(obj.get()), object_identity(obj.get())});
    else out.push_back({name, H5I_BADID, ""});
  }
  return out;
}

// Deeper than any file Echo writes (a checkpoint's parameters are ~5 levels down).
constexpr int kMaxGroupDepth = 32;

std::vector<std::string> File::list_datasets(const std::string& group, bool recursive) const {
  const hid_t file = id_checked();
  std::vector<std::string> out;
  // Hard links can make a group its own descendant: without the list of groups
  // above, a recursive listing of such a file would never end.
  std::vector<std::string> above;
  std::function<void(const std::string&, const std::string&)> walk = [&](const std::string& g,
                                                                         const std::string& prefix) {
    if (above.size() > static_cast<size_t>(kMaxGroupDepth))
      fail("groups under '" + shown(group) + "' are nested more than " + std::to_string(kMaxGroupDepth) +
           " levels deep");
    for (const auto& child : children(*this, file, g)) {
      if (child.type == H5I_DATASET) {
        out.push_back(prefix + child.name);
      } else if (child.type == H5I_GROUP && recursive) {
        const std::string path = normalize(g + "/" + child.name);
        if (!child.identity.empty() && std::find(above.begin(), above.end(), child.identity) != above.end())
          fail("group '" + shown(path) + "' contains itself (a cycle of hard links)");
        above.push_back(child.identity);
        walk(path, prefix + child.name + "/");
        above.pop_back();
      }
    }
  };
  {
    Handle g(H5Oopen(file, h5_path(group).c_str(), H5P_DEFAULT), H5Oclose);
    above.push_back(g.ok() ? object_identity(g.get()) : "");
  }
  walk(normalize(group), "");
  std::sort(out.begin(), out.end());
  return out;
}

std::vector<std::string> File::list_groups(const std::string& group) const {
  std::vector<std::string> out;
  for (const auto& child : children(*this, id_checked(), group))
    if (child.type == H5I_GROUP) out.push_back(child.name);
  std::sort(out.begin(), out.end());
  return out;
}

// ---- attributes ------------------------------------------------------------------

static Handle open_object(const File& f, hid_t file, const std::string& object) {
  if (object_type(file, object) == H5I_BADID)
    throw std::runtime_error(f.path() + ": object '" + shown(object) + "' not found");
  Handle obj(H5Oopen(file, h5_path(object).c_str(), H5P_DEFAULT), H5Oclose);
  if (!obj.ok()) throw std::runtime_error(f.path() + ": cannot open '" + shown(object) + "'" + hdf5_reason());
  return obj;
}

static std::string attr_label(const std::string& object, const std::string& name) {
  std::string o = shown(object);
  return "attribute '" + name + "'" + (o == "/" ? "" : " of '" + o + "'");
}

std::vector<std::string> File::attr_names(const std::string& object) const {
  Handle obj = open_object(*this, id_checked(), object);
  std::vector<std::string> names;
  hsize_t idx = 0;
  herr_t rc = H5Aiterate2(obj.get(), H5_INDEX_NAME, H5_ITER_INC, &idx,
                          [](hid_t, const char* name, const H5A_info_t*, void* out) -> herr_t {
                            static_cast<std::vector<std::string>*>(out)->push_back(name);
                            return 0;
                          },
                          &names);
  if (rc < 0) fail("cannot list the attributes of '" + shown(object) + "'" + hdf5_reason());
  return names;
}

bool File::has_attr(const std::string& object, const std::string& name) const {
  Handle obj = open_object(*this, id_checked(), object);
  return H5Aexists(obj.get(), name.c_str()) > 0;
}

static Handle open_attr(const File& f, hid_t obj, const std::string& object, const std::string& name) {
  if (H5Aexists(obj, name.c_str()) <= 0)
    throw std::runtime_error(f.path() + ": " + attr_label(object, name) + " not found");
  Handle a(H5Aopen(obj, name.c_str(), H5P_DEFAULT), H5Aclose);
  if (!a.ok()) throw std::runtime_error(f.path() + ": cannot open " + attr_label(object, name) + hdf5_reason());
  return a;
}

static AttrKind kind_of(hid_t type) {
  switch (H5Tget_class(type)) {
    case H5T_INTEGER: return AttrKind::Int;
    case H5T_FLOAT: return AttrKind::Float;
    case H5T_STRING: return AttrKind::String;
    default: return AttrKind::Other;
  }
}

AttrKind File::attr_kind(const std::string& object, const std::string& name) const {
  Handle obj = open_object(*this, id_checked(), object);
  Handle a = open_attr(*this, obj.get(), object, name);
  Handle type(H5Aget_type(a.get()), H5Tclose);
  return kind_of(type.get());
}

namespace {
// Reads a one-element numeric attribute, converting to the native type asked for.
template <typename T>
T read_scalar_attr(const File& f, hid_t file, const std::string& object, const std::string& name, hid_t native,
                   bool allow_float) {
  Handle obj = open_object(f, file, object);
  Handle a = open_attr(f, obj.get(), object, name);
  Handle type(H5Aget_type(a.get()), H5Tclose);
  Handle space(H5Aget_space(a.get()), H5Sclose);
  AttrKind k = kind_of(type.get());
  const std::string label = f.path() + ": " + attr_label(object, name);
  if (k != AttrKind::Int && !(allow_float && k == AttrKind::Float))
    throw std::runtime_error(label + (allow_float ? " is not a number" : " is not an integer"));
  if (H5Sget_simple_extent_npoints(space.get()) != 1) throw std::runtime_error(label + " is not a scalar");
  T value{};
  if (H5Aread(a.get(), native, &value) < 0) throw std::runtime_error(label + " is unreadable" + hdf5_reason());
  return value;
}

Handle replace_attr(const File& f, hid_t obj, const std::string& object, const std::string& name, hid_t type,
                    hid_t space) {
  if (H5Aexists(obj, name.c_str()) > 0 && H5Adelete(obj, name.c_str()) < 0)
    throw std::runtime_error(f.path() + ": cannot replace " + attr_label(object, name) + hdf5_reason());
  Handle a(H5Acreate2(obj, name.c_str(), type, space, H5P_DEFAULT, H5P_DEFAULT), H5Aclose);
  if (!a.ok()) throw std::runtime_error(f.path() + ": cannot create " + attr_label(object, name) + hdf5_reason());
  return a;
}
}  // namespace

int64_t File::attr_int(const std::string& object, const std::string& name) const {
  return read_scalar_attr<int64_t>(*this, id_checked(), object, name, H5T_NATIVE_INT64, false);
}

double File::attr_double(const std::string& object, const std::string& name) const {
  return read_scalar_attr<double>(*this, id_checked(), object, name, H5T_NATIVE_DOUBLE, true);
}

std::string File::attr_string(const std::string& object, const std::string& name) const {
  Handle obj = open_object(*this, id_checked(), object);
  Handle a = open_attr(*this, obj.get(), object, name);
  Handle type(H5Aget_type(a.get()), H5Tclose);
  Handle space(H5Aget_space(a.get()), H5Sclose);
  const std::string label = path_ + ": " + attr_label(object, name);
  if (kind_of(type.get()) != AttrKind::String) throw std::runtime_error(label + " is not a string");
  if (H5Sget_simple_extent_npoints(space.get()) != 1) throw std::runtime_error(label + " is not a single string");
  if (H5Tis_variable_str(type.get()) > 0) {
    // Variable-length (what h5py writes for str): the library allocates the buffer.
    Handle mem(H5Tcopy(H5T_C_S1), H5Tclose);
    H5Tset_size(mem.get(), H5T_VARIABLE);
    H5Tset_cset(mem.get(), H5Tget_cset(type.get()));
    char* buf = nullptr;
    if (H5Aread(a.get(), mem.get(), &buf) < 0) throw std::runtime_error(label + " is unreadable" + hdf5_reason());
    std::string s = buf ? buf : "";
    if (buf) H5free_memory(buf);
    return s;
  }
  // Fixed-length: read the bytes as stored and cut at the first NUL (padding).
  const size_t size = H5Tget_size(type.get());
  std::string s(size, '\0');
  if (size > 0 && H5Aread(a.get(), type.get(), s.data()) < 0)
    throw std::runtime_error(label + " is unreadable" + hdf5_reason());
  s.resize(strnlen(s.data(), size));
  return s;
}

void File::set_attr(const std::string& object, const std::string& name, int64_t value) {
  Handle obj = open_object(*this, id_checked(), object);
  Handle space(H5Screate(H5S_SCALAR), H5Sclose);
  Handle a = replace_attr(*this, obj.get(), object, name, H5T_STD_I64LE, space.get());
  if (H5Awrite(a.get(), H5T_NATIVE_INT64, &value) < 0)
    fail("cannot write " + attr_label(object, name) + hdf5_reason());
}

void File::set_attr(const std::string& object, const std::string& name, double value) {
  Handle obj = open_object(*this, id_checked(), object);
  Handle space(H5Screate(H5S_SCALAR), H5Sclose);
  Handle a = replace_attr(*this, obj.get(), object, name, H5T_IEEE_F64LE, space.get());
  if (H5Awrite(a.get(), H5T_NATIVE_DOUBLE, &value) < 0)
    fail("cannot write " + attr_label(object, name) + hdf5_reason());
}

void File::set_attr(const std::string& object, const std::string& name, const std::string& value) {
  Handle obj = open_object(*this, id_checked(), object);
  Handle space(H5Screate(H5S_SCALAR), H5Sclose);
  // Variable-length UTF-8, as h5py writes a Python str (reads back as str there).
  Handle type(H5Tcopy(H5T_C_S1), H5Tclose);
  H5Tset_size(type.get(), H5T_VARIABLE);
  H5Tset_cset(type.get(), H5T_CSET_UTF8);
  Handle a = replace_attr(*this, obj.get(), object, name, type.get(), space.get());
  const char* p = value.c_str();
  if (H5Awrite(a.get(), type.get(), &p) < 0) fail("cannot write " + attr_label(object, name) + hdf5_reason());
}

// ---- atomic write ----------------------------------------------------------------

namespace {
std::string errno_text() { return std::strerror(errno); }

void fsync_path(const std::string& path, int flags, const std::string& label) {
  int fd = ::open(path.c_str(), flags);
  if (fd < 0) throw std::runtime_error(label + ": cannot open for fsync: " + errno_text());
  int rc = ::fsync(fd);
  int err = errno;
  ::close(fd);
  // Some file systems do not support fsync on directories (EINVAL); the data is
  // then as durable as that file system makes it.
  if (rc != 0 && err != EINVAL) throw std::runtime_error(label + ": fsync failed: " + std::strerror(err));
}
}  // namespace

void atomic_write(const std::string& path, const std::function<void(const std::string& tmp_path)>& write) {
  static std::atomic<uint64_t> counter{0};
  const size_t slash = path.rfind('/');
  const std::string dir = slash == std::string::npos ? "." : (slash == 0 ? "/" : path.substr(0, slash));
  const std::string base = slash == std::string::npos ? path : path.substr(slash + 1);
  if (base.empty()) throw std::runtime_error(path + ": not a file name");
  const std::string tmp = (dir == "/" ? "" : dir) + "/." + base + ".tmp." + std::to_string(::getpid()) + "." +
                          std::to_string(counter++);

  // Create the temporary file ourselves first: a directory we cannot write to
  // fails here with a message about the directory, not about a temporary name.
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
  if (fd < 0) throw std::runtime_error(path + ": cannot create a file in '" + dir + "': " + errno_text());
  ::close(fd);

  try {
    try {
      write(tmp);
    } catch (const std::runtime_error& e) {
      // Name the file being written, not its temporary stand-in.
      const std::string msg = e.what();
      if (msg.compare(0, tmp.size(), tmp) != 0) throw;
      throw std::runtime_error(path + msg.substr(tmp.size()));
    }
    fsync_path(tmp, O_RDONLY | O_CLOEXEC, path);
    if (::rename(tmp.c_str(), path.c_str()) != 0)
      throw std::runtime_error(path + ": cannot move the new file into place: " + errno_text());
  } catch (...) {
    ::unlink(tmp.c_str());
    throw;
  }
  fsync_path(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC, dir);
}

}  // namespace echo::h5
