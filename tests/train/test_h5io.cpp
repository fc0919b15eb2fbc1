#include "train/h5io.h"

#include <hdf5.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>

#include "test_util.h"
#include "train_util.h"

using namespace echo;
using namespace echo::testing;
using echo::h5::File;

namespace {

// Expects fn() to throw a std::runtime_error whose message contains every fragment.
template <typename F>
void expect_error(F&& fn, const std::vector<std::string>& fragments) {
  try {
    fn();
    ADD_FAILURE() << "no exception; expected one containing '" << fragments.at(0) << "'";
  } catch (const std::runtime_error& e) {
    const std::string msg = e.what();
    for (const auto& f : fragments) EXPECT_NE(msg.find(f), std::string::npos) << "message: " << msg << "\nmissing: " << f;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << "multi-line message: " << msg;
  }
}

Tensor random_ints(const Shape& shape, DType dt, Rng& rng) {
  std::vector<int64_t> v(shape_numel(shape));
  for (auto& e : v) e = rng.randint(-1000000, 1000000) * (dt == DType::I64 ? 1000003 : 1);
  return Tensor::from_ints(v, shape, dt);
}

void expect_same(const Tensor& a, const Tensor& b) {
  ASSERT_EQ(a.dtype(), b.dtype()) << a.describe() << " vs " << b.describe();
  ASSERT_EQ(a.shape(), b.shape()) << a.describe() << " vs " << b.describe();
  if (is_floating(a.dtype())) EXPECT_EQ(a.to_vector(), b.to_vector());  // bit-exact round trip
  else EXPECT_EQ(a.to_int_vector(), b.to_int_vector());
}

// A file with one float dataset big enough that truncating it cuts real data.
std::string make_sample_file(const TempDir& dir, const std::string& name) {
  Rng rng(5);
  File f = File::create(dir.file(name));
  f.write("model/w", randn({256, 256}, rng, DType::F32));
  f.write("model/b", randn({256}, rng, DType::F64));
  f.set_attr("/", "format", "echo-lm");
  f.set_attr("/", "step", int64_t{7});
  f.close();
  return dir.file(name);
}

// Reads everything in the file: the path a loader would take.
void read_everything(const std::string& path) {
  File f = File::open(path);
  for (const auto& key : f.list_datasets("/", true)) f.read(key);
  for (const auto& a : f.attr_names("/")) {
    if (f.attr_kind("/", a) == h5::AttrKind::String) f.attr_string("/", a);
    else f.attr_double("/", a);
  }
}

}  // namespace

TEST(H5io, RoundTripsEveryDtypeAndShape) {
  TempDir dir;
  Rng rng(1);
  std::map<std::string, Tensor> written = {
      {"f32", randn({3, 4, 5}, rng, DType::F32)},
      {"f64", randn({7}, rng, DType::F64)},
      {"i32", random_ints({2, 3}, DType::I32, rng)},
      {"i64", random_ints({4, 1, 2}, DType::I64, rng)},
      {"deep/er/and/deeper/x", randn({2, 2}, rng, DType::F64)},
      {"scalar", Tensor::from_vector({3.25}, {}, DType::F64)},
      {"empty", Tensor::zeros({0, 3}, DType::F32)},
  };
  {
    File f = File::create(dir.file("a.h5"));
    for (const auto& [k, t] : written) f.write(k, t);
    f.close();
  }
  File f = File::open(dir.file("a.h5"));
  for (const auto& [k, t] : written) {
    SCOPED_TRACE(k);
    EXPECT_TRUE(f.has_dataset(k));
    EXPECT_TRUE(f.has_dataset("/" + k));
    EXPECT_EQ(f.dataset_shape(k), t.shape());
    EXPECT_EQ(f.dataset_dtype(k), t.dtype());
    expect_same(f.read(k), t);
  }
  EXPECT_TRUE(f.has_group("deep/er"));
  EXPECT_FALSE(f.has_dataset("deep/er"));
  EXPECT_FALSE(f.has_group("deep/er/and/deeper/x"));
  EXPECT_FALSE(f.has_dataset("no/such/path"));
}

