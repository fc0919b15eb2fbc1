#include "models/config.h"

#include <climits>
#include <cmath>
#include <fstream>
#include <set>
#include <sstream>
#include <stdexcept>

namespace echo {
namespace {

[[noreturn]] void config_error(const std::string& key, const std::string& msg) {
  throw std::runtime_error("config: " + key + ": " + msg);
}

std::string json_kind(const nlohmann::json& v) {
  if (v.is_null()) return "null";
  if (v.is_boolean()) return "a boolean";
  if (v.is_number_integer()) return "an integer";
  if (v.is_number()) return "a number";
  if (v.is_string()) return "a string";
  if (v.is_array()) return "an array";
  return "an object";
}

// Reads one JSON object strictly: every key must be known (checked first, so a
// misspelt key is reported as unknown rather than as the key it was meant to be)
// and every key read must be present with the right type.
class ObjectReader {
 public:
  ObjectReader(const nlohmann::json& j, std::string path, std::set<std::string> known)
      : j_(j), path_(std::move(path)) {
    if (!j.is_object())
      config_error(path_.empty() ? "(root)" : path_, "expected a JSON object, got " + json_kind(j));
    for (auto it = j.begin(); it != j.end(); ++it)
      if (!known.count(it.key())) config_error(key(it.key()), "unknown key");
  }
  std::string key(const std::string& k) const { return path_.empty() ? k : path_ + "." + k; }
  bool has(const std::string& k) const { return j_.contains(k); }
  const nlohmann::json& need(const std::string& k) const {
    if (!j_.contains(k)) config_error(key(k), "missing");
    return j_.at(k);
  }
  int64_t integer(const std::string& k) const {
    const auto& v = need(k);
    if (!v.is_number_integer())
      config_error(key(k), "expected an integer, got " + json_kind(v) + " " + v.dump());
    if (v.is_number_unsigned() && v.get<uint64_t>() > static_cast<uint64_t>(INT64_MAX))
      config_error(key(k), "integer out of range: " + v.dump());
    return v.get<int64_t>();
  }
  double number(const std::string& k) const {
    const auto& v = need(k);
    if (!v.is_number()) config_error(key(k), "expected a number, got " + json_kind(v) + " " + v.dump());
    return v.get<double>();
  }
  bool boolean(const std::string& k) const {
    const auto& v = need(k);
    if (!v.is_boolean()) config_error(key(k), "expected true or false, got " + json_kind(v) + " " + v.dump());
    return v.get<bool>();
  }
  std::string string(const std::string& k) const {
    const auto& v = need(k);
    if (!v.is_string()) config_error(key(k), "expected a string, got " + json_kind(v) + " " + v.dump());
    return v.get<std::string>();
  }
  const nlohmann::json& object(const std::string& k) const { return need(k); }

