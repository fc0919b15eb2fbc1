// The model configuration of spec §3: parsed from JSON with strict validation
// (unknown, missing, mistyped or inconsistent keys are errors that name the key),
// written back by to_json() for checkpoints, and the named presets.
// docs/models.md lists the rules.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace echo {

struct MambaConfig {
  int64_t d_state = 64;   // N
  int64_t expand = 2;
  int64_t headdim = 64;   // P
  int64_t ngroups = 1;    // G
  int64_t d_conv = 4;     // W
  int64_t chunk_size = 64;

  int64_t d_inner(int64_t d_model) const { return expand * d_model; }
  int64_t nheads(int64_t d_model) const { return d_inner(d_model) / headdim; }
  int64_t conv_dim(int64_t d_model) const { return d_inner(d_model) + 2 * ngroups * d_state; }
  // in_proj output width: z | xBC | dt_raw.
  int64_t in_proj_dim(int64_t d_model) const {
    return d_inner(d_model) + conv_dim(d_model) + nheads(d_model);
  }
};

struct SkaConfig {
  int64_t heads = 7;        // H_s
  int64_t rank = 56;        // r
  int64_t head_dim_v = 64;  // P_s
  int64_t chunk_size = 64;
  double ridge = 1e-3;
  int64_t power_steps = 2;  // K
  int64_t power_iters = 6;
  bool write_gate = false;
  std::string mode = "chunk";    // chunk | prefix
  std::string filter = "power";  // power | poly
};

struct AttnConfig {
  int64_t heads = 7;
  int64_t head_dim = 64;
  double rope_base = 10000.0;
};

struct ModelConfig {
  int64_t vocab_size = 0;
  int64_t d_model = 0;
  int64_t n_layers = 0;
  std::string layer_pattern;  // one of M, S, A per layer
  std::string mlp = "koopman";  // koopman | swiglu | none
  int64_t d_ff = 0;             // swiglu hidden width (ignored otherwise)
  double norm_eps = 1e-5;
  // A sub-object is required when the pattern uses its letter; when present but
  // unused it is still validated and kept (so a pattern can be edited alone).
  std::optional<MambaConfig> mamba;
  std::optional<SkaConfig> ska;
  std::optional<AttnConfig> attn;

  // Koopman MLP width d_k = ⌈8d/3/64⌉·64.
  int64_t koopman_dk() const { return (8 * d_model + 3 * 64 - 1) / (3 * 64) * 64; }
  bool has_letter(char c) const { return layer_pattern.find(c) != std::string::npos; }

  nlohmann::json to_json() const;
};

// Strict parsing; throws std::runtime_error("config: <key>: <problem>").
ModelConfig parse_config(const nlohmann::json& j);
ModelConfig parse_config_text(const std::string& json_text);
ModelConfig load_config_file(const std::string& path);
// Re-checks a config built in code (parse_config calls it too). It also
// refuses a model of more than kMaxParameters parameters, which keeps every size
// derived from the config (d_inner, H·r, ...) far from int64 overflow.
void validate_config(const ModelConfig& c);

// The number of parameters the model of `c` has (spec §2.6), computed from the
// config alone, without building it; throws "config: ...: model too large" past
// kMaxParameters. Checkpoint loading compares it with the file before allocating.
constexpr int64_t kMaxParameters = int64_t(1) << 40;
int64_t parameter_count(const ModelConfig& c);

// Named presets (embedded in the binary; the same text as configs/<name>.json).
ModelConfig preset(const std::string& name);
std::vector<std::string> preset_names();
const std::string& preset_json_text(const std::string& name);
// A preset name or a path to a JSON file (a name containing '/' or ending in
// ".json" is read as a file).
ModelConfig preset_or_file(const std::string& name_or_path);

}  // namespace echo