TEST(H5io, WriteReplacesAnExistingDatasetAndOpenRwAppends) {
  TempDir dir;
  const std::string path = dir.file("r.h5");
  {
    File f = File::create(path);
    f.write("x", Tensor::from_vector({1, 2, 3}, {3}, DType::F32));
    f.write("x", Tensor::from_vector({4, 5}, {1, 2}, DType::F64));
    f.close();
  }
  {
    File f = File::open_rw(path);
    f.write("y", Tensor::from_ints({9}, {1}, DType::I64));
    f.close();
  }
  File f = File::open(path);
  expect_same(f.read("x"), Tensor::from_vector({4, 5}, {1, 2}, DType::F64));
  expect_same(f.read("y"), Tensor::from_ints({9}, {1}, DType::I64));
  EXPECT_EQ(f.list_datasets(), (std::vector<std::string>{"x", "y"}));
}

TEST(H5io, ListsDatasetsAndGroups) {
  TempDir dir;
  File f = File::create(dir.file("l.h5"));
  Tensor t = Tensor::zeros({1});
  for (const char* k : {"b", "a", "model/layers/1/w", "model/layers/0/w", "model/emb", "opt/m/emb"}) f.write(k, t);
  f.create_group("empty_group");
  EXPECT_EQ(f.list_datasets(), (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(f.list_groups(), (std::vector<std::string>{"empty_group", "model", "opt"}));
  EXPECT_EQ(f.list_datasets("model"), (std::vector<std::string>{"emb"}));
  EXPECT_EQ(f.list_datasets("/model/", true),
            (std::vector<std::string>{"emb", "layers/0/w", "layers/1/w"}));
  EXPECT_EQ(f.list_datasets("/", true),
            (std::vector<std::string>{"a", "b", "model/emb", "model/layers/0/w", "model/layers/1/w", "opt/m/emb"}));
  EXPECT_TRUE(f.list_datasets("empty_group").empty());
  expect_error([&] { f.list_datasets("nope"); }, {"l.h5", "group 'nope' not found"});
  expect_error([&] { f.list_datasets("a"); }, {"group 'a' is not a group"});
}

TEST(H5io, AttributesOnRootGroupsAndDatasets) {
  TempDir dir;
  const std::string path = dir.file("attrs.h5");
  const std::string json = R"({"d_model": 256, "name": "échо ✓", "layers": "MSMS"})";
  {
    File f = File::create(path);
    f.set_attr("/", "format", "echo-lm");
    f.set_attr("/", "format_version", 1);
    f.set_attr("/", "step", int64_t{1} << 40);
    f.set_attr("/", "lr", 3e-4);
    f.set_attr("/", "config", json);
    f.set_attr("/", "empty", std::string());
    f.write("model/w", Tensor::zeros({2}));
    f.set_attr("model", "kind", "params");
    f.set_attr("model/w", "init_std", 0.02);
    f.set_attr("/", "step", int64_t{8});  // replaces
    f.close();
  }
  File f = File::open(path);
  EXPECT_EQ(f.attr_names("/"),
            (std::vector<std::string>{"config", "empty", "format", "format_version", "lr", "step"}));
  EXPECT_EQ(f.attr_string("/", "format"), "echo-lm");
  EXPECT_EQ(f.attr_string("/", "config"), json);
  EXPECT_EQ(f.attr_string("/", "empty"), "");
  EXPECT_EQ(f.attr_int("/", "format_version"), 1);
  EXPECT_EQ(f.attr_int("/", "step"), 8);
  EXPECT_EQ(f.attr_double("/", "lr"), 3e-4);
  EXPECT_EQ(f.attr_double("/", "step"), 8.0);  // integers read as numbers too
  EXPECT_EQ(f.attr_kind("/", "lr"), h5::AttrKind::Float);
  EXPECT_EQ(f.attr_kind("/", "step"), h5::AttrKind::Int);
  EXPECT_EQ(f.attr_kind("/", "config"), h5::AttrKind::String);
  EXPECT_TRUE(f.has_attr("/", "lr"));
  EXPECT_FALSE(f.has_attr("/", "nope"));
  EXPECT_EQ(f.attr_string("/model", "kind"), "params");
  EXPECT_EQ(f.attr_double("model/w", "init_std"), 0.02);
  expect_error([&] { f.attr_int("/", "lr"); }, {"attrs.h5", "attribute 'lr' is not an integer"});
  expect_error([&] { f.attr_double("/", "format"); }, {"attribute 'format' is not a number"});
  expect_error([&] { f.attr_string("/", "step"); }, {"attribute 'step' is not a string"});
  expect_error([&] { f.attr_int("/", "missing"); }, {"attrs.h5: attribute 'missing' not found"});
  expect_error([&] { f.attr_int("model", "missing"); }, {"attribute 'missing' of 'model' not found"});
  expect_error([&] { f.attr_names("nowhere"); }, {"object 'nowhere' not found"});
}

// Files written by other tools (h5py, numpy): other integer widths, fixed-length
// strings, 32-bit integer attributes; and types we refuse.
TEST(H5io, ReadsForeignTypesAndRefusesUnsupportedOnes) {
  TempDir dir;
  const std::string path = dir.file("foreign.h5");
  {
    hid_t file = H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    hsize_t dims[1] = {4};
    hid_t space = H5Screate_simple(1, dims, nullptr);
    const uint8_t mask[4] = {1, 1, 0, 255};
    hid_t ds = H5Dcreate2(file, "mask", H5T_STD_U8LE, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    H5Dwrite(ds, H5T_NATIVE_UINT8, H5S_ALL, H5S_ALL, H5P_DEFAULT, mask);
    H5Dclose(ds);
    const int16_t be[4] = {-3, 0, 7, 300};
    ds = H5Dcreate2(file, "big_endian_i16", H5T_STD_I16BE, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    H5Dwrite(ds, H5T_NATIVE_INT16, H5S_ALL, H5S_ALL, H5P_DEFAULT, be);
    H5Dclose(ds);
    hid_t str = H5Tcopy(H5T_C_S1);
    H5Tset_size(str, 8);
    ds = H5Dcreate2(file, "text", str, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    H5Dclose(ds);
    hid_t scalar = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(file, "fixed", str, scalar, H5P_DEFAULT, H5P_DEFAULT);
    H5Awrite(a, str, "abc\0\0\0\0\0");
    H5Aclose(a);
    const int32_t i32 = -12;
    a = H5Acreate2(file, "i32", H5T_STD_I32LE, scalar, H5P_DEFAULT, H5P_DEFAULT);
    H5Awrite(a, H5T_NATIVE_INT32, &i32);
    H5Aclose(a);
    a = H5Acreate2(file, "vector", H5T_STD_I32LE, space, H5P_DEFAULT, H5P_DEFAULT);
    const int32_t v[4] = {1, 2, 3, 4};
    H5Awrite(a, H5T_NATIVE_INT32, v);
    H5Aclose(a);
    H5Tclose(str);
    H5Sclose(scalar);
    H5Sclose(space);
    H5Fclose(file);
  }
  File f = File::open(path);
  expect_same(f.read("mask"), Tensor::from_ints({1, 1, 0, 255}, {4}, DType::I32));
  expect_same(f.read("big_endian_i16"), Tensor::from_ints({-3, 0, 7, 300}, {4}, DType::I32));
  expect_error([&] { f.read("text"); }, {"foreign.h5: dataset 'text' is not numeric"});
  EXPECT_EQ(f.attr_string("/", "fixed"), "abc");
  EXPECT_EQ(f.attr_int("/", "i32"), -12);
  EXPECT_EQ(f.attr_kind("/", "vector"), h5::AttrKind::Int);
  expect_error([&] { f.attr_int("/", "vector"); }, {"attribute 'vector' is not a scalar"});
}

TEST(H5io, MissingKeysAreNamed) {
  TempDir dir;
  const std::string path = make_sample_file(dir, "IN.h5");
  File f = File::open(path);
  expect_error([&] { f.read("x"); }, {path + ": dataset 'x' not found"});
  expect_error([&] { f.read("/model/zz"); }, {path + ": dataset 'model/zz' not found"});
  expect_error([&] { f.read("nope/deeper/x"); }, {"dataset 'nope/deeper/x' not found"});
  expect_error([&] { f.read("model"); }, {"'model' is a group, not a dataset"});
  expect_error([&] { f.dataset_shape("q"); }, {"dataset 'q' not found"});
}

TEST(H5io, RefusesWhatItCannotStore) {
  TempDir dir;
  File f = File::create(dir.file("w.h5"));
  expect_error([&] { f.write("b", Tensor::zeros({2}, DType::BF16)); }, {"w.h5", "bf16", "'b'"});
  expect_error([&] { f.write("u", Tensor()); }, {"undefined tensor", "'u'"});
  expect_error([&] { f.write("/", Tensor::zeros({1})); }, {"root"});
  f.write("d", Tensor::zeros({1}));
  expect_error([&] { f.write("d/child", Tensor::zeros({1})); }, {"cannot create dataset 'd/child'"});
  expect_error([&] { f.create_group("d"); }, {"a dataset of that name exists"});
  f.close();
  expect_error([&] { f.read("d"); }, {"file is closed"});
}

TEST(H5io, UnreadableFilesGiveCleanErrors) {
  TempDir dir;
  expect_error([&] { File::open(dir.file("missing.h5")); }, {dir.file("missing.h5") + ": no such file"});
  expect_error([&] { File::open(dir.path()); }, {"is a directory"});
  write_text(dir.file("empty.h5"), "");
  expect_error([&] { File::open(dir.file("empty.h5")); }, {"empty.h5: not an HDF5 file or unreadable"});
  write_text(dir.file("text.h5"), "this is not an HDF5 file\n");
  expect_error([&] { File::open(dir.file("text.h5")); }, {"text.h5: not an HDF5 file or unreadable"});
  Rng rng(3);
  std::string noise(100000, '\0');
  for (auto& c : noise) c = static_cast<char>(rng.randint(0, 256));
  write_text(dir.file("noise.h5"), noise);
  expect_error([&] { File::open(dir.file("noise.h5")); }, {"noise.h5: not an HDF5 file or unreadable"});
}

// A checkpoint cut short (a crash mid-copy, a full disk) must be an error at
// open or at read, never a crash and never data read past the end.
TEST(H5io, TruncatedFilesAreErrorsAtEveryCut) {
  TempDir dir;
  const std::string good = make_sample_file(dir, "good.h5");
  const std::string bytes = read_text(good);
  ASSERT_GT(bytes.size(), 256u * 256u * 4u);
  for (size_t cut : {size_t{0}, size_t{8}, size_t{100}, size_t{1000}, size_t{4096}, bytes.size() / 3,
                     bytes.size() / 2, bytes.size() - 100, bytes.size() - 1}) {
    SCOPED_TRACE("cut at " + std::to_string(cut) + " of " + std::to_string(bytes.size()));
    const std::string path = dir.file("cut.h5");
    write_text(path, bytes.substr(0, cut));
    expect_error([&] { read_everything(path); }, {"cut.h5: "});
  }
}

// Overwritten metadata: whatever HDF5 makes of it, we get an exception or
// data, never a crash. (Raw data has no checksum in HDF5; flipping it is not
// detectable and not what this checks.)
TEST(H5io, CorruptMetadataDoesNotCrash) {
  TempDir dir;
  const std::string good = make_sample_file(dir, "good.h5");
  const std::string bytes = read_text(good);
  int errors = 0;
  for (uint64_t seed = 0; seed < 16; ++seed) {
    Rng rng(seed);
    std::string bad = bytes;
    const size_t start = static_cast<size_t>(rng.randint(48, 2048));
    for (size_t i = start; i < start + 64 && i < bad.size(); ++i) bad[i] = static_cast<char>(rng.randint(0, 256));
    const std::string path = dir.file("bad.h5");
    write_text(path, bad);
    try {
      read_everything(path);
    } catch (const std::runtime_error& e) {
      ++errors;
      EXPECT_EQ(std::string(e.what()).rfind(path + ": ", 0), 0u) << e.what();
    }
  }
  EXPECT_GT(errors, 0);  // some of these cuts land in structures HDF5 checks
}

TEST(H5io, HDF5PrintsNothingOnErrors) {
  TempDir dir;
  const std::string path = make_sample_file(dir, "s.h5");
  write_text(dir.file("text.h5"), "not hdf5");
  ::testing::internal::CaptureStderr();
  EXPECT_THROW(File::open(dir.file("text.h5")), std::runtime_error);
  {
    File f = File::open(path);
    EXPECT_THROW(f.read("nope"), std::runtime_error);
    EXPECT_THROW(f.attr_int("/", "nope"), std::runtime_error);
    EXPECT_THROW(f.attr_int("/", "format"), std::runtime_error);
  }
  EXPECT_EQ(::testing::internal::GetCapturedStderr(), "");
}

// ---- atomic_write ------------------------------------------------------------------

TEST(AtomicWrite, CreatesAndReplacesLeavingNoTemporaryFiles) {
  TempDir dir;
  const std::string path = dir.file("ck.h5");
  for (double v : {1.0, 2.0}) {
    h5::atomic_write(path, [&](const std::string& tmp) {
      EXPECT_EQ(std::filesystem::path(tmp).parent_path(), std::filesystem::path(path).parent_path());
      EXPECT_NE(tmp, path);
      File f = File::create(tmp);
      f.write("v", Tensor::from_vector({v}, {1}, DType::F64));
      f.close();
    });
    EXPECT_EQ(File::open(path).read("v").item(), v);
    EXPECT_EQ(dir.entries(), std::vector<std::string>{"ck.h5"});
  }
}

TEST(AtomicWrite, RelativePathWritesInTheCurrentDirectory) {
  TempDir dir;
  const auto cwd = std::filesystem::current_path();
  std::filesystem::current_path(dir.path());
  h5::atomic_write("rel.txt", [](const std::string& tmp) { write_text(tmp, "hello"); });
  std::filesystem::current_path(cwd);
  EXPECT_EQ(read_text(dir.file("rel.txt")), "hello");
  EXPECT_EQ(dir.entries(), std::vector<std::string>{"rel.txt"});
}

TEST(AtomicWrite, FailureLeavesTheOldFileAndNoTemporary) {
  TempDir dir;
  const std::string path = dir.file("ck.h5");
  h5::atomic_write(path, [](const std::string& tmp) {
    File f = File::create(tmp);
    f.write("v", Tensor::from_vector({1.0}, {1}, DType::F64));
    f.close();
  });
  const std::string before = read_text(path);
  // A writer that fails half-way (after writing part of the new file).
  try {
    h5::atomic_write(path, [](const std::string& tmp) {
      File f = File::create(tmp);
      f.write("v", Tensor::from_vector({2.0}, {1}, DType::F64));
      f.close();
      throw std::runtime_error("disk full (simulated)");
    });
    ADD_FAILURE() << "no exception";
  } catch (const std::runtime_error& e) {
    EXPECT_STREQ(e.what(), "disk full (simulated)");
  }
  EXPECT_EQ(read_text(path), before);
  EXPECT_EQ(File::open(path).read("v").item(), 1.0);
  EXPECT_EQ(dir.entries(), std::vector<std::string>{"ck.h5"});
}

TEST(AtomicWrite, MissingDirectoryIsAnError) {
  TempDir dir;
  const std::string path = dir.file("no/such/dir/ck.h5");
  expect_error([&] { h5::atomic_write(path, [](const std::string&) {}); },
               {path + ": cannot create a file in", "No such file or directory"});
}

TEST(AtomicWrite, ReadOnlyDirectoryLeavesTheOldFile) {
  if (geteuid() == 0) GTEST_SKIP() << "running as root: directory permissions do not stop root";
  TempDir dir;
  const std::string sub = dir.file("ro");
  std::filesystem::create_directory(sub);
  const std::string path = sub + "/ck.txt";
  write_text(path, "old");
  ASSERT_EQ(chmod(sub.c_str(), 0555), 0);
  expect_error([&] { h5::atomic_write(path, [](const std::string& tmp) { write_text(tmp, "new"); }); },
               {path + ": cannot create a file in", "Permission denied"});
  chmod(sub.c_str(), 0755);
  EXPECT_EQ(read_text(path), "old");
  EXPECT_EQ(std::filesystem::directory_iterator(sub)->path().filename(), "ck.txt");
}