 private:
  const nlohmann::json& j_;
  std::string path_;
};

void require_min(const std::string& key, int64_t value, int64_t lo) {
  if (value < lo) config_error(key, "must be >= " + std::to_string(lo) + ", got " + std::to_string(value));
}
void require_max(const std::string& key, int64_t value, int64_t hi) {
  if (value > hi) config_error(key, "must be <= " + std::to_string(hi) + ", got " + std::to_string(value));
}
void require_positive(const std::string& key, double value) {
  if (!(value > 0) || !std::isfinite(value)) {
    std::ostringstream o;
    o << "must be a finite number > 0, got " << value;
    config_error(key, o.str());
  }
}

MambaConfig parse_mamba(const nlohmann::json& j) {
  ObjectReader r(j, "mamba", {"d_state", "expand", "headdim", "ngroups", "d_conv", "chunk_size"});
  MambaConfig m;
  m.d_state = r.integer("d_state");
  m.expand = r.integer("expand");
  m.headdim = r.integer("headdim");
  m.ngroups = r.integer("ngroups");
  m.d_conv = r.integer("d_conv");
  m.chunk_size = r.integer("chunk_size");
  return m;
}

SkaConfig parse_ska(const nlohmann::json& j) {
  ObjectReader r(j, "ska", {"heads", "rank", "head_dim_v", "chunk_size", "ridge", "power_steps",
                            "power_iters", "write_gate", "mode", "filter"});
  SkaConfig s;
  s.heads = r.integer("heads");
  s.rank = r.integer("rank");
  s.head_dim_v = r.integer("head_dim_v");
  s.chunk_size = r.integer("chunk_size");
  s.ridge = r.number("ridge");
  s.power_steps = r.integer("power_steps");
  s.power_iters = r.integer("power_iters");
  s.write_gate = r.boolean("write_gate");
  s.mode = r.string("mode");
  s.filter = r.string("filter");
  return s;
}

AttnConfig parse_attn(const nlohmann::json& j) {
  ObjectReader r(j, "attn", {"heads", "head_dim", "rope_base"});
  AttnConfig a;
  a.heads = r.integer("heads");
  a.head_dim = r.integer("head_dim");
  a.rope_base = r.number("rope_base");
  return a;
}

// a·b and a+b for non-negative sizes, refusing results past kMaxParameters.
struct SizeMath {
  std::string key;  // the config key named when the limit is hit
  int64_t mul(int64_t a, int64_t b) const {
    if (a < 0 || b < 0 || (a > 0 && b > kMaxParameters / a)) too_large();
    return a * b;
  }
  int64_t add(int64_t a, int64_t b) const {
    if (a > kMaxParameters - b) too_large();
    return a + b;
  }
  [[noreturn]] void too_large() const {
    config_error(key, "model too large (more than 2^40 parameters, or a size that overflows)");
  }
};

}  // namespace

int64_t parameter_count(const ModelConfig& c) {
  SizeMath m{"d_model"};
  const int64_t d = c.d_model;
  int64_t total = m.add(m.mul(c.vocab_size, d), d);  // embedding, norm_f
  int64_t per_kind[3] = {0, 0, 0};                   // mixer + norms + MLP of an M, S, A layer
  int64_t mlp = 0;
  if (c.mlp == "koopman") {
    m.key = "d_model";
    const int64_t dk = m.mul(m.add(m.mul(8, d), 3 * 64 - 1) / (3 * 64), 64);
    mlp = m.add(m.mul(2, m.mul(dk, d)), dk);  // lift, read; rot_gamma and rot_omega dk/2 each
  } else if (c.mlp == "swiglu") {
    m.key = "d_ff";
    mlp = m.mul(3, m.mul(c.d_ff, d));  // gate, up, down
  }
  const int64_t norms_and_mlp = c.mlp == "none" ? d : m.add(m.mul(2, d), mlp);
  if (c.mamba && c.has_letter('M')) {
    const MambaConfig& mb = *c.mamba;
    m.key = "mamba";
    const int64_t d_inner = m.mul(mb.expand, d), heads = d_inner / std::max<int64_t>(mb.headdim, 1);
    const int64_t conv_dim = m.add(d_inner, m.mul(2, m.mul(mb.ngroups, mb.d_state)));
    const int64_t in_proj_dim = m.add(m.add(d_inner, conv_dim), heads);
    int64_t n = m.mul(in_proj_dim, d);               // in_proj
    n = m.add(n, m.mul(conv_dim, m.add(mb.d_conv, 1)));  // conv1d weight [conv_dim, W] and bias
    n = m.add(n, m.add(m.mul(3, heads), d_inner));   // dt_bias, A_log, D; norm
    n = m.add(n, m.mul(d, d_inner));                 // out_proj
    per_kind[0] = n;
  }
  if (c.ska && c.has_letter('S')) {
    const SkaConfig& s = *c.ska;
    m.key = "ska";
    const int64_t hr = m.mul(s.heads, s.rank), hp = m.mul(s.heads, s.head_dim_v);
    int64_t n = m.add(m.mul(m.mul(2, hr), d), m.mul(m.mul(2, hp), d));  // w_k, w_q; w_v, w_o
    n = m.add(n, 2);                                                  // gamma_raw, eta
    if (s.write_gate) n = m.add(n, m.mul(s.heads, m.add(d, 1)));       // w_beta weight and bias
    if (s.filter == "poly") n = m.add(n, m.mul(s.heads, m.add(s.power_steps, 1)));  // filter_coef
    per_kind[1] = n;
  }
  if (c.attn && c.has_letter('A')) {
    m.key = "attn";
    const int64_t width = m.mul(c.attn->heads, c.attn->head_dim);
    per_kind[2] = m.add(m.mul(m.mul(3, width), d), m.mul(d, width));  // qkv, out_proj
  }
  m.key = "n_layers";
  for (char letter : c.layer_pattern) {
    const int64_t mixer = letter == 'M' ? per_kind[0] : letter == 'S' ? per_kind[1] : per_kind[2];
    total = m.add(total, m.add(mixer, norms_and_mlp));
  }
  return total;
}

void validate_config(const ModelConfig& c) {
  require_min("vocab_size", c.vocab_size, 1);
  require_min("d_model", c.d_model, 1);
  require_min("n_layers", c.n_layers, 1);
  if (static_cast<int64_t>(c.layer_pattern.size()) != c.n_layers)
    config_error("layer_pattern", "has " + std::to_string(c.layer_pattern.size()) +
                                      " letters but n_layers=" + std::to_string(c.n_layers));
  for (size_t i = 0; i < c.layer_pattern.size(); ++i) {
    char ch = c.layer_pattern[i];
    if (ch != 'M' && ch != 'S' && ch != 'A')
      config_error("layer_pattern", std::string("letter '") + ch + "' at position " + std::to_string(i) +
                                        " is not one of M (Mamba-2), S (SKA), A (attention)");
  }
  if (c.mlp != "koopman" && c.mlp != "swiglu" && c.mlp != "none")
    config_error("mlp", "\"" + c.mlp + "\" is not one of koopman, swiglu, none");
  require_min("d_ff", c.d_ff, 0);
  if (c.mlp == "swiglu" && c.d_ff < 1)
    config_error("d_ff", "mlp=swiglu needs d_ff >= 1, got " + std::to_string(c.d_ff));
  require_positive("norm_eps", c.norm_eps);

  if (c.has_letter('M') && !c.mamba) config_error("mamba", "missing (layer_pattern has M layers)");
  if (c.has_letter('S') && !c.ska) config_error("ska", "missing (layer_pattern has S layers)");
  if (c.has_letter('A') && !c.attn) config_error("attn", "missing (layer_pattern has A layers)");

  if (c.mamba) {
    const MambaConfig& m = *c.mamba;
    require_min("mamba.d_state", m.d_state, 1);
    require_min("mamba.expand", m.expand, 1);
    require_min("mamba.headdim", m.headdim, 1);
    require_min("mamba.ngroups", m.ngroups, 1);
    require_min("mamba.d_conv", m.d_conv, 1);
    require_min("mamba.chunk_size", m.chunk_size, 1);
    const int64_t d_inner = SizeMath{"mamba.expand"}.mul(m.expand, c.d_model);  // checked m.d_inner()
    if (d_inner % m.headdim != 0)
      config_error("mamba.headdim", "d_inner=" + std::to_string(d_inner) + " is not a multiple of headdim=" +
                                        std::to_string(m.headdim));
    const int64_t nheads = d_inner / m.headdim;
    if (nheads % m.ngroups != 0)
      config_error("mamba.ngroups", "nheads=" + std::to_string(nheads) + " (d_inner/headdim) is not a multiple of ngroups=" +
                                        std::to_string(m.ngroups));
  }
  if (c.ska) {
    const SkaConfig& s = *c.ska;
    require_min("ska.heads", s.heads, 1);
    require_min("ska.rank", s.rank, 1);
    require_min("ska.head_dim_v", s.head_dim_v, 1);
    require_min("ska.chunk_size", s.chunk_size, 1);
    require_positive("ska.ridge", s.ridge);
    require_min("ska.power_steps", s.power_steps, 0);
    require_min("ska.power_iters", s.power_iters, 1);
    // The mixer passes both to koopman_fit as int (power_steps + 1 coefficients).
    require_max("ska.power_steps", s.power_steps, INT32_MAX - 1);
    require_max("ska.power_iters", s.power_iters, INT32_MAX);
    if (s.mode != "chunk" && s.mode != "prefix")
      config_error("ska.mode", "\"" + s.mode + "\" is not one of chunk, prefix");
    if (s.filter != "power" && s.filter != "poly")
      config_error("ska.filter", "\"" + s.filter + "\" is not one of power, poly");
  }
  if (c.attn) {
    const AttnConfig& a = *c.attn;
    require_min("attn.heads", a.heads, 1);
    require_min("attn.head_dim", a.head_dim, 2);
    if (a.head_dim % 2 != 0)
      config_error("attn.head_dim", "rotary embedding pairs (j, j+head_dim/2) need an even head_dim, got " +
                                        std::to_string(a.head_dim));
    require_positive("attn.rope_base", a.rope_base);
  }
  parameter_count(c);  // throws past kMaxParameters
}

ModelConfig parse_config(const nlohmann::json& j) {
  ObjectReader r(j, "", {"vocab_size", "d_model", "n_layers", "layer_pattern", "mlp", "d_ff", "norm_eps",
                         "mamba", "ska", "attn"});
  ModelConfig c;
  c.vocab_size = r.integer("vocab_size");
  c.d_model = r.integer("d_model");
  c.n_layers = r.integer("n_layers");
  c.layer_pattern = r.string("layer_pattern");
  c.mlp = r.string("mlp");
  c.d_ff = r.integer("d_ff");
  c.norm_eps = r.number("norm_eps");
  if (r.has("mamba")) c.mamba = parse_mamba(r.object("mamba"));
  if (r.has("ska")) c.ska = parse_ska(r.object("ska"));
  if (r.has("attn")) c.attn = parse_attn(r.object("attn"));
  validate_config(c);
  return c;
}

ModelConfig parse_config_text(const std::string& text) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const nlohmann::json::parse_error& e) {
    throw std::runtime_error(std::string("config: not valid JSON: ") + e.what());
  }
  return parse_config(j);
}

