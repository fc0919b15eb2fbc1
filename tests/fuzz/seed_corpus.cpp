// Writes the binary seed corpora of the fuzz targets (the text ones are written
// by hand): small valid checkpoints and op-runner inputs. Built with the fuzz
// targets (scripts/fuzz.sh --seeds rewrites tests/fuzz/corpus/ with it).
//   fuzz_seed_corpus OUT_DIR      -> OUT_DIR/checkpoint/*, OUT_DIR/op_runner/*
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>

#include "models/lm.h"
#include "ops/runner.h"
#include "train/checkpoint.h"
#include "train/h5io.h"
#include "train/optimizer.h"

namespace fs = std::filesystem;
using namespace echo;

namespace {

std::string slurp(const std::string& p) {
  std::ifstream f(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
}

// The smallest models of each layer kind: the files stay a few KB, which keeps
// the fuzzer's mutations on the structure rather than on float payloads.
nlohmann::json tiny(const std::string& pattern, const std::string& mlp) {
  nlohmann::json j = preset("ska-1m").to_json();
  j["vocab_size"] = 8;
  j["d_model"] = 4;
  j["n_layers"] = (int)pattern.size();
  j["layer_pattern"] = pattern;
  j["mlp"] = mlp;
  j["d_ff"] = 4;
  j["mamba"] = {{"d_state", 2}, {"expand", 1}, {"headdim", 2}, {"ngroups", 1}, {"d_conv", 2}, {"chunk_size", 2}};
  j["ska"]["heads"] = 1;
  j["ska"]["rank"] = 2;
  j["ska"]["head_dim_v"] = 2;
  j["ska"]["chunk_size"] = 2;
  j["attn"] = {{"heads", 1}, {"head_dim", 2}, {"rope_base", 10000.0}};
  return j;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: fuzz_seed_corpus OUT_DIR\n";
    return 2;
  }
  const fs::path out = argv[1];
  fs::create_directories(out / "checkpoint");
  fs::create_directories(out / "op_runner");

  // Checkpoints: model-only of each layer kind, and one with optimizer and state.
  int n = 0;
  for (auto [pattern, mlp] : std::vector<std::pair<std::string, std::string>>{
           {"M", "none"}, {"S", "none"}, {"A", "swiglu"}, {"MS", "koopman"}}) {
    auto model = make_model(parse_config(tiny(pattern, mlp)), 1);
    save_checkpoint((out / "checkpoint" / ("model_" + pattern + "_" + mlp + ".h5")).string(), *model, nullptr,
                    nullptr, nullptr);
    ++n;
  }
  {
    auto model = make_model(parse_config(tiny("M", "none")), 2);
    std::vector<ParamRef> refs;
    for (const auto& p : model->params().all()) refs.push_back({p.name, p.tensor, true});
    AdamW opt(refs, {});
    TrainState st;
    st.step = 3;
    nlohmann::json tc = {{"steps", 10}};
    save_checkpoint((out / "checkpoint" / "train_M.h5").string(), *model, &opt, &st, &tc);
    ++n;
  }

  // Op runner inputs: byte 0 = the op's index in runner_ops(), then IN.h5 with the
  // op's example (f64 and f32; with output gradients for a backward run).
  const auto& ops = runner_ops();
  int m = 0;
  for (size_t i = 0; i < ops.size(); ++i) {
    for (int variant = 0; variant < 3; ++variant) {
      Rng rng(10 + i);
      OpAttrs attrs;
      NamedTensors ex = ops[i].example(rng, attrs);
      const fs::path tmp = out / "op_runner" / ".tmp.h5";
      {
        h5::File f = h5::File::create(tmp.string());
        for (const auto& [name, t] : ex)
          f.write(name, variant == 1 && is_floating(t.dtype()) ? t.to(DType::F32) : t);
        for (const auto& [name, v] : attrs) f.set_attr("/", name, v);
        if (variant == 2) {  // backward: gradients of the first output from a forward run
          NamedTensors y = ops[i].forward(ex, attrs);
          f.write("grad_" + ops[i].outputs[0], y.at(ops[i].outputs[0]));
        }
        f.close();
      }
      const std::string body = slurp(tmp.string());
      fs::remove(tmp);
      std::ofstream o(out / "op_runner" / (ops[i].name + "_" + std::to_string(variant)), std::ios::binary);
      o << static_cast<char>(i) << body;
      ++m;
    }
  }
  std::cout << "wrote " << n << " checkpoints and " << m << " op-runner inputs under " << out << "\n";
  return 0;
}
