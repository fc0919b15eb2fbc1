// Guards against inputs that would make a reader allocate what a file merely
// declares: HDF5 shapes without data behind them, checkpoint configs far larger
// than the stored parameters, configs whose sizes overflow.
#include <hdf5.h>

#include "models/config.h"
#include "models/lm.h"
#include "ops/runner.h"
#include "reliability/reliability_util.h"
#include "test_util.h"
#include "train/checkpoint.h"
#include "train/h5io.h"
#include "train/train_util.h"

using namespace echo;
using namespace echo::testing;

namespace {
// A file with one float dataset of the given shape whose data is never written
// (HDF5 allocates contiguous storage late: nothing is stored).
void write_declared_only(const std::string& path, const std::vector<hsize_t>& dims) {
  hid_t f = H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
  hid_t space = H5Screate_simple((int)dims.size(), dims.data(), nullptr);
  hid_t ds = H5Dcreate2(f, "x", H5T_IEEE_F32LE, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
  ASSERT_GE(ds, 0);
  H5Dclose(ds);
  H5Sclose(space);
  H5Fclose(f);
}
}  // namespace

// The count from the config alone equals the built model's, for every preset and
// for small configs that switch on each optional parameter.
TEST(InputGuards, ParameterCountMatchesTheBuiltModel) {
  std::vector<ModelConfig> configs;
  for (const auto& name : preset_names())
    if (preset(name).d_model <= 256) configs.push_back(preset(name));  // the 50m presets too slow under ASan
  for (const std::string mlp : {"koopman", "swiglu", "none"})
    for (bool gate : {false, true})
      for (const std::string filter : {"power", "poly"}) {
        nlohmann::json j = tiny_model_config("MSA").to_json();
        j["mlp"] = mlp;
        j["ska"]["write_gate"] = gate;
        j["ska"]["filter"] = filter;
        j["ska"]["power_steps"] = 3;
        configs.push_back(parse_config(j));
      }
  nlohmann::json unused = tiny_model_config("S").to_json();  // a mamba section with no M layer
  configs.push_back(parse_config(unused));
  for (const auto& c : configs) {
    auto model = make_model(c, 1);
    EXPECT_EQ(parameter_count(c), model->num_params()) << c.to_json().dump();
  }
  for (const auto& name : preset_names())  // the large ones by their documented totals
    EXPECT_GT(parameter_count(preset(name)), 0) << name;
}

TEST(InputGuards, OverflowingConfigsAreRefused) {
  nlohmann::json base = tiny_model_config("MSA").to_json();
  auto refused = [&](const std::function<void(nlohmann::json&)>& edit, const std::string& key) {
    nlohmann::json j = base;
    edit(j);
    std::string e = error_of([&] { parse_config(j); });
    EXPECT_TRUE(has(e, key)) << j.dump() << "\n" << e;
  };
  refused([](auto& j) { j["d_model"] = int64_t(1) << 62; }, "too large");
  refused([](auto& j) { j["vocab_size"] = int64_t(1) << 40; }, "too large");
  refused([](auto& j) { j["mamba"]["expand"] = int64_t(1) << 62; }, "mamba");
  refused([](auto& j) { j["mamba"]["d_state"] = INT64_MAX; }, "mamba");
  refused([](auto& j) { j["ska"]["heads"] = int64_t(1) << 61; }, "ska");
  refused([](auto& j) { j["ska"]["power_steps"] = INT64_MAX; }, "ska.power_steps");
  refused([](auto& j) { j["attn"]["head_dim"] = int64_t(1) << 62; }, "attn");
  refused([](auto& j) { j["mlp"] = "swiglu"; j["d_ff"] = INT64_MAX; }, "d_ff");
  refused([](auto& j) { j["n_layers"] = 3000000; j["layer_pattern"] = std::string(3000000, 'A'); j["d_model"] = 400000; }, "too large");
}

TEST(InputGuards, DatasetShapesWithoutDataAreNotAllocated) {
  TempDir d;
  write_declared_only(d.file("huge.h5"), {1u << 20, 1u << 20});  // 4 TiB declared, a few KB on disk
  h5::File f = h5::File::open(d.file("huge.h5"));
  EXPECT_EQ(f.dataset_shape("x"), (Shape{1 << 20, 1 << 20}));  // the shape itself is fine to report
  std::string e = error_of([&] { f.read("x"); });
  EXPECT_TRUE(has(e, "huge.h5") && has(e, "'x'") && has(e, "declares")) << e;

  write_declared_only(d.file("small.h5"), {3, 4});  // small, but never written either
  e = error_of([&] { h5::File::open(d.file("small.h5")).read("x"); });
  EXPECT_TRUE(has(e, "never written")) << e;

  write_declared_only(d.file("absurd.h5"), {hsize_t(1) << 62, 1 << 10});
  e = error_of([&] { h5::File::open(d.file("absurd.h5")).read("x"); });
  EXPECT_TRUE(has(e, "impossible shape")) << e;
  e = error_of([&] { h5::File::open(d.file("absurd.h5")).dataset_shape("x"); });
  EXPECT_TRUE(has(e, "impossible shape")) << e;
}

// A checkpoint whose stored config asks for a model far larger than its /model
// group: refused before the model is built (which would allocate it).
TEST(InputGuards, CheckpointConfigMuchLargerThanItsParametersIsRefused) {
  TempDir d;
  auto model = make_model(tiny_model_config(), 1);
  save_checkpoint(d.file("ck.h5"), *model, nullptr, nullptr, nullptr);
  nlohmann::json big = model->config().to_json();
  big["vocab_size"] = int64_t(1) << 30;  // 2^35 embedding values: 128 GiB if built
  {
    h5::File f = h5::File::open_rw(d.file("ck.h5"));
    f.set_attr("/", "config", big.dump());
    f.close();
  }
  std::string e = error_of([&] { load_model(d.file("ck.h5")); });
  EXPECT_TRUE(has(e, "ck.h5") && has(e, "parameters but /model holds")) << e;
}

// Runner attributes are doubles from a file: out-of-range ones are refused
// (casting them was undefined: found by fuzzing the op runner), and a chunk
// longer than the sequence behaves as the sequence, without a workspace sized by
// the chunk.
TEST(InputGuards, RunnerOpsRefuseAbsurdAttributesAndClampChunks) {
  for (const char* name : {"ssd_scan", "koopman_fit"}) {
    SCOPED_TRACE(name);
    const RunnerOp* op = find_runner_op(name);
    ASSERT_NE(op, nullptr);
    Rng rng(3);
    OpAttrs attrs;
    NamedTensors in = op->example(rng, attrs);
    for (double bad : {1e300, -1e300, 0.5, double(NAN)}) {
      OpAttrs a = attrs;
      a["chunk_size"] = bad;
      std::string e = error_of([&] { op->forward(in, a); });
      EXPECT_TRUE(has(e, "chunk_size")) << bad << ": " << e;
    }
    const int64_t T = in.at(std::string(name) == "ssd_scan" ? "x" : "k").size(1);
    OpAttrs whole = attrs, huge = attrs;
    whole["chunk_size"] = double(T);
    huge["chunk_size"] = 2e9;  // a 4·10^18-element Q×Q workspace, were it not clamped
    NamedTensors y1 = op->forward(in, whole), y2 = op->forward(in, huge);
    for (const auto& [out, t] : y1) EXPECT_EQ(t.to_vector(), y2.at(out).to_vector()) << out;
  }
}

// The same when /model declares shapes large enough for the config but the file
// holds no data for them: the count is bounded by the file's bytes.
TEST(InputGuards, CheckpointWithDeclaredOnlyParametersIsRefusedBeforeBuilding) {
  TempDir d;
  auto model = make_model(tiny_model_config(), 1);
  save_checkpoint(d.file("ck.h5"), *model, nullptr, nullptr, nullptr);
  nlohmann::json big = model->config().to_json();
  big["vocab_size"] = int64_t(1) << 30;
  {
    h5::File f = h5::File::open_rw(d.file("ck.h5"));
    f.set_attr("/", "config", big.dump());
    f.close();
  }
  // A declared-only dataset of 2^36 values under /model (no storage is written).
  hid_t f = H5Fopen(d.file("ck.h5").c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
  const hsize_t dims[1] = {hsize_t(1) << 36};
  hid_t space = H5Screate_simple(1, dims, nullptr);
  hid_t ds = H5Dcreate2(f, "/model/padding", H5T_IEEE_F32LE, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
  ASSERT_GE(ds, 0);
  H5Dclose(ds);
  H5Sclose(space);
  H5Fclose(f);
  std::string e = error_of([&] { load_model(d.file("ck.h5")); });
  EXPECT_TRUE(has(e, "ck.h5") && has(e, "parameters but /model holds")) << e;
}
