// Helpers for the tests of train/: a temporary directory and running echo-lm.
#pragma once

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "models/config.h"
#include "train/trainer.h"

namespace echo::testing {

// A fresh directory under $TMPDIR (or /tmp), removed with its contents.
class TempDir {
 public:
  TempDir() {
    const char* base = std::getenv("TMPDIR");
    std::string tmpl = std::string(base && *base ? base : "/tmp") + "/echo_test_XXXXXX";
    if (!mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed for " + tmpl);
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::permissions(path_, std::filesystem::perms::owner_all, ec);
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }
  std::vector<std::string> entries() const {
    std::vector<std::string> names;
    for (const auto& e : std::filesystem::directory_iterator(path_)) names.push_back(e.path().filename().string());
    std::sort(names.begin(), names.end());
    return names;
  }

 private:
  std::string path_;
};

inline std::string read_text(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

inline void write_text(const std::string& path, const std::string& text) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f << text;
}

// The echo-lm binary: $ECHO_BIN (set by CMake for ctest), else next to this test.
inline std::string echo_bin() {
  if (const char* p = std::getenv("ECHO_BIN"); p && *p) return p;
  char buf[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n <= 0) return "echo-lm";
  buf[n] = '\0';
  return (std::filesystem::path(buf).parent_path() / "echo-lm").string();
}

struct RunResult {
  int status = -1;  // exit status, or 128+signal
  std::string out, err;
  std::vector<std::string> err_lines() const {
    std::vector<std::string> lines;
    std::stringstream ss(err);
    for (std::string l; std::getline(ss, l);) lines.push_back(l);
    return lines;
  }
};

inline std::string shell_quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += (c == '\'') ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

// Runs echo-lm with the given arguments; stdout and stderr captured.
inline RunResult run_echo(const std::vector<std::string>& args, const TempDir& dir) {
  std::string cmd = shell_quote(echo_bin());
  for (const auto& a : args) cmd += " " + shell_quote(a);
  const std::string out = dir.file(".stdout"), err = dir.file(".stderr");
  cmd += " >" + shell_quote(out) + " 2>" + shell_quote(err) + " </dev/null";
  int raw = std::system(cmd.c_str());
  RunResult r;
  if (raw == -1) r.status = -1;
  else if (WIFEXITED(raw)) r.status = WEXITSTATUS(raw);
  else if (WIFSIGNALED(raw)) r.status = 128 + WTERMSIG(raw);
  r.out = read_text(out);
  r.err = read_text(err);
  std::filesystem::remove(out);
  std::filesystem::remove(err);
  return r;
}

// A tiny model (d_model 32; an M and an S layer by default, any pattern of
// M, S, A): a few ms per training step.
inline ModelConfig tiny_model_config(const std::string& pattern = "MS") {
  nlohmann::json j = preset("ska-1m").to_json();
  j["d_model"] = 32;
  j["n_layers"] = static_cast<int>(pattern.size());
  j["layer_pattern"] = pattern;
  j["d_ff"] = 48;
  j["mamba"]["d_state"] = 8;
  j["mamba"]["headdim"] = 16;
  j["mamba"]["chunk_size"] = 8;
  j["ska"]["heads"] = 2;
  j["ska"]["rank"] = 8;
  j["ska"]["head_dim_v"] = 8;
  j["ska"]["chunk_size"] = 8;
  j["attn"] = {{"heads", 2}, {"head_dim", 16}, {"rope_base", 10000.0}};
  return parse_config(j);
}

// A quiet run of the tiny model on mqar:M=2,gap=5, batch 4, logging every step.
inline TrainOptions tiny_training(const std::string& out, int64_t steps) {
  TrainOptions o;
  o.model = tiny_model_config();
  o.tasks = {"mqar:M=2,gap=5"};
  o.steps = steps;
  o.batch = 4;
  o.warmup = 10;
  o.log_every = 1;
  o.eval_examples = 8;
  o.out = out;
  o.quiet = true;
  return o;
}

// The message of the exception f throws, or "no error".
inline std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "no error";
}

inline bool has(const std::string& text, const std::string& what) { return text.find(what) != std::string::npos; }

}  // namespace echo::testing
