// Config parsing (spec §3): presets, round trip, and errors that name the key.
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include "models/config.h"
#include "models/params.h"
#include "test_util.h"

namespace echo {
namespace {

std::string source_dir() {
  if (const char* s = std::getenv("ECHO_SOURCE_DIR")) return s;
  std::string f = __FILE__;  // <src>/tests/models/test_model_config.cpp
  return f.substr(0, f.rfind("/tests/"));
}

nlohmann::json base_json() { return nlohmann::json::parse(preset_json_text("echo-50m")); }

// Parsing j must throw an error whose message starts with `prefix`.
void expect_error(const nlohmann::json& j, const std::string& prefix) {
  try {
    parse_config(j);
    ADD_FAILURE() << "no error; expected: " << prefix << "\nconfig: " << j.dump();
  } catch (const std::runtime_error& e) {
    EXPECT_EQ(std::string(e.what()).rfind(prefix, 0), 0u) << "got:      " << e.what() << "\nexpected: " << prefix;
  }
}

TEST(ModelConfig, SpecExampleParses) {
  ModelConfig c = preset("echo-50m");
  EXPECT_EQ(c.vocab_size, 32000);
  EXPECT_EQ(c.d_model, 448);
  EXPECT_EQ(c.n_layers, 16);
  EXPECT_EQ(c.layer_pattern, "MMMSMMMSMMMSMMMM");
  EXPECT_EQ(c.mlp, "koopman");
  ASSERT_TRUE(c.mamba && c.ska && c.attn);
  EXPECT_EQ(c.mamba->d_inner(448), 896);
  EXPECT_EQ(c.mamba->nheads(448), 14);
  EXPECT_EQ(c.mamba->conv_dim(448), 896 + 128);
  EXPECT_EQ(c.ska->rank, 56);
  EXPECT_DOUBLE_EQ(c.ska->ridge, 1e-3);
  EXPECT_EQ(c.ska->mode, "chunk");
  EXPECT_EQ(c.ska->filter, "power");
  EXPECT_DOUBLE_EQ(c.attn->rope_base, 10000.0);
  EXPECT_EQ(c.koopman_dk(), 1216);  // ⌈8·448/3/64⌉·64 = 19·64
}

TEST(ModelConfig, EveryPresetParsesAndMatchesItsFile) {
  const std::vector<std::string> required = {"echo-50m", "mamba2-50m", "hybrid-attn-50m",
                                             "ssm-1m",   "attn-1m",    "ska-1m"};
  auto names = preset_names();
  for (const auto& r : required)
    EXPECT_NE(std::find(names.begin(), names.end(), r), names.end()) << "missing preset " << r;
  for (const auto& n : names) {
    SCOPED_TRACE(n);
    ModelConfig c = preset(n);
    std::ifstream in(source_dir() + "/configs/" + n + ".json");
    ASSERT_TRUE(in.good()) << "configs/" << n << ".json not found under " << source_dir();
    std::stringstream ss;
    ss << in.rdbuf();
    EXPECT_EQ(ss.str(), preset_json_text(n)) << "embedded preset differs from configs/" << n << ".json";
    EXPECT_EQ(load_config_file(source_dir() + "/configs/" + n + ".json").to_json(), c.to_json());
  }
  ModelConfig m = preset("mamba2-50m");
  EXPECT_EQ(m.layer_pattern, std::string(16, 'M'));
  ModelConfig h = preset("hybrid-attn-50m");
  EXPECT_EQ(h.layer_pattern, "MMMAMMMAMMMAMMMM");  // echo-50m's S layers are A
  for (const char* small : {"ssm-1m", "attn-1m", "ska-1m"}) {
    ModelConfig s = preset(small);
    EXPECT_EQ(s.d_model, 128);
    EXPECT_EQ(s.n_layers, 4);
    EXPECT_EQ(s.vocab_size, 128);
    EXPECT_EQ(s.mlp, "swiglu");
    EXPECT_EQ(s.mamba->d_state, 16);
  }
  EXPECT_EQ(preset("ssm-1m").layer_pattern, "MMMM");
  EXPECT_EQ(preset("attn-1m").layer_pattern, "MMAA");
  EXPECT_EQ(preset("ska-1m").layer_pattern, "MMSS");
  EXPECT_EQ(preset("ska-1m").ska->rank, 24);
}

TEST(ModelConfig, UnknownPresetListsTheKnownOnes) {
  try {
    preset("echo-5m");
    ADD_FAILURE() << "no error";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("unknown preset \"echo-5m\""), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("ska-1m"), std::string::npos) << e.what();
  }
}

TEST(ModelConfig, RoundTripThroughJson) {
  for (const auto& n : preset_names()) {
    ModelConfig c = preset(n);
    ModelConfig back = parse_config(nlohmann::json::parse(c.to_json().dump()));
    EXPECT_EQ(back.to_json(), c.to_json()) << n;
  }
}

TEST(ModelConfig, PresetOrFileReadsAFile) {
  std::string path = ::testing::TempDir() + "/echo_model_config_test.json";
  nlohmann::json j = base_json();
  j["d_model"] = 64;
  j["mamba"]["headdim"] = 32;
  j["ska"]["heads"] = 2;
  j["ska"]["rank"] = 16;
  {
    std::ofstream out(path);
    out << j.dump(2);
  }
  ModelConfig c = preset_or_file(path);
  EXPECT_EQ(c.d_model, 64);
  EXPECT_EQ(c.mamba->headdim, 32);
  std::remove(path.c_str());
  EXPECT_THROW(preset_or_file("/nonexistent/dir/x.json"), std::runtime_error);
}

TEST(ModelConfig, UnknownKeysAreNamed) {
  auto j = base_json();
  j["dropout"] = 0.1;
  expect_error(j, "config: dropout: unknown key");
  j = base_json();
  j["mamba"]["dstate"] = 64;  // a typo is reported as unknown, not as "d_state missing"
  expect_error(j, "config: mamba.dstate: unknown key");
  j = base_json();
  j["ska"]["temperature"] = 1.0;
  expect_error(j, "config: ska.temperature: unknown key");
  j = base_json();
  j["attn"]["rope"] = 1.0;
  expect_error(j, "config: attn.rope: unknown key");
}

TEST(ModelConfig, MissingKeysAreNamed) {
  for (const char* key : {"vocab_size", "d_model", "n_layers", "layer_pattern", "mlp", "d_ff", "norm_eps"}) {
    auto j = base_json();
    j.erase(key);
    expect_error(j, std::string("config: ") + key + ": missing");
  }
  auto j = base_json();
  j["ska"].erase("ridge");
  expect_error(j, "config: ska.ridge: missing");
  j = base_json();
  j["mamba"].erase("d_conv");
  expect_error(j, "config: mamba.d_conv: missing");
  j = base_json();
  j["attn"].erase("rope_base");
  expect_error(j, "config: attn.rope_base: missing");
  // A section is required only when the pattern uses its letter.
  j = base_json();
  j.erase("ska");
  expect_error(j, "config: ska: missing (layer_pattern has S layers)");
  j = base_json();
  j.erase("mamba");
  expect_error(j, "config: mamba: missing");
  j = base_json();
  j.erase("attn");  // echo-50m has no A layer: fine
  EXPECT_NO_THROW(parse_config(j));
  j["layer_pattern"] = "MMMSMMMSMMMSMMMA";
  expect_error(j, "config: attn: missing (layer_pattern has A layers)");
}

TEST(ModelConfig, WrongTypesAreNamed) {
  auto j = base_json();
  j["n_layers"] = "16";
  expect_error(j, "config: n_layers: expected an integer, got a string");
  j = base_json();
  j["d_model"] = 448.5;
  expect_error(j, "config: d_model: expected an integer, got a number");
  j = base_json();
  j["norm_eps"] = "1e-5";
  expect_error(j, "config: norm_eps: expected a number");
  j = base_json();
  j["ska"]["write_gate"] = 0;
  expect_error(j, "config: ska.write_gate: expected true or false");
  j = base_json();
  j["ska"]["mode"] = 1;
  expect_error(j, "config: ska.mode: expected a string");
  j = base_json();
  j["mamba"] = 3;
  expect_error(j, "config: mamba: expected a JSON object");
  expect_error(nlohmann::json::array(), "config: (root): expected a JSON object");
  EXPECT_THROW(parse_config_text("{\"vocab_size\": "), std::runtime_error);
}

TEST(ModelConfig, InconsistentSizesAreNamed) {
  auto j = base_json();
  j["d_model"] = 128;
  j["mamba"]["headdim"] = 48;
  expect_error(j, "config: mamba.headdim: d_inner=256 is not a multiple of headdim=48");
  j = base_json();
  j["mamba"]["ngroups"] = 4;  // 14 heads
  expect_error(j, "config: mamba.ngroups: nheads=14 (d_inner/headdim) is not a multiple of ngroups=4");
  j = base_json();
  j["n_layers"] = 12;
  expect_error(j, "config: layer_pattern: has 16 letters but n_layers=12");
  j = base_json();
  j["layer_pattern"] = "MMMSMMMSMMMSMMMX";
  expect_error(j, "config: layer_pattern: letter 'X' at position 15");
  j = base_json();
  j["layer_pattern"] = "mmmsmmmsmmmsmmmm";
  expect_error(j, "config: layer_pattern: letter 'm' at position 0");
  j = base_json();
  j["mlp"] = "gelu";
  expect_error(j, "config: mlp: \"gelu\" is not one of koopman, swiglu, none");
  j = base_json();
  j["mlp"] = "swiglu";
  expect_error(j, "config: d_ff: mlp=swiglu needs d_ff >= 1, got 0");
  j = base_json();
  j["ska"]["mode"] = "causal";
  expect_error(j, "config: ska.mode: \"causal\" is not one of chunk, prefix");
  j = base_json();
  j["ska"]["filter"] = "cheb";
  expect_error(j, "config: ska.filter: \"cheb\" is not one of power, poly");
  j = base_json();
  j["ska"]["ridge"] = 0.0;
  expect_error(j, "config: ska.ridge: must be a finite number > 0");
  j = base_json();
  j["ska"]["power_steps"] = -1;
  expect_error(j, "config: ska.power_steps: must be >= 0, got -1");
  j = base_json();
  j["attn"]["head_dim"] = 63;
  expect_error(j, "config: attn.head_dim: rotary embedding pairs");
  j = base_json();
  j["vocab_size"] = 0;
  expect_error(j, "config: vocab_size: must be >= 1, got 0");
  j = base_json();
  j["mamba"]["chunk_size"] = 0;
  expect_error(j, "config: mamba.chunk_size: must be >= 1, got 0");
  j = base_json();
  j["norm_eps"] = -1e-5;
  expect_error(j, "config: norm_eps: must be a finite number > 0");
  // An unused section is still validated.
  j = preset("mamba2-50m").to_json();
  j["attn"] = {{"heads", 0}, {"head_dim", 64}, {"rope_base", 10000.0}};
  expect_error(j, "config: attn.heads: must be >= 1, got 0");
}

TEST(ModelConfig, ValidateCatchesCodeBuiltConfigs) {
  ModelConfig c = preset("ska-1m");
  c.ska->heads = 0;
  EXPECT_THROW(validate_config(c), std::runtime_error);
}

TEST(Params, WeightDecayClassification) {
  for (const char* name : {"embedding.weight", "norm_f.weight", "layers.0.norm1.weight", "layers.0.norm2.weight",
                           "layers.0.mixer.norm.weight", "layers.0.mixer.A_log", "layers.0.mixer.D",
                           "layers.0.mixer.dt_bias", "layers.0.mixer.conv1d.bias", "layers.1.mixer.gamma_raw",
                           "layers.1.mixer.eta", "layers.1.mixer.filter_coef", "layers.1.mixer.w_beta.bias",
                           "layers.1.mlp.rot_gamma", "layers.1.mlp.rot_omega"})
    EXPECT_TRUE(no_weight_decay(name)) << name;
  for (const char* name : {"layers.0.mixer.in_proj.weight", "layers.0.mixer.conv1d.weight",
                           "layers.0.mixer.out_proj.weight", "layers.1.mixer.w_k.weight", "layers.1.mixer.w_q.weight",
                           "layers.1.mixer.w_v.weight", "layers.1.mixer.w_o.weight", "layers.1.mixer.w_beta.weight",
                           "layers.2.mixer.qkv.weight", "layers.1.mlp.lift.weight", "layers.1.mlp.read.weight",
                           "layers.1.mlp.gate.weight", "layers.1.mlp.up.weight", "layers.1.mlp.down.weight"})
    EXPECT_FALSE(no_weight_decay(name)) << name;
  EXPECT_EQ(hdf5_param_path("layers.3.mixer.A_log"), "/model/layers/3/mixer/A_log");
}

}  // namespace
}  // namespace echo
