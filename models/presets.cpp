// The named presets of spec §3, embedded so that echo-lm finds them from any
// working directory. Each text is a verbatim copy of configs/<name>.json
// (tests/models/test_config.cpp fails when the two drift apart).
#include <map>
#include <stdexcept>

#include "models/config.h"

namespace echo {
namespace {

const std::vector<std::pair<std::string, std::string>>& preset_table() {
  static const std::vector<std::pair<std::string, std::string>> table = {
      {"echo-50m", R"json({"vocab_size": 32000, "d_model": 448, "n_layers": 16,
 "layer_pattern": "MMMSMMMSMMMSMMMM", "mlp": "koopman", "d_ff": 0,
 "norm_eps": 1e-5,
 "mamba": {"d_state": 64, "expand": 2, "headdim": 64, "ngroups": 1,
           "d_conv": 4, "chunk_size": 64},
 "ska": {"heads": 7, "rank": 56, "head_dim_v": 64, "chunk_size": 64,
         "ridge": 1e-3, "power_steps": 2, "power_iters": 6,
         "write_gate": false, "mode": "chunk", "filter": "power"},
 "attn": {"heads": 7, "head_dim": 64, "rope_base": 10000.0}}
)json"},
      {"mamba2-50m", R"json({"vocab_size": 32000, "d_model": 448, "n_layers": 16,
 "layer_pattern": "MMMMMMMMMMMMMMMM", "mlp": "koopman", "d_ff": 0,
 "norm_eps": 1e-5,
 "mamba": {"d_state": 64, "expand": 2, "headdim": 64, "ngroups": 1,
           "d_conv": 4, "chunk_size": 64}}
)json"},
      {"hybrid-attn-50m", R"json({"vocab_size": 32000, "d_model": 448, "n_layers": 16,
 "layer_pattern": "MMMAMMMAMMMAMMMM", "mlp": "koopman", "d_ff": 0,
 "norm_eps": 1e-5,
 "mamba": {"d_state": 64, "expand": 2, "headdim": 64, "ngroups": 1,
           "d_conv": 4, "chunk_size": 64},
 "attn": {"heads": 7, "head_dim": 64, "rope_base": 10000.0}}
)json"},
      {"ssm-1m", R"json({"vocab_size": 128, "d_model": 128, "n_layers": 4,
 "layer_pattern": "MMMM", "mlp": "swiglu", "d_ff": 256,
 "norm_eps": 1e-5,
 "mamba": {"d_state": 16, "expand": 2, "headdim": 32, "ngroups": 1,
           "d_conv": 4, "chunk_size": 64}}
)json"},
      {"attn-1m", R"json({"vocab_size": 128, "d_model": 128, "n_layers": 4,
 "layer_pattern": "MMAA", "mlp": "swiglu", "d_ff": 256,
 "norm_eps": 1e-5,
 "mamba": {"d_state": 16, "expand": 2, "headdim": 32, "ngroups": 1,
           "d_conv": 4, "chunk_size": 64},
 "attn": {"heads": 4, "head_dim": 32, "rope_base": 10000.0}}
)json"},
      {"ska-1m", R"json({"vocab_size": 128, "d_model": 128, "n_layers": 4,
 "layer_pattern": "MMSS", "mlp": "swiglu", "d_ff": 256,
 "norm_eps": 1e-5,
 "mamba": {"d_state": 16, "expand": 2, "headdim": 32, "ngroups": 1,
           "d_conv": 4, "chunk_size": 64},
 "ska": {"heads": 4, "rank": 24, "head_dim_v": 32, "chunk_size": 64,
         "ridge": 1e-3, "power_steps": 2, "power_iters": 6,
         "write_gate": false, "mode": "chunk", "filter": "poly"}}
)json"},
  };
  return table;
}

}  // namespace

std::vector<std::string> preset_names() {
  std::vector<std::string> names;
  for (const auto& p : preset_table()) names.push_back(p.first);
  return names;
}

const std::string& preset_json_text(const std::string& name) {
  for (const auto& p : preset_table())
    if (p.first == name) return p.second;
  std::string known;
  for (const auto& p : preset_table()) known += (known.empty() ? "" : ", ") + p.first;
  throw std::runtime_error("config: unknown preset \"" + name + "\" (known: " + known + ")");
}

ModelConfig preset(const std::string& name) {
  try {
    return parse_config_text(preset_json_text(name));
  } catch (const std::runtime_error& e) {
    if (std::string(e.what()).rfind("config: unknown preset", 0) == 0) throw;
    throw std::runtime_error(std::string(e.what()) + " (in preset " + name + ")");
  }
}

}  // namespace echo