ModelConfig load_config_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error("config: cannot open " + path);
  std::stringstream ss;
  ss << in.rdbuf();
  try {
    return parse_config_text(ss.str());
  } catch (const std::runtime_error& e) {
    throw std::runtime_error(std::string(e.what()) + " (in " + path + ")");
  }
}

nlohmann::json ModelConfig::to_json() const {
  nlohmann::json j;
  j["vocab_size"] = vocab_size;
  j["d_model"] = d_model;
  j["n_layers"] = n_layers;
  j["layer_pattern"] = layer_pattern;
  j["mlp"] = mlp;
  j["d_ff"] = d_ff;
  j["norm_eps"] = norm_eps;
  if (mamba)
    j["mamba"] = {{"d_state", mamba->d_state}, {"expand", mamba->expand}, {"headdim", mamba->headdim},
                  {"ngroups", mamba->ngroups}, {"d_conv", mamba->d_conv}, {"chunk_size", mamba->chunk_size}};
  if (ska)
    j["ska"] = {{"heads", ska->heads},           {"rank", ska->rank},
                {"head_dim_v", ska->head_dim_v}, {"chunk_size", ska->chunk_size},
                {"ridge", ska->ridge},           {"power_steps", ska->power_steps},
                {"power_iters", ska->power_iters}, {"write_gate", ska->write_gate},
                {"mode", ska->mode},             {"filter", ska->filter}};
  if (attn) j["attn"] = {{"heads", attn->heads}, {"head_dim", attn->head_dim}, {"rope_base", attn->rope_base}};
  return j;
}

ModelConfig preset_or_file(const std::string& s) {
  const bool looks_like_file = s.find('/') != std::string::npos ||
                               (s.size() > 5 && s.compare(s.size() - 5, 5, ".json") == 0);
  if (looks_like_file) return load_config_file(s);
  return preset(s);
}

}  // namespace echo
